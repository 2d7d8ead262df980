"""Run plain Python work units as Spark tasks, with only small JSON summaries crossing the JVM.

    results = run_tasks(session, run_slice, [slice_a, slice_b, ...], description="ingest 3 files")

Each unit becomes one Spark partition of ``spark.range`` and runs inside ``mapInArrow`` on an executor's
Python worker, which reads its input and writes its output files itself. This is how the ingestion keeps
the bulk arrays out of the JVM (docs/performance.md) while Spark still schedules, retries and scales the
work: local[*] on a laptop, a standalone or YARN/Kubernetes cluster by configuration.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pyarrow as pa


def run_tasks(session, fn: Callable[[dict], dict], units: list[dict], description: str = "") -> list[dict]:
    """``fn(unit)`` for every unit, one Spark task each; returns the results in the order of ``units``.

    ``fn`` must be importable on the executors (a module-level function of this project) and its
    units and results JSON-serialisable.
    """
    if not units:
        return []
    payload = [json.dumps(u) for u in units]

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            ids = batch.column(0).to_pylist()
            results = [json.dumps(fn(json.loads(payload[i]))) for i in ids]
            yield pa.RecordBatch.from_arrays([pa.array(ids, pa.int64()), pa.array(results, pa.string())],
                                             names=["id", "result"])

    sc = session.sparkContext
    if description:
        sc.setJobDescription(description)
    try:
        rows = session.range(0, len(units), 1, numPartitions=len(units)).mapInArrow(
            run, "id long, result string").collect()
    finally:
        if description:
            sc.setJobDescription(None)
    by_id = {r["id"]: json.loads(r["result"]) for r in rows}
    return [by_id[i] for i in range(len(units))]
