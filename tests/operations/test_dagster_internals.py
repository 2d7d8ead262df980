"""The adapter over Dagster's internal API works with the installed, pinned Dagster."""

from __future__ import annotations

import re
from pathlib import Path

import dagster
from dagster import DagsterInstance

from lhc_assets.operations.dagster_internals import PINNED_DAGSTER, add_asset_backfill, backfill_finished

REPO = Path(__file__).resolve().parents[2]


def test_the_adapter_was_written_for_the_installed_and_pinned_dagster():
    # A Dagster upgrade changes the pin and the installed version: this fails until the adapter is re-checked.
    pins = dict(re.findall(r'"(dagster)==([\w.]+)"', (REPO / "pyproject.toml").read_text()))
    assert dagster.__version__ == pins["dagster"] == PINNED_DAGSTER == "1.13.27"


def test_an_asset_backfill_is_added_to_the_instance_and_finishes_when_canceled(tmp_path):
    from dagster._core.execution.backfill import BulkActionStatus  # the test may touch internals to drive state

    from lhc_assets.definitions import defs

    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        instance.add_dynamic_partitions("delphes_files", ["qcd/a", "qcd/b"])
        backfill_id = add_asset_backfill(instance, defs.resolve_asset_graph(), ["qcd/a", "qcd/b"],
                                         ["raw_events", "hlf_features"], title="test backfill",
                                         tags={"lhc/launched_by": "test"})
        backfill = instance.get_backfill(backfill_id)
        assert backfill.title == "test backfill" and backfill.tags == {"lhc/launched_by": "test"}
        assert backfill.status == BulkActionStatus.REQUESTED and not backfill_finished(backfill)
        subset = backfill.asset_backfill_data.target_subset
        assert {(k.asset_key.to_user_string(), k.partition_key) for k in subset.iterate_asset_partitions()} == {
            (a, p) for a in ("raw_events", "hlf_features") for p in ("qcd/a", "qcd/b")}
        instance.update_backfill(backfill.with_status(BulkActionStatus.CANCELED))
        assert backfill_finished(instance.get_backfill(backfill_id))
