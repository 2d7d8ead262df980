"""The adapter over Dagster's internal API works with the installed, pinned Dagster."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import dagster
import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    DynamicPartitionsDefinition,
    asset,
    define_asset_job,
    instance_for_test,
)

from lhc_assets.operations.dagster_internals import (
    PINNED_DAGSTER,
    AssetStatus,
    add_asset_backfill,
    backfill_finished,
    stale_statuses,
)

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


# ---- stale status: a partitioned feature table under one unpartitioned dataset, as in the real graph

_FILES = DynamicPartitionsDefinition(name="files")


@asset(partitions_def=_FILES)
def features() -> None:
    """Stands in for hlf_features (one partition per input file)."""


@asset(deps=[features])
def dataset() -> None:
    """Stands in for undersampled_dataset (every feature partition)."""


@asset(deps=[dataset])
def model() -> None:
    """Stands in for a model trained on the dataset."""


_DEFS = Definitions(assets=[features, dataset, model], jobs=[
    define_asset_job("features_job", [features]),
    define_asset_job("dataset_job", [dataset, model]),
])


def _materialize(instance: DagsterInstance, job: str, partitions: list[str] | None = None) -> None:
    tags = {} if partitions is None else {"dagster/asset_partition_range_start": partitions[0],
                                          "dagster/asset_partition_range_end": partitions[-1]}
    assert _DEFS.resolve_job_def(job).execute_in_process(instance=instance, tags=tags).success


def _status(instance: DagsterInstance, name: str, partition: str | None = None) -> AssetStatus:
    key = AssetKey(name)
    return stale_statuses(instance, _DEFS.resolve_asset_graph(), [(key, partition)])[(key, partition)]


def _dagster_alone(instance: DagsterInstance, name: str) -> str:
    """The status Dagster's resolver gives by itself (what the UI shows)."""
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._core.definitions.temporal_context import TemporalContext

    graph = _DEFS.resolve_asset_graph()
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=datetime.now(UTC), last_event_id=None),
                          instance=instance, asset_graph=graph)
    return CachingStaleStatusResolver(instance, graph, view).get_status(AssetKey(name)).value


@pytest.mark.parametrize("registered", [3, 100])
def test_a_new_feature_partition_makes_the_dataset_stale_below_and_above_dagsters_partition_limit(registered):
    with instance_for_test() as instance:
        keys = [f"f{i:03d}" for i in range(registered)]
        instance.add_dynamic_partitions("files", keys)
        assert _status(instance, "dataset") == AssetStatus("MISSING")
        assert _status(instance, "features", keys[0]) == AssetStatus("MISSING")
        _materialize(instance, "features_job", keys[:2])
        _materialize(instance, "dataset_job")
        assert _status(instance, "dataset").up_to_date and _status(instance, "model").up_to_date
        assert _status(instance, "features", keys[1]).up_to_date

        _materialize(instance, "features_job", [keys[2]])  # a file ingested after the dataset was built
        stale = _status(instance, "dataset")
        assert stale.status == "STALE"
        assert stale.causes == (f"has a new dependency materialization (features {keys[2]})",)
        # Dagster alone sees it only below its limit of 100 upstream partitions (SKIP_PARTITION_DATA_VERSION_
        # DEPENDENCY_THRESHOLD); if a new Dagster lifts the limit, this fails and the extra edge can go.
        assert _dagster_alone(instance, "dataset") == ("STALE" if registered < 100 else "FRESH")
        # Staleness does not propagate: the model turns stale once the dataset is rebuilt.
        assert _status(instance, "model").up_to_date
        _materialize(instance, "dataset_job")
        assert _status(instance, "dataset").up_to_date and _status(instance, "model").up_to_date

        _materialize(instance, "features_job", [keys[0]])  # an existing partition recomputed
        assert _status(instance, "dataset").causes == (f"has a new dependency materialization (features {keys[0]})",)


def test_the_model_turns_stale_when_its_unpartitioned_input_is_rebuilt_and_partitions_are_asked_one_by_one():
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("files", ["a"])
        _materialize(instance, "features_job", ["a"])
        _materialize(instance, "dataset_job")
        assert _DEFS.resolve_job_def("dataset_job").execute_in_process(
            instance=instance, asset_selection=[AssetKey("dataset")]).success
        status = _status(instance, "model")
        assert status.status == "STALE" and status.causes == ("has a new dependency materialization (dataset)",)
        assert status.describe() == "has a new dependency materialization (dataset)"
        with pytest.raises(ValueError, match="per partition"):
            _status(instance, "features")


def test_the_run_launcher_reports_a_run_whose_process_is_gone_to_run_monitoring():
    import subprocess
    import sys

    import psutil
    from dagster import DagsterRun
    from dagster._core.launcher import WorkerStatus

    from lhc_assets.operations.dagster_internals import LocalRunLauncher
    from resources.process import PID_START_TAG, PID_TAG, process_tags

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    start = int(psutil.Process(proc.pid).create_time())
    proc.kill()
    proc.wait()
    launcher = LocalRunLauncher()
    assert launcher.supports_check_run_worker_health

    def health(tags):
        return launcher.check_run_worker_health(DagsterRun(job_name="ingestion_job", run_id="r", tags=tags))

    dead = health({**process_tags(), PID_TAG: str(proc.pid), PID_START_TAG: str(start)})
    assert dead.status == WorkerStatus.FAILED and f"pid {proc.pid}" in dead.msg
    assert health(process_tags()).status == WorkerStatus.RUNNING  # this process: alive
    assert health({}).status == WorkerStatus.RUNNING  # not tagged yet: monitoring's timeouts apply instead
