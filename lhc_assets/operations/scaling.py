"""The scaling study's arithmetic: speedup and parallel efficiency per stage, a cost model, and its projection.

Each measurement is one stage run on a Spark standalone cluster of ``workers x cores_per_worker`` cores, split
by Spark's event log into driver-side (serial) seconds and the span of its Spark jobs (``spark.eventlog``).
The model of a stage's wall time on ``n`` cores for ``N`` events in ``k`` tasks is

    T(N, n) = s0 + s1 * N  +  (c * N + o * k) / n

* ``s0 + s1 * N``: driver-side seconds (planning, listing, collecting, publishing), fitted to the measured
  driver time; they do not shrink with more cores (Amdahl's serial part). ``s1`` is kept only when the
  driver time grows between input sizes by more than it varies between cluster shapes at one size (else a
  few hundredths of a second of noise would be extrapolated to 54 M events);
* ``o``: core-seconds per task outside the task's own code (deserialising the task, shipping its result),
  measured directly as the tasks' launch-to-finish time minus Spark's ``Executor Run Time``, per task;
* ``c``: core-seconds per event, fitted (least squares through the origin, so the largest inputs weigh most)
  to ``n x`` the measured parallel span minus ``o x k``: it includes the idle cores of an uneven last wave and,
  on a shared machine, the cores the driver takes while executors work.

Assumptions of the projection (stated in docs/performance.md next to its table): the per-event cost measured
here holds on the cluster's cores (same event size and code; no shared-storage bottleneck), a task holds
``events_per_task`` events (the ingestion's ``entries_per_split``; about one 128 MB split of LLF rows) but there
are never fewer tasks than cores, and the driver-side part keeps its fitted shape.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Measurement:
    """One stage run on one cluster shape."""

    stage: str
    workers: int
    cores_per_worker: int
    events: int
    wall_seconds: float
    driver_seconds: float
    parallel_seconds: float
    tasks: int
    task_seconds: float = 0.0  # launch to finish, summed over tasks
    executor_run_seconds: float = 0.0  # Spark's Executor Run Time, summed over tasks

    @property
    def cores(self) -> int:
        return self.workers * self.cores_per_worker

    @property
    def shape(self) -> str:
        return f"{self.workers}x{self.cores_per_worker}"


def _nonnegative_lstsq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0 (columns whose coefficient comes out negative are dropped)."""
    active = list(range(a.shape[1]))
    while True:
        coef = np.zeros(a.shape[1])
        if active:
            coef[active] = np.linalg.lstsq(a[:, active], b, rcond=None)[0]
        negative = [i for i in active if coef[i] < 0]
        if not negative:
            return coef
        active.remove(min(negative, key=lambda i: coef[i]))


