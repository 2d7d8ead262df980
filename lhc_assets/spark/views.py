"""Readable Spark views of the stored feature tables.

``llf_features`` stores each event's particle list as float32 bytes (see ``lhc_assets.physics.llf_format``
for why); ``llf_as_array`` adds the same values as ``array<float>`` for Spark SQL and exploration.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql.types import ArrayType, FloatType, StructField, StructType

from lhc_assets.physics.llf_format import N_LLF, llf_rows


def llf_as_array(df: DataFrame, column: str = "llf", name: str = "llf_array") -> DataFrame:
    """``df`` plus ``name``: the ``column`` particle list as array<float> (n_particles x 19, row-major).

    One vectorized ``mapInArrow`` pass; ``F.slice``/``element_at`` then address particle i, feature j as
    element i * 19 + j + 1.
    """
    if column not in df.columns:
        raise ValueError(f"no column {column!r} in {df.columns}")
    schema = StructType([*df.schema.fields, StructField(name, ArrayType(FloatType(), containsNull=False), False)])

    def decode(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            offsets, rows = llf_rows(batch.column(column))
            values = pa.ListArray.from_arrays(pa.array((offsets * N_LLF).astype(np.int32)), pa.array(rows.ravel()))
            yield pa.RecordBatch.from_arrays([*batch.columns, values], names=[*batch.schema.names, name])

    return df.mapInArrow(decode, schema)
