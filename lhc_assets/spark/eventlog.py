"""What Spark's event log says about a time window of an application: jobs, tasks and where the wall time went.

Enable the log with ``spark.eventLog.enabled=true``, ``spark.eventLog.dir=<dir>``,
``spark.eventLog.compress=false`` and ``spark.eventLog.rolling.enabled=false`` (Spark 4 rolls by default): one
file per application, one JSON object per line. A stage of the platform runs Spark
jobs between stretches of driver-only work (planning, listing files, collecting results, publishing), so for
a stage's window ``[start, end]`` (epoch seconds):

* ``parallel_seconds``: the union of the Spark jobs' spans inside the window — when executors could work;
* ``driver_seconds``: the rest of the window — the serial, driver-side part of the stage;
* ``task_seconds``: the tasks' launch-to-finish time summed over tasks (core-seconds held by tasks);
* ``executor_run_seconds`` / ``executor_cpu_seconds``: Spark's task metrics summed (the time in the task's
  own code, and its CPU time in the executor JVM; work done by Python workers counts in run time only).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SparkActivity:
    """Spark's account of one window of an application."""

    window_seconds: float
    jobs: int
    tasks: int
    failed_tasks: int
    parallel_seconds: float
    driver_seconds: float
    task_seconds: float
    executor_run_seconds: float
    executor_cpu_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """The events of one (uncompressed) Spark event log file; a torn last line of a live log is skipped."""
    events = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def event_log_files(directory: str | Path) -> list[Path]:
    """Spark event log files in ``directory``, oldest first (one per application)."""
    files = [p for p in Path(directory).iterdir() if p.is_file() and not p.name.startswith(".")]
    if not files:
        raise FileNotFoundError(f"{directory}: no Spark event log (is spark.eventLog.enabled set?)")
    return sorted(files, key=lambda p: p.stat().st_mtime)


def _union_seconds(spans: list[tuple[float, float]]) -> float:
    total, cur_start, cur_end = 0.0, None, None
    for start, end in sorted(spans):
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total


def activity(events: list[dict[str, Any]], start: float, end: float) -> SparkActivity:
    """Spark's jobs and tasks that started inside ``[start, end]`` (epoch seconds), clipped to the window."""
    submitted: dict[int, float] = {}
    completed: dict[int, float] = {}
    tasks = failed = 0
    task_s = run_s = cpu_s = 0.0
    for event in events:
        kind = event.get("Event")
        if kind == "SparkListenerJobStart":
            submitted[event["Job ID"]] = event["Submission Time"] / 1000.0
        elif kind == "SparkListenerJobEnd":
            completed[event["Job ID"]] = event["Completion Time"] / 1000.0
        elif kind == "SparkListenerTaskEnd":
            info = event.get("Task Info", {})
            launch, finish = info.get("Launch Time", 0) / 1000.0, info.get("Finish Time", 0) / 1000.0
            if not start <= launch <= end:
                continue
            tasks += 1
            failed += bool(info.get("Failed") or info.get("Killed"))
            task_s += max(0.0, min(finish, end) - launch)
            metrics = event.get("Task Metrics") or {}
            run_s += metrics.get("Executor Run Time", 0) / 1000.0
            cpu_s += metrics.get("Executor CPU Time", 0) / 1e9
    spans = [(max(t, start), min(completed.get(job, end), end))
             for job, t in submitted.items() if start <= t <= end]
    parallel = _union_seconds([s for s in spans if s[1] > s[0]])
    window = max(0.0, end - start)
    return SparkActivity(window_seconds=round(window, 3), jobs=len(spans), tasks=tasks, failed_tasks=failed,
                         parallel_seconds=round(parallel, 3), driver_seconds=round(max(0.0, window - parallel), 3),
                         task_seconds=round(task_s, 3), executor_run_seconds=round(run_s, 3),
                         executor_cpu_seconds=round(cpu_s, 3))
