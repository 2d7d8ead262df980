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
    starting = _run(instance, "retry-starting", {**dead_process, failures.PARENT_RUN_TAG: "killed-parent"})
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
                                               failures.PARENT_RUN_TAG: "killed-parent"})
    assert launcher.check_run_worker_health(dead_retry).status.value == "FAILED"
    assert [r.run_id for r in failures.fail_dead_runs(instance)] == ["retry-died"]
    orphan = _run(instance, "parent-unknown", {**dead_process, failures.PARENT_RUN_TAG: "deleted-run"})
    assert launcher.check_run_worker_health(orphan).status.value == "RUNNING"
