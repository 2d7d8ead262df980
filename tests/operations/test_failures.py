"""Failures read from the instance, and runs left started by a process that died: no Spark, a real instance."""

from __future__ import annotations

import socket
import subprocess
import sys

import psutil
import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus

from lhc_assets.operations import failures
from resources.process import HOST_TAG, PID_START_TAG, PID_TAG, process_tags


def _dead_pid() -> tuple[int, int]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    start = int(psutil.Process(proc.pid).create_time())
    proc.kill()
    proc.wait()
    return proc.pid, start


def _run(instance: DagsterInstance, run_id: str, tags: dict[str, str],
         status: DagsterRunStatus = DagsterRunStatus.STARTED) -> DagsterRun:
    partition_tags = {failures.RANGE_START_TAG: "qcd/a", failures.RANGE_END_TAG: "ttbar/b"}
    return instance.add_run(DagsterRun(job_name="ingestion_job", run_id=run_id, status=status,
                                       tags={**partition_tags, **tags}))


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(failures.PARTITIONS_DEF_NAME, ["qcd/a", "qcd/b", "ttbar/b"])
        yield instance


def test_a_run_whose_process_died_is_marked_failed_and_its_partitions_listed(instance):
    pid, start = _dead_pid()
    host = socket.gethostname()
    dead = _run(instance, "dead-run", {HOST_TAG: host, PID_TAG: str(pid),
                                       PID_START_TAG: str(start)})
    mine = _run(instance, "live-run", process_tags())  # this process runs it: alive
    reused = _run(instance, "reused-pid", {**process_tags(), PID_START_TAG: str(start - 50)})
    elsewhere = _run(instance, "other-host", {HOST_TAG: "elsewhere.example", PID_TAG: str(pid),
                                              PID_START_TAG: str(start)})
    untagged = _run(instance, "daemon-run", {})  # launched by the daemon: Dagster's run monitoring watches it

    marked = failures.fail_dead_runs(instance)

    assert sorted(r.run_id for r in marked) == ["dead-run", "reused-pid"]
    status = {r.run_id: instance.get_run_by_id(r.run_id).status for r in (dead, mine, reused, elsewhere, untagged)}
    assert status == {"dead-run": DagsterRunStatus.FAILURE, "live-run": DagsterRunStatus.STARTED,
                      "reused-pid": DagsterRunStatus.FAILURE, "other-host": DagsterRunStatus.STARTED,
                      "daemon-run": DagsterRunStatus.STARTED}
    assert failures.fail_dead_runs(instance) == []  # once

    listed = [f for f in failures.recorded_failures(instance) if f.run_id == "dead-run"]
    assert [f.partition for f in listed] == ["qcd/a", "qcd/b", "ttbar/b"]  # the run's whole range
    assert all(f"pid {pid}" in f.problem and "ended without finishing" in f.problem for f in listed)
    assert [f.partition for f in failures.outstanding(instance, listed)] == ["qcd/a", "qcd/b", "ttbar/b"]


def test_only_failed_partitioned_runs_are_listed(instance):
    _run(instance, "ok", {}, status=DagsterRunStatus.SUCCESS)
    instance.add_run(DagsterRun(job_name="training_data_job", run_id="unpartitioned", status=DagsterRunStatus.FAILURE))
    assert failures.recorded_failures(instance) == []


