"""One ingestion work unit (ROOT slice or raw_events file -> Parquet tables) and the task planner."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lhc_assets.physics import features as K
from lhc_assets.physics.delphes_reader import RAW_SCHEMA, read_batches
from lhc_assets.physics.ingest import (
    HLF,
    LLF,
    RAW,
    SOURCE_PARQUET,
    SOURCE_ROOT,
    as_raw_schema,
    plan_entry_ranges,
    run_slice,
    run_slices,
    summarize,
)
from tests.physics import badfiles


@pytest.mark.parametrize(
    ("sizes", "max_per_task", "parallelism"),
    [([6000, 6000, 6000], 5000, 2), ([800], 5000, 2), ([1, 1, 1], 5000, 2), ([10], 3, 1), ([3, 9000, 17], 1000, 4)],
)
def test_plan_covers_every_entry_once_in_balanced_tasks(sizes, max_per_task, parallelism):
    tasks = plan_entry_ranges(sizes, max_per_task, parallelism)
    total = sum(sizes)
    covered = [(i, e) for task in tasks for i, start, stop in task for e in range(start, stop)]
    assert covered == [(i, e) for i, n in enumerate(sizes) for e in range(n)]  # each entry once, in order
    per_task = [sum(stop - start for _, start, stop in task) for task in tasks]
    assert max(per_task) - min(per_task) <= 1
    assert max(per_task) <= max(max_per_task, -(-total // len(tasks)))
    if total >= parallelism:
        assert len(tasks) % parallelism == 0 or len(tasks) == total


def test_three_equal_files_on_two_cores_make_an_even_number_of_equal_tasks():
    tasks = plan_entry_ranges([6000, 6000, 6000], 5000, 2)
    assert [sum(b - a for _, a, b in t) for t in tasks] == [4500] * 4
    assert tasks[1] == [(0, 4500, 6000), (1, 0, 3000)]  # a task may span two files


def test_plan_of_nothing_is_empty():
    assert plan_entry_ranges([], 100, 2) == []
    assert plan_entry_ranges([0, 0], 100, 2) == []


def _raw_table(directory) -> pa.Table:
    """raw_events part files of a directory, in name order, read back with RAW_SCHEMA's types."""
    files = sorted(directory.glob("*.parquet"))
    return pa.Table.from_batches([as_raw_schema(b) for f in files for b in pq.read_table(f).to_batches()],
                                 schema=RAW_SCHEMA)


def _spec(path, sample, outputs, source=SOURCE_ROOT, start=0, stop=800, part="part-0", batch_size=300):
    return {"partition_key": f"{sample}/x", "sample": sample, "source": source, "path": str(path), "outputs": outputs,
            "part": part, "start": start, "stop": stop, "batch_size": batch_size}


def test_a_root_slice_writes_the_three_tables_equal_to_the_kernels(tmp_path, generated_files):
    path = generated_files["wjets"]
    outputs = {t: str(tmp_path / t) for t in (RAW, HLF, LLF)}
    result = run_slice(_spec(path, "wjets", outputs, start=100, stop=700))
    assert result["error"] is None

    batch = next(read_batches(str(path), "wjets", "wjets/x", 100, 700, step=10_000))
    expected_hlf, reason = K.hlf_table(batch)
    expected_llf, _ = K.llf_table(batch)
    raw = _raw_table(tmp_path / RAW)
    hlf = pq.read_table(tmp_path / HLF / "part-0.parquet")
    llf = pq.read_table(tmp_path / LLF / "part-0.parquet")
    assert raw.schema.equals(RAW_SCHEMA) and raw.column("entry").to_pylist() == list(range(100, 700))
    assert raw.equals(pa.Table.from_batches([batch]))
    assert hlf.equals(pa.Table.from_batches([expected_hlf]).cast(hlf.schema))
    assert llf.column("llf").equals(pa.chunked_array([expected_llf.column("llf")]).cast(llf.schema.field("llf").type))
    assert result["events_read"] == 600
    assert result["rows"] == {RAW: 600, HLF: hlf.num_rows, LLF: hlf.num_rows}
    assert result["reasons"] == K.reason_counts(reason)
    assert not list(tmp_path.rglob(".*.tmp"))


def test_features_recomputed_from_the_raw_parquet_equal_those_from_root(tmp_path, generated_files):
    path = generated_files["ttbar"]
    first = {t: str(tmp_path / "a" / t) for t in (RAW, HLF, LLF)}
    assert run_slice(_spec(path, "ttbar", first))["error"] is None
    again = {t: str(tmp_path / "b" / t) for t in (HLF, LLF)}
    raw_files = sorted((tmp_path / "a" / RAW).glob("*.parquet"))
    assert len(raw_files) == 3  # one per batch of 300
    results = [run_slice(_spec(f, "ttbar", again, source=SOURCE_PARQUET, part=f.stem)) for f in raw_files]
    assert all(r["error"] is None for r in results) and sum(r["events_read"] for r in results) == 800
    for t in (HLF, LLF):
        assert pq.read_table(tmp_path / "b" / t).sort_by("entry").equals(pq.read_table(tmp_path / "a" / t)), t