@dataclass(frozen=True)
class StageModel:
    """``T(N, n) = serial_seconds + serial_seconds_per_event * N + (event_cost * N + task_overhead * k) / n``."""

    stage: str
    serial_seconds: float
    serial_seconds_per_event: float
    event_cost_core_seconds: float
    task_overhead_core_seconds: float
    max_relative_error: float  # of the model against the measurements it was fitted to
    events_per_task: int = 5000

    def tasks(self, events: int, cores: int) -> int:
        return max(cores, math.ceil(events / self.events_per_task))

    def serial(self, events: int) -> float:
        return self.serial_seconds + self.serial_seconds_per_event * events

    def seconds(self, events: int, cores: int, tasks: int | None = None) -> float:
        k = self.tasks(events, cores) if tasks is None else tasks
        parallel = self.event_cost_core_seconds * events + self.task_overhead_core_seconds * k
        return self.serial(events) + parallel / cores

    def serial_fraction(self, events: int) -> float:
        """Share of the one-core wall time that more cores cannot shorten (Amdahl's s)."""
        return self.serial(events) / self.seconds(events, 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _driver_grows(measurements: Sequence[Measurement]) -> bool:
    """Whether the driver time grows with the input size by more than it varies between shapes at one size."""
    by_size: dict[int, list[float]] = {}
    for m in measurements:
        by_size.setdefault(m.events, []).append(m.driver_seconds)
    if len(by_size) < 2:
        return False
    small, large = by_size[min(by_size)], by_size[max(by_size)]
    noise = max(max(v) - min(v) for v in by_size.values())
    return float(np.mean(large) - np.mean(small)) > noise


def fit_stage(measurements: Sequence[Measurement], events_per_task: int = 5000) -> StageModel:
    """The model of one stage, fitted to its measurements (one or more cluster shapes and input sizes)."""
    if not measurements:
        raise ValueError("no measurement to fit")
    stages = {m.stage for m in measurements}
    if len(stages) != 1:
        raise ValueError(f"measurements of several stages: {sorted(stages)}")
    events = np.array([m.events for m in measurements], float)
    ones = np.ones_like(events)
    if _driver_grows(measurements):
        s0, s1 = _nonnegative_lstsq(np.column_stack([ones, events]), np.array([m.driver_seconds for m in measurements]))
    else:
        s0, s1 = float(np.mean([m.driver_seconds for m in measurements])), 0.0
    tasks = np.array([m.tasks for m in measurements], float)
    o = max(0.0, sum(m.task_seconds - m.executor_run_seconds for m in measurements) / max(1.0, tasks.sum()))
    work = np.array([m.cores * m.parallel_seconds for m in measurements]) - o * tasks
    c = max(0.0, float(events @ work / (events @ events)))
    model = StageModel(stage=measurements[0].stage, serial_seconds=round(float(s0), 4),
                       serial_seconds_per_event=float(s1), event_cost_core_seconds=float(c),
                       task_overhead_core_seconds=round(float(o), 4), max_relative_error=0.0,
                       events_per_task=events_per_task)
    errors = [abs(model.seconds(m.events, m.cores, m.tasks) - m.wall_seconds) / m.wall_seconds
              for m in measurements if m.wall_seconds > 0]
    return StageModel(**{**model.to_dict(), "max_relative_error": round(max(errors, default=0.0), 3)})


def speedups(measurements: Iterable[Measurement]) -> list[dict[str, Any]]:
    """Per stage and input size: speedup and parallel efficiency of every shape against the fewest cores."""
    groups: dict[tuple[str, int], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.stage, m.events), []).append(m)
    rows = []
    for (stage, events), group in groups.items():
        reference = min(group, key=lambda m: (m.cores, m.workers))
        for m in sorted(group, key=lambda m: (m.cores, m.workers)):
            speedup = reference.wall_seconds / m.wall_seconds
            rows.append({"stage": stage, "events": events, "shape": m.shape, "cores": m.cores,
                         "wall_seconds": round(m.wall_seconds, 2), "driver_seconds": round(m.driver_seconds, 2),
                         "parallel_seconds": round(m.parallel_seconds, 2), "tasks": m.tasks,
                         "speedup": round(speedup, 3),
                         "efficiency": round(speedup * reference.cores / m.cores, 3),
                         "events_per_s_per_core": round(events / m.wall_seconds / m.cores, 1)})
    return rows


def project(model: StageModel, events: int, cores: Sequence[int], event_size_factor: float = 1.0
            ) -> list[dict[str, Any]]:
    """The model's wall time for ``events`` on each core count, with the serial share and events/s per core.

    ``event_size_factor`` scales the per-event cost (e.g. the study's bytes per event over ours, for a stage whose
    cost follows the bytes it reads); 1 keeps the measured cost.
    """
    scaled = replace(model, event_cost_core_seconds=model.event_cost_core_seconds * event_size_factor)
    rows = []
    for n in cores:
        seconds = scaled.seconds(events, n)
        rows.append({"stage": model.stage, "events": events, "cores": n, "tasks": scaled.tasks(events, n),
                     "event_size_factor": round(event_size_factor, 3), "seconds": round(seconds, 1),
                     "hours": round(seconds / 3600, 3), "serial_share": round(scaled.serial(events) / seconds, 3),
                     "events_per_s_per_core": round(events / seconds / n, 1)})
    return rows