def test_a_retry_is_judged_by_its_own_process_not_the_dead_parents_it_inherited(instance):
    """Dagster copies the parent's tags into a retry: until the retry's resources replace them they name the
    killed parent's process, and must not get the retry (alive, just starting) failed and retried again."""
    from lhc_assets.operations.dagster_internals import LocalRunLauncher

    pid, start = _dead_pid()
    dead_process = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PID_START_TAG: str(start)}
    _run(instance, "killed-parent", dead_process, status=DagsterRunStatus.FAILURE)
    starting = _run(instance, "retry-starting", {**dead_process, failures.PARENT_RUN_ID_TAG: "killed-parent"})
    assert failures.own_process_tags(instance, starting).get(PID_TAG) is None
    launcher = LocalRunLauncher()
    launcher.register_instance(instance)
    assert launcher.check_run_worker_health(starting).status.value == "RUNNING"
    assert failures.fail_dead_runs(instance) == []

    running = instance.add_run_tags("retry-starting", process_tags()) or instance.get_run_by_id("retry-starting")
    assert failures.own_process_tags(instance, running)[PID_TAG] == str(psutil.Process().pid)
    assert launcher.check_run_worker_health(running).status.value == "RUNNING"

    other_pid, other_start = _dead_pid()  # the retry's own process died too: that is a death
    dead_retry = _run(instance, "retry-died", {HOST_TAG: socket.gethostname(), PID_TAG: str(other_pid),
                                               PID_START_TAG: str(other_start),
                                               failures.PARENT_RUN_ID_TAG: "killed-parent"})
    assert launcher.check_run_worker_health(dead_retry).status.value == "FAILED"
    assert instance.get_run_by_id("retry-died").status == DagsterRunStatus.FAILURE  # failed by the launcher itself
    assert failures.fail_dead_runs(instance) == []
    orphan = _run(instance, "parent-unknown", {**dead_process, failures.PARENT_RUN_ID_TAG: "deleted-run"})
    assert launcher.check_run_worker_health(orphan).status.value == "RUNNING"


def test_a_dead_run_is_failed_and_tagged_for_retry_before_the_event_the_retry_daemon_reads():
    """Dagster's own report stores the failure event before the run's status: a retry daemon reading in between
    skips the run for good. ``report_dead_run`` writes the status and the retry decision first."""
    from lhc_assets.operations.dagster_internals import WILL_RETRY_TAG, report_dead_run

    with DagsterInstance.ephemeral(settings={"run_retries": {"enabled": True}}) as instance:
        seen_at_event = []
        report = instance.report_dagster_event

        def spy(event, run_id, log_level):
            run = instance.get_run_by_id(run_id)
            seen_at_event.append((run.status, run.tags.get(WILL_RETRY_TAG)))
            return report(event, run_id=run_id, log_level=log_level)

        instance.report_dagster_event = spy
        run = _run(instance, "dead", {"dagster/max_retries": "1"})
        report_dead_run(instance, run, "the process died")
        assert seen_at_event == [(DagsterRunStatus.FAILURE, "true")]
        assert [e.message for e in failures._events(instance, "dead", failures.DagsterEventType.RUN_FAILURE)] == [
            "the process died"]
        no_retries = _run(instance, "dead-no-retries", {})
        report_dead_run(instance, no_retries, "the process died")
        assert instance.get_run_by_id("dead-no-retries").tags[WILL_RETRY_TAG] == "false"
        done = _run(instance, "finished", {}, status=DagsterRunStatus.SUCCESS)
        report_dead_run(instance, done, "too late")  # it ended meanwhile: left alone
        assert instance.get_run_by_id("finished").status == DagsterRunStatus.SUCCESS and len(seen_at_event) == 2


def test_a_retry_the_daemon_missed_is_handed_back_by_moving_its_cursor():
    from lhc_assets.operations import dagster_internals as di

    with DagsterInstance.ephemeral(settings={"run_retries": {"enabled": True}}) as instance:
        run = _run(instance, "missed", {"dagster/max_retries": "1"})
        di.report_dead_run(instance, run, "the process died")
        retried = _run(instance, "retried", {"dagster/max_retries": "1"})
        di.report_dead_run(instance, retried, "the process died")
        instance.add_run_tags("retried", {di.AUTO_RETRY_RUN_ID_TAG: "its-retry"})
        assert di.missed_retries(instance) == []  # not yet overdue
        missed = di.missed_retries(instance, older_than_s=-1)
        assert [r.run_id for r in missed] == ["missed"]
        assert not di.hand_back_missed_retries(instance, missed)  # the retry daemon never ran: nothing to move
        failure_id = instance.get_records_for_run("missed", of_type=failures.DagsterEventType.RUN_FAILURE).records[0]
        instance.daemon_cursor_storage.set_cursor_values({di.RETRY_CURSOR_KEY: str(failure_id.storage_id + 50)})
        assert di.hand_back_missed_retries(instance, missed)
        cursor = instance.daemon_cursor_storage.get_cursor_values({di.RETRY_CURSOR_KEY})[di.RETRY_CURSOR_KEY]
        assert int(cursor) == failure_id.storage_id - 1
        assert not di.hand_back_missed_retries(instance, missed)  # already before it
