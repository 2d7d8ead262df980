"""Backfills through the daemon, without one: how runs are planned, submitted and followed (retries included)."""

from __future__ import annotations

import time

import pytest
from dagster import AssetKey, AssetMaterialization, DagsterInstance, DagsterRun, DagsterRunStatus

from lhc_assets.cli import lhc
from lhc_assets.operations import backfill, dagster_internals
from lhc_assets.operations.backfill import FINAL, RETRYING, UNDECIDED, plan_runs, retry_state

KEYS = ["qcd/a", "qcd/b", "qcd/c", "ttbar/a", "ttbar/b"]


def test_runs_are_contiguous_ranges_cut_to_the_size_asked():
    wanted = {"qcd/a", "qcd/b", "qcd/c", "ttbar/b"}
    assert plan_runs(KEYS, wanted) == [("qcd/a", "qcd/c"), ("ttbar/b", "ttbar/b")]
    assert plan_runs(KEYS, wanted, 2) == [("qcd/a", "qcd/b"), ("qcd/c", "qcd/c"), ("ttbar/b", "ttbar/b")]
    assert plan_runs(KEYS, wanted, 1) == [(k, k) for k in KEYS if k in wanted]
    assert plan_runs(KEYS, set(), 1) == []
    with pytest.raises(ValueError, match="at least 1"):
        plan_runs(KEYS, wanted, 0)


def test_a_failed_run_is_retrying_final_or_undecided_from_its_tags():
    assert retry_state({"dagster/will_retry": "true"}, True, 0) == RETRYING
    assert retry_state({"dagster/will_retry": "false"}, True, 0) == FINAL
    assert retry_state({}, True, 1) == UNDECIDED  # Dagster tags it just after failing it
    assert retry_state({}, True, backfill.RETRY_DECISION_S + 1) == FINAL
    assert retry_state({"dagster/will_retry": "true"}, False, 0) == FINAL  # retries are off in this instance


def test_dagsters_retry_tags_are_the_ones_the_adapter_names():
    from dagster._core.storage import tags

    assert dagster_internals.MAX_RETRIES_TAG == tags.MAX_RETRIES_TAG
    assert dagster_internals.WILL_RETRY_TAG == tags.WILL_RETRY_TAG
    assert dagster_internals.AUTO_RETRY_RUN_ID_TAG == tags.AUTO_RETRY_RUN_ID_TAG
    assert dagster_internals.RETRY_NUMBER_TAG == tags.RETRY_NUMBER_TAG
    assert dagster_internals.PARENT_RUN_ID_TAG == tags.PARENT_RUN_ID_TAG


def test_a_backfill_with_runs_of_one_partition_carries_its_planned_runs_and_retries(tmp_path):
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        instance.add_dynamic_partitions(backfill.PARTITIONS_DEF_NAME, KEYS)
        instance.report_runless_asset_event(AssetMaterialization("raw_events", partition="qcd/a"))
        before = instance.event_log_storage.get_maximum_record_id()
        backfill_id = backfill.submit(instance, ["qcd/a", "qcd/b", "ttbar/b"], partitions_per_run=1, retries=2)
        added = instance.get_backfill(backfill_id)
        assert added.tags == {"lhc/launched_by": "lhc backfill", "dagster/max_retries": "2"}
        requests = added.submitting_run_requests
        assert [(r.tags[ASSET_PARTITION_RANGE_START_TAG], r.tags[ASSET_PARTITION_RANGE_END_TAG]) for r in requests] \
            == [("qcd/a", "qcd/a"), ("qcd/b", "qcd/b"), ("ttbar/b", "ttbar/b")]
        assert all({k.to_user_string() for k in r.asset_selection} == set(backfill.INGESTION_ASSETS) for r in requests)
        assert len(set(added.reserved_run_ids)) == 3  # the daemon submits them under these ids, once
        data = added.asset_backfill_data
        assert data.requested_runs_for_target_roots and data.latest_storage_id == before
        targets = {(k.asset_key.to_user_string(), k.partition_key)
                   for k in data.target_subset.iterate_asset_partitions()}
        assert targets == {(a, p) for a in backfill.INGESTION_ASSETS for p in ("qcd/a", "qcd/b", "ttbar/b")}

        default = instance.get_backfill(backfill.submit(instance, ["qcd/a", "qcd/b"]))
        assert default.submitting_run_requests == [] and "dagster/max_retries" not in default.tags  # the policy's


def _run(instance: DagsterInstance, run_id: str, key: str, status: DagsterRunStatus, **tags: str) -> None:
    instance.add_run(DagsterRun(job_name="__ASSET_JOB", run_id=run_id, status=status, tags={
        backfill.BACKFILL_TAG: "bf", "dagster/asset_partition_range_start": key,
        "dagster/asset_partition_range_end": key, **tags}))


def test_watch_reports_a_retried_run_once_and_its_partition_when_the_retry_materializes_it(tmp_path):
    from dagster._core.execution.backfill import BulkActionStatus

    with DagsterInstance.local_temp(str(tmp_path), overrides={"run_retries": {"enabled": True}}) as instance:
        instance.add_dynamic_partitions(backfill.PARTITIONS_DEF_NAME, KEYS)
        backfill_id = backfill.submit(instance, ["qcd/a", "qcd/b"], partitions_per_run=1, retries=1)
        since = time.time() - 5
        retried = {"dagster/will_retry": "true", "dagster/auto_retry_run_id": "retry-of-a"}
        _run(instance, "killed-a", "qcd/a", DagsterRunStatus.FAILURE, **retried)
        _run(instance, "retry-of-a", "qcd/a", DagsterRunStatus.SUCCESS, **{"dagster/retry_number": "1"})
        _run(instance, "failed-b", "qcd/b", DagsterRunStatus.FAILURE, **{"dagster/will_retry": "false"})
        for asset in backfill.INGESTION_ASSETS:
            instance.report_runless_asset_event(AssetMaterialization(AssetKey(asset), partition="qcd/a"))
        instance.update_backfill(instance.get_backfill(backfill_id).with_status(BulkActionStatus.COMPLETED_FAILED))
        for run in instance.get_runs():  # as the daemon's runs carry it
            instance.add_run_tags(run.run_id, {backfill.BACKFILL_TAG: backfill_id})

        lines: list[str] = []
        progress = backfill.watch(instance, backfill_id, ["qcd/a", "qcd/b"], since, lines.append, poll_s=0.1,
                                  timeout_s=30)
        assert progress.state["qcd/a"] == (backfill.MATERIALIZED, "")
        assert progress.state["qcd/b"][0] == backfill.FAILED
        assert [line for line in lines if "retries it" in line] == [
            "  run killed-a (qcd/a) failed, the daemon retries it: "]
        assert "[1/2] materialized qcd/a" in lines
        assert any(line.startswith("[2/2] failed       qcd/b") for line in lines)


def test_lhc_backfill_refuses_retries_without_the_daemon(capsys):
    assert lhc.main(["backfill", "--all", "--in-process", "--retries", "1"]) == 2
    assert "--retries needs the daemon" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lhc.main(["backfill", "--all", "--partitions-per-run", "0"])
