"""pipeline_performance's numbers come from the stages' own materialization records, per stage and per run."""

from __future__ import annotations

import pytest
from dagster import AssetKey, DynamicPartitionsDefinition, MaterializeResult, asset, instance_for_test, materialize

from lhc_assets.operations import performance
from lhc_assets.spark import metering as M


def _figures(rate: float, events: int = 1000) -> dict:
    return {M.EVENTS: events, M.WALL: events / rate / 2, M.CPU: 1.5, M.CORES: 2, M.PER_CORE: rate,
            M.DRIVER_PEAK: 500.0, M.WORKERS_PEAK: 300.0}


def _record(instance, name: str, rate: float, events: int = 1000) -> str:
    """One real run materializing a stand-in of the stage's asset with these figures; its run id."""

    @asset(name=name)
    def stand_in() -> MaterializeResult:
        return MaterializeResult(metadata=_figures(rate, events))

    result = materialize([stand_in], instance=instance)
    assert result.success
    return result.run_id


def test_each_run_of_a_stage_is_read_back_once_newest_first():
    with instance_for_test() as instance:
        for rate in (100.0, 110.0, 90.0):
            _record(instance, "train_set", rate)
        _record(instance, "raw_events", 50.0)
        runs = performance.collect(instance, history=2)
    assert list(runs) == ["ingestion and features", "training data: datasets"]  # pipeline order, run stages only
    datasets = runs["training data: datasets"]
    assert [r.events_per_s_per_core for r in datasets] == [90.0, 110.0]  # newest first, at most `history`
    assert datasets[0].events == 1000 and datasets[0].cores == 2 and datasets[0].wall_seconds == 1000 / 90 / 2


def test_a_run_over_several_partitions_counts_once():
    files = DynamicPartitionsDefinition(name="delphes_files")

    @asset(name="raw_events", partitions_def=files)
    def raw_events() -> MaterializeResult:
        return MaterializeResult(metadata=_figures(40.0, 3000))  # the run's figures, on each partition

    with instance_for_test() as instance:
        instance.add_dynamic_partitions("delphes_files", ["qcd/a", "qcd/b", "ttbar/c"])
        run = materialize([raw_events], instance=instance, tags={
            "dagster/asset_partition_range_start": "qcd/a", "dagster/asset_partition_range_end": "ttbar/c"})
        assert len(instance.fetch_materializations(AssetKey("raw_events"), limit=10).records) == 3
        (only,) = performance.stage_runs(instance, "ingestion", "raw_events", limit=5)
    assert only.run_id == run.run_id and only.events == 3000 and only.events_per_s_per_core == 40.0


def test_the_latest_run_is_flagged_when_slower_than_the_recent_median_by_more_than_the_allowed_drop():
    with instance_for_test() as instance:
        for rate in (100.0, 104.0, 96.0, 60.0):  # oldest first: the latest lost 40 %
            _record(instance, "event_scores", rate)
        for rate in (100.0, 90.0):  # lost 10 %
            _record(instance, "model_evaluation", rate)
        data = performance.report(performance.collect(instance), max_drop=0.3)
    scoring, evaluation = data["stages"]["scoring: test split"], data["stages"]["evaluation"]
    assert scoring["regression"]["median_before"] == 100.0 and scoring["regression"]["ratio"] == pytest.approx(0.6)
    assert scoring["slower"] and not evaluation["slower"]
    assert "(slower)" in performance.table(data) and performance.plot(data).startswith(b"\x89PNG")


def test_a_stage_with_one_run_has_nothing_to_compare():
    with instance_for_test() as instance:
        _record(instance, "hlf_classifier", 5000.0)
        data = performance.report(performance.collect(instance), max_drop=0.3)
    stage = data["stages"]["training: hlf_classifier"]
    assert stage["regression"] is None and not stage["slower"]