def test_hlf_only_from_parquet_reads_only_the_track_fields_it_needs(tmp_path, generated_files):
    outputs = {RAW: str(tmp_path / RAW)}
    assert run_slice(_spec(generated_files["qcd"], "qcd", outputs, batch_size=800))["error"] is None
    result = run_slice(_spec(tmp_path / RAW / "part-0-0000.parquet", "qcd", {HLF: str(tmp_path / HLF)},
                             source=SOURCE_PARQUET))
    assert result["error"] is None and result["events_read"] == 800
    expected, _ = K.hlf_table(next(read_batches(str(generated_files["qcd"]), "qcd", "qcd/x", 0, 800, step=10_000)))
    np.testing.assert_array_equal(pq.read_table(tmp_path / HLF).column("MT").to_numpy(),
                                  expected.column("MT").to_numpy())


def test_bad_data_is_returned_as_an_error_naming_the_file_and_leaves_no_files(tmp_path):
    bad = badfiles.with_nan(tmp_path / "nan.root")
    outputs = {t: str(tmp_path / "out" / t) for t in (RAW, HLF, LLF)}
    result = run_slice(_spec(bad, "ttbar", outputs, stop=50))
    assert "nan.root" in result["error"] and "NaN/inf" in result["error"]
    assert result["rows"] == {}
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_a_task_runs_every_slice_even_after_a_bad_one(tmp_path, generated_files):
    bad = badfiles.zero_byte(tmp_path / "empty.root")
    good = _spec(generated_files["qcd"], "qcd", {RAW: str(tmp_path / "raw")}, stop=200)
    out = run_slices({"slices": [_spec(bad, "qcd", {RAW: str(tmp_path / "raw")}, part="p0"), good]})
    errors = [r["error"] for r in out["results"]]
    assert "empty.root" in errors[0] and errors[1] is None
    summary = summarize(out["results"])
    assert summary["qcd/x"]["events_read"] == 200


def test_invalid_outputs_are_a_bug_not_a_data_error(tmp_path, generated_files):
    with pytest.raises(ValueError, match="invalid outputs"):
        run_slice(_spec(generated_files["qcd"], "qcd", {RAW: str(tmp_path)}, source=SOURCE_PARQUET))
    with pytest.raises(ValueError, match="invalid outputs"):
        run_slice(_spec(generated_files["qcd"], "qcd", {"nonsense": str(tmp_path)}))


def test_summary_adds_up_the_slices_of_each_partition():
    results = [
        {"partition_key": "a/1", "events_read": 10, "rows": {RAW: 10, HLF: 3}, "reasons": {"selected": 3}},
        {"partition_key": "a/1", "events_read": 5, "rows": {RAW: 5, HLF: 1}, "reasons": {"selected": 1}},
        {"partition_key": "b/2", "events_read": 7, "rows": {RAW: 7}, "reasons": {}},
    ]
    s = summarize(results)
    assert s["a/1"]["events_read"] == 15 and s["a/1"]["rows"][HLF] == 4 and s["a/1"]["reasons"]["selected"] == 4
    assert s["b/2"]["rows"][RAW] == 7
    assert list(itertools.chain(s)) == ["a/1", "b/2"]


def _codecs(path) -> set[tuple[str, str]]:
    meta = pq.ParquetFile(path).metadata
    return {(meta.schema.column(i).path, meta.row_group(0).column(i).compression) for i in range(meta.num_columns)}


def test_particle_lists_are_stored_uncompressed_by_default_and_with_the_configured_codec_otherwise(
        tmp_path, generated_files):
    path = generated_files["ttbar"]
    assert run_slice(_spec(path, "ttbar", {t: str(tmp_path / "a" / t) for t in (RAW, HLF, LLF)}))["error"] is None
    assert {c for _, c in _codecs(tmp_path / "a" / LLF / "part-0.parquet")} == {"UNCOMPRESSED"}
    for f in (tmp_path / "a" / RAW / "part-0-0000.parquet", tmp_path / "a" / HLF / "part-0.parquet"):
        assert {c for _, c in _codecs(f)} == {"SNAPPY"}, f
    spec = _spec(path, "ttbar", {LLF: str(tmp_path / "b" / LLF)}) | {"llf_compression": "zstd"}
    assert run_slice(spec)["error"] is None
    assert {c for _, c in _codecs(tmp_path / "b" / LLF / "part-0.parquet")} == {"ZSTD"}
    # The codec changes the bytes on disk, not the particle lists.
    assert pq.read_table(tmp_path / "b" / LLF).equals(pq.read_table(tmp_path / "a" / LLF))


def test_raw_events_are_written_one_part_file_per_batch_and_read_back_unchanged(tmp_path, generated_files):
    path = generated_files["qcd"]
    result = run_slice(_spec(path, "qcd", {RAW: str(tmp_path / RAW)}, batch_size=300))
    assert result["error"] is None and result["rows"] == {RAW: 800}
    files = sorted((tmp_path / RAW).iterdir())
    assert [f.name for f in files] == [f"part-0-{k:04d}.parquet" for k in range(3)]  # no temporary names left
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [300, 300, 200]
    assert pq.ParquetFile(files[0]).metadata.num_row_groups == 1
    expected = pa.Table.from_batches(list(read_batches(str(path), "qcd", "qcd/x", 0, 800, step=800)))
    assert _raw_table(tmp_path / RAW).equals(expected)
