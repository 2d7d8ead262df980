"""The llf column's storage format: float32 bytes per event, decoded without copying."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from lhc_assets.physics.llf_format import N_LLF, encode_llf, llf_matrix, llf_rows


def _events(counts: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.asarray(counts), rng.normal(size=(sum(counts), N_LLF)).astype(np.float32)


def test_encoded_rows_decode_to_the_same_values_per_event_also_for_slices_and_chunks():
    counts, rows = _events([3, 0, 801, 1, 5])
    column = encode_llf(counts, rows)
    assert column.type == pa.binary() and len(column) == 5 and column[1].as_py() == b""
    offsets, decoded = llf_rows(column)
    np.testing.assert_array_equal(np.diff(offsets), counts)
    np.testing.assert_array_equal(decoded, rows)
    # A slice (non-zero array offset) and a chunked column decode to their own events only.
    offsets, decoded = llf_rows(column.slice(2, 2))
    np.testing.assert_array_equal(offsets, [0, 801, 802])
    np.testing.assert_array_equal(decoded, rows[3:805])
    offsets, decoded = llf_rows(pa.chunked_array([column.slice(0, 2), column.slice(3, 2)]))
    np.testing.assert_array_equal(np.diff(offsets), [3, 0, 1, 5])
    np.testing.assert_array_equal(decoded, np.concatenate([rows[:3], rows[804:]]))
    # One event as the full 801 x 19 list, padding rows zero.
    matrix = llf_matrix(3, column[0].as_py())
    np.testing.assert_array_equal(matrix[:3], rows[:3])
    assert matrix.shape == (801, N_LLF) and not matrix[3:].any()
    offsets, decoded = llf_rows(encode_llf(np.zeros(0, int), np.zeros((0, N_LLF), np.float32)).slice(0, 0))
    assert offsets.tolist() == [0] and decoded.shape == (0, N_LLF)


def test_bad_llf_columns_are_refused_with_the_reason():
    with pytest.raises(TypeError, match="must be binary"):
        llf_rows(pa.array([[1.0, 2.0]], pa.list_(pa.float32())))
    with pytest.raises(ValueError, match="not whole rows of 19 float32"):
        llf_rows(pa.array([b"\x00" * 4 * N_LLF, b"\x00" * 8]))
    _, rows = _events([2, 2])
    with pytest.raises(ValueError, match="values for 3 particles"):
        encode_llf(np.array([2, 1]), rows)
