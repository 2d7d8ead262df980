"""The dataset checks' file scan: lengths, NaN/inf and ranges of list columns, row group by row group."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lhc_assets.ml.dataset_writer import ColumnScan, float_lists, scan_dataset, scan_file
from lhc_assets.ml.preparation import finite_range


def test_finite_range_counts_nan_and_inf_and_ranges_the_rest():
    assert finite_range(np.array([1.5, np.nan, -2.0, np.inf, -np.inf, 0.25], np.float32)) == (3, -2.0, 1.5)
    assert finite_range(np.array([np.nan], np.float32)) == (1, np.inf, -np.inf)
    assert finite_range(np.zeros(0, np.float32)) == (0, np.inf, -np.inf)


def test_scan_finds_bad_lengths_and_non_finite_values_in_every_row_group_and_file(tmp_path):
    good = np.arange(12, dtype=np.float32).reshape(4, 3)
    bad = good.copy()
    bad[3, 1] = np.nan
    short = pa.array([[0.5, 0.25]], pa.list_(pa.float32()))
    (tmp_path / "ds").mkdir()
    pq.write_table(pa.table({"x": float_lists(good)}), tmp_path / "ds" / "part-00000.parquet", row_group_size=2)
    pq.write_table(pa.concat_tables([pa.table({"x": float_lists(bad)}).cast(pa.schema([("x", short.type)])),
                                     pa.table({"x": short})]), tmp_path / "ds" / "part-00001.parquet",
                   row_group_size=3)
    pq.write_table(pa.table({"x": float_lists(good * 100)}), tmp_path / "ds" / ".part-00002.parquet.partial")

    first = scan_file(tmp_path / "ds" / "part-00000.parquet", {"x": 3})
    assert (first.rows, first.bad_lengths, first.non_finite, first.minimum, first.maximum) == (
        4, {"x": 0}, {"x": 0}, {"x": 0.0}, {"x": 11.0})
    scan = scan_dataset(tmp_path / "ds", {"x": 3})  # the in-progress hidden file is not part of the dataset
    assert (scan.rows, scan.bad_lengths, scan.non_finite, scan.minimum, scan.maximum) == (
        9, {"x": 1}, {"x": 1}, {"x": 0.0}, {"x": 11.0})
    assert ColumnScan.empty({"x": 3}).merge(first) == first
