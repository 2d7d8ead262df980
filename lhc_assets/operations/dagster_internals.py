"""The one place that uses Dagster's internal API (``dagster._core``), for what its public API cannot do.

Written against the pinned Dagster (``PINNED_DAGSTER``; pyproject.toml); tests/operations/test_dagster_internals.py
fails when another version is installed, so an upgrade re-checks these calls before anything else runs.

* Submitting an asset backfill from code: the UI's "Launch backfill" creates a ``PartitionBackfill``; the
  public API has no constructor for one (``dagster job backfill`` is op-job only and needs the CLI).
* Knowing when a backfill is over: the set of terminal bulk-action statuses is internal.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import AssetKey, DagsterInstance

PINNED_DAGSTER = "1.13.27"


def add_asset_backfill(instance: DagsterInstance, asset_graph: Any, partition_keys: Sequence[str],
                       assets: Sequence[str], title: str, tags: Mapping[str, str]) -> str:
    """Add an asset backfill of ``assets`` over ``partition_keys`` to the instance (the daemon executes it,
    as a backfill launched from the UI); returns its id."""
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    backfill_id = make_new_backfill_id()
    instance.add_backfill(PartitionBackfill.from_asset_partitions(
        backfill_id=backfill_id, asset_graph=asset_graph, partition_names=list(partition_keys),
        asset_selection=[AssetKey(a) for a in assets], backfill_timestamp=time.time(), tags=dict(tags),
        dynamic_partitions_store=instance, all_partitions=False, title=title, description=None, run_config=None,
    ))
    return backfill_id


def backfill_finished(backfill: Any) -> bool:
    """Whether a backfill read from the instance (``instance.get_backfill``) has reached a terminal status."""
    from dagster._core.execution.backfill import BULK_ACTION_TERMINAL_STATUSES

    return backfill.status in BULK_ACTION_TERMINAL_STATUSES
