"""Run plain Python work units as Spark tasks, with only small summaries crossing the JVM.

    results = run_tasks(session, run_slices, [unit_a, unit_b, ...], description="ingest 3 files")

Each unit becomes one Spark partition of ``spark.range`` and runs inside ``mapInArrow`` on an executor's
Python worker, which reads its input and writes its output files itself. This is how the ingestion and
the training-set writers keep the bulk arrays out of the JVM (docs/performance.md) while Spark still
schedules, retries and scales the work: local[*] on a laptop, a standalone or YARN/Kubernetes cluster by
configuration. Units and results travel pickled (as Spark ships Python closures), so they can be
dataclasses or numpy arrays of this project's importable modules; keep them small.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa


def pack_by_weight(weights: dict[str, int], tasks: int) -> list[tuple[str, ...]]:
    """Work items grouped into at most ``tasks`` groups of similar total weight (heaviest first onto the
    lightest group), each group in key order: one Spark task per core instead of one per small item, which
    would each pay a task's start-up (about 0.1 s). Deterministic for the same weights."""
    groups: list[list[str]] = [[] for _ in range(max(1, min(tasks, len(weights))))]
    load = [0] * len(groups)
    for key in sorted(weights, key=lambda k: (-weights[k], k)):
        g = load.index(min(load))
        groups[g].append(key)
        load[g] += weights[key]
    return [tuple(sorted(g)) for g in groups if g]


def run_tasks(session, fn: Callable[[Any], Any], units: list[Any], description: str = "") -> list[Any]:
    """``fn(unit)`` for every unit, one Spark task each; returns the results in the order of ``units``.

    ``fn`` must be importable on the executors (a module-level function of this project).
    """
    if not units:
        return []
    payload = [pickle.dumps(u) for u in units]

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            ids = batch.column(0).to_pylist()
            results = [pickle.dumps(fn(pickle.loads(payload[i]))) for i in ids]
            yield pa.RecordBatch.from_arrays([pa.array(ids, pa.int64()), pa.array(results, pa.binary())],
                                             names=["id", "result"])

    sc = session.sparkContext
    if description:
        sc.setJobDescription(description)
    try:
        rows = session.range(0, len(units), 1, numPartitions=len(units)).mapInArrow(
            run, "id long, result binary").collect()
    finally:
        if description:
            sc.setJobDescription(None)
    by_id = {r["id"]: pickle.loads(r["result"]) for r in rows}
    return [by_id[i] for i in range(len(units))]
