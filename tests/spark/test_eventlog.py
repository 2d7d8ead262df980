"""Spark's event log split into driver-side time and the span of the Spark jobs of a window."""

from __future__ import annotations

import json

import pytest

from lhc_assets.spark.eventlog import activity, event_log_files, read_events


def _job(job: int, start: float, end: float) -> list[dict]:
    return [{"Event": "SparkListenerJobStart", "Job ID": job, "Submission Time": int(start * 1000)},
            {"Event": "SparkListenerJobEnd", "Job ID": job, "Completion Time": int(end * 1000)}]


def _task(launch: float, finish: float, run_ms: int, cpu_ns: int, failed: bool = False) -> dict:
    return {"Event": "SparkListenerTaskEnd",
            "Task Info": {"Launch Time": int(launch * 1000), "Finish Time": int(finish * 1000), "Failed": failed},
            "Task Metrics": {"Executor Run Time": run_ms, "Executor CPU Time": cpu_ns}}


def test_window_split_into_driver_and_parallel_time():
    events = [*_job(0, 101.0, 104.0), *_job(1, 103.0, 106.0), *_job(2, 108.0, 109.0),  # union 5 + 1 s
              *_job(3, 95.0, 99.0),  # before the window: another stage's job
              _task(101.0, 103.5, 2000, 1_500_000_000), _task(103.0, 106.0, 2500, 1_000_000_000),
              _task(108.0, 109.0, 900, 0, failed=True), _task(96.0, 98.0, 1000, 0)]
    spark = activity(events, 100.0, 110.0)
    assert spark.jobs == 3 and spark.tasks == 3 and spark.failed_tasks == 1
    assert spark.window_seconds == 10.0
    assert spark.parallel_seconds == pytest.approx(6.0)
    assert spark.driver_seconds == pytest.approx(4.0)
    assert spark.task_seconds == pytest.approx(2.5 + 3.0 + 1.0)
    assert spark.executor_run_seconds == pytest.approx(5.4)
    assert spark.executor_cpu_seconds == pytest.approx(2.5)


def test_job_running_past_the_window_is_clipped():
    spark = activity([*_job(0, 108.0, 115.0)], 100.0, 110.0)
    assert spark.parallel_seconds == pytest.approx(2.0) and spark.driver_seconds == pytest.approx(8.0)


def test_reading_a_log_skips_a_torn_last_line(tmp_path):
    log = tmp_path / "app-1"
    log.write_text("\n".join(json.dumps(e) for e in _job(0, 1.0, 2.0)) + '\n{"Event": "SparkLis')
    assert len(read_events(log)) == 2
    assert event_log_files(tmp_path) == [log]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no Spark event log"):
        event_log_files(tmp_path / "empty")
