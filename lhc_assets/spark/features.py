"""The feature jobs: selection, HLF and LLF computed inside Spark with ``mapInArrow``.

The kernels (``lhc_assets.physics.features``) run on whole Arrow batches in the Python workers; the
per-event drop reasons are counted with an accumulator keyed by (partition key, reason).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
from pyspark import AccumulatorParam
from pyspark.sql import DataFrame
from pyspark.sql.pandas.types import from_arrow_schema

from lhc_assets.physics import features as K

SELECTED = "selected"


class CounterParam(AccumulatorParam):
    """Accumulates ``Counter`` objects by addition."""

    def zero(self, value: Counter) -> Counter:
        return Counter()

    def addInPlace(self, value1: Counter, value2: Counter) -> Counter:
        value1.update(value2)
        return value1


def _kernel_udf(kernel: Callable, acc) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        counts: Counter = Counter()
        for batch in batches:
            if batch.num_rows == 0:
                continue
            out, reason = kernel(batch)
            keys = batch.column(batch.schema.get_field_index("partition_key")).to_numpy(zero_copy_only=False)
            for key in np.unique(keys):
                r = reason[keys == key]
                counts[(key, SELECTED)] += int(np.count_nonzero(r == K.REASON_SELECTED))
                for code, name in K.REASON_NAMES.items():
                    counts[(key, name)] += int(np.count_nonzero(r == code))
            yield out
        acc.add(counts)

    return run


def _features(raw: DataFrame, kernel: Callable, schema: pa.Schema, fields: dict) -> tuple[DataFrame, object]:
    from pyspark.sql import functions as F

    acc = raw.sparkSession.sparkContext.accumulator(Counter(), CounterParam())
    # Only the fields the kernel reads cross from the JVM to Python (Parquet prunes nested fields too).
    columns = [F.col(f.name) for f in K.IDENTITY_SCHEMA_FIELDS] + [
        F.struct(*(F.col(f"{coll}.{f}").alias(f) for f in names)).alias(coll) for coll, names in fields.items()
    ]
    df = raw.select(*columns).mapInArrow(_kernel_udf(kernel, acc), from_arrow_schema(schema))
    return df, acc


def hlf_features(raw: DataFrame) -> tuple[DataFrame, object]:
    """HLF rows of the selected events, and the accumulator of selection counts."""
    return _features(raw, K.hlf_table, K.HLF_SCHEMA, K.HLF_INPUT_FIELDS)


def llf_features(raw: DataFrame) -> tuple[DataFrame, object]:
    """Particle lists of the selected events, and the accumulator of selection counts."""
    return _features(raw, K.llf_table, K.LLF_SCHEMA, K.LLF_INPUT_FIELDS)


def selection_summary(counts: Counter, keys: list[str]) -> dict[str, dict[str, int]]:
    """Per partition key: events read, selected and dropped per reason."""
    out = {}
    for key in keys:
        row = {name: int(counts.get((key, name), 0)) for name in (SELECTED, *K.REASON_NAMES.values())}
        row["events_read"] = sum(row.values())
        out[key] = row
    return out
