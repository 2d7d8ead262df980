"""The retraining policy: off by default; when on, the downstream assets are requested after a cron tick only if
new feature partitions arrived since the previous tick, once per tick, never per file. No Spark: the
conditions are evaluated against materializations reported to a test instance."""

from __future__ import annotations

import datetime as dt

import pytest
from dagster import (
    AssetMaterialization,
    DefaultSensorStatus,
    evaluate_automation_conditions,
    instance_for_test,
)

from lhc_assets.defs.automation import AUTOMATED_GROUPS, DEFAULT_RETRAIN_CRON


@pytest.fixture
def defs(tmp_path, monkeypatch):
    monkeypatch.setenv("LHC_DATA_ROOT", str(tmp_path))
    from lhc_assets.definitions import build_definitions

    return build_definitions()


def test_policy_is_off_by_default_and_covers_exactly_the_downstream_groups(defs):
    sensor = defs.resolve_sensor_def("retrain_on_new_data")
    assert sensor.default_status == DefaultSensorStatus.STOPPED
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        automated = node.automation_condition is not None
        # Per-file scoring (partitioned) is on demand, never part of the retraining chain.
        assert automated == (node.group_name in AUTOMATED_GROUPS and node.partitions_def is None), key
        if automated:
            label = node.automation_condition.get_label()
            root = key.to_user_string() == "undersampled_dataset"
            assert (DEFAULT_RETRAIN_CRON in label) == root, (key, label)
    # No other sensor evaluates the conditions (Dagster would add a running default one for uncovered assets).
    assert {s.name for s in defs.sensors} == {"new_delphes_files_sensor", "retrain_on_new_data"}


def _new_features(instance, key: str) -> None:
    instance.add_dynamic_partitions("delphes_files", [key])
    for asset in ("hlf_features", "llf_features"):
        instance.report_runless_asset_event(AssetMaterialization(asset_key=asset, partition=key))


class Clock:
    """Evaluates the conditions at simulated times; events reported meanwhile carry the same clock."""

    def __init__(self, defs, instance):
        self.defs, self.instance, self.cursor = defs, instance, None

    def at(self, when: dt.datetime, action=None) -> set[str]:
        # Dagster's own time mock: event timestamps and the evaluation share the simulated clock.
        from dagster._core.test_utils import freeze_time

        with freeze_time(when):
            if action:
                action()
            result = evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor,
                                                    evaluation_time=when)
        self.cursor = result.cursor
        return {k.to_user_string() for k in self.defs.resolve_asset_graph().get_all_asset_keys()
                if result.get_num_requested(k) > 0}


def test_new_data_is_retrained_once_after_the_next_tick_and_quiet_days_cost_nothing(defs):
    graph = defs.resolve_asset_graph()
    downstream = {k.to_user_string() for k in graph.get_all_asset_keys()
                  if graph.get(k).group_name in AUTOMATED_GROUPS and graph.get(k).partitions_def is None}
    assert "file_event_scores" not in downstream
    day = [dt.datetime(2026, 11, 20, tzinfo=dt.UTC) + dt.timedelta(days=i) for i in range(4)]
    with instance_for_test() as instance:
        clock = Clock(defs, instance)
        assert clock.at(day[0].replace(hour=4)) == set()
        # Files arrive during the day, several of them: nothing is requested per file.
        assert clock.at(day[0].replace(hour=10), lambda: _new_features(instance, "ttbar/a")) == set()
        assert clock.at(day[0].replace(hour=11), lambda: _new_features(instance, "qcd/b")) == set()
        # The night's tick: the whole chain at once (one evaluation, so one run), then not again.
        assert clock.at(day[1].replace(hour=3, minute=1)) == downstream
        assert clock.at(day[1].replace(hour=3, minute=2)) == set()
        # A new file the next day waits for the next tick; then the chain runs again.
        assert clock.at(day[1].replace(hour=14), lambda: _new_features(instance, "wjets/c")) == set()
        assert clock.at(day[2].replace(hour=3, minute=1)) == downstream
        # A night without new files costs nothing.
        assert clock.at(day[3].replace(hour=3, minute=1)) == set()
