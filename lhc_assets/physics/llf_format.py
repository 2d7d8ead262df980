"""Storage format of the ``llf`` column of llf_features: each event's real particle rows as raw bytes.

The particle list is stored as little-endian float32 bytes (n_particles x 19, row-major, columns in
``schema.LLF_COLUMNS`` order), not as list<float>: the pinned pyarrow 14 writes and reads a list<float>
value by value (20-30 ns each, about 10,700 values per event), which was half of the ingestion's time and
60 % of the training-data preparation's; bytes cost a memcpy. ``llf_rows`` decodes a column without copying,
``llf_matrix`` one event, and ``lhc_assets.spark.views.llf_as_array`` gives Spark users an array<float> view.
Pure numpy/pyarrow: no Dagster, no Spark.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from lhc_assets.physics import schema as S
from lhc_assets.physics.schema import N_LLF

ROW_BYTES = 4 * N_LLF
FLOAT32_LE = np.dtype("<f4")
LLF_FIELD = pa.field("llf", pa.binary(), nullable=False, metadata={
    b"encoding": b"float32 little-endian, n_particles x 19 row-major (LLF_COLUMNS order)"})


def encode_llf(counts: np.ndarray, rows: np.ndarray) -> pa.BinaryArray:
    """Binary column of len(counts) events from their concatenated real rows (sum(counts), 19)."""
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(np.asarray(counts, np.int64) * ROW_BYTES, out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise ValueError(f"{len(counts)} particle lists take {offsets[-1]} bytes, over a binary column's 2 GiB: "
                         "use smaller batches")
    if rows.size != offsets[-1] // 4:
        raise ValueError(f"{rows.size} values for {int(np.sum(counts))} particles of {N_LLF} columns")
    values = np.ascontiguousarray(rows, FLOAT32_LE)
    return pa.Array.from_buffers(pa.binary(), len(counts),
                                 [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(values)])


def llf_rows(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Decode an ``llf`` column: (row offsets (n + 1,) int64, real rows (total, 19) float32).

    Event i's particles are ``rows[offsets[i]:offsets[i + 1]]``. The rows share the column's memory.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if not pa.types.is_binary(column.type):
        raise TypeError(f"llf column must be binary (float32 bytes), got {column.type}")
    n = len(column)
    if n == 0:
        return np.zeros(1, np.int64), np.zeros((0, N_LLF), np.float32)
    _, offset_buffer, data = column.buffers()
    offsets = np.frombuffer(offset_buffer, np.int32, count=n + 1, offset=4 * column.offset).astype(np.int64)
    start, stop = int(offsets[0]), int(offsets[-1])
    if column.null_count or np.any((offsets - start) % ROW_BYTES):
        raise ValueError(f"llf column: values are not whole rows of {N_LLF} float32")
    values = np.frombuffer(data, FLOAT32_LE, count=(stop - start) // 4, offset=start) if stop > start else (
        np.zeros(0, np.float32))
    return (offsets - start) // ROW_BYTES, values.reshape(-1, N_LLF)


def llf_matrix(n_particles: int, stored: bytes | np.ndarray) -> np.ndarray:
    """The full 801 x 19 particle list of one event from its stored ``llf`` value (padding rows zero)."""
    flat = np.frombuffer(stored, FLOAT32_LE) if isinstance(stored, bytes | memoryview) else stored
    out = np.zeros((S.LLF_ROWS, N_LLF), np.float32)
    out[:n_particles] = np.asarray(flat, np.float32).reshape(n_particles, N_LLF)
    return out
