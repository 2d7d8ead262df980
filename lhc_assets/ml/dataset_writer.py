"""Writing the training datasets: the work units Spark schedules, in plain pyarrow and numpy.

The inclusive datasets carry 801 x 19 floats per event. Moving those through the JVM (Arrow -> Spark
rows -> parquet-mr) runs at a few hundred events/s per core, so Spark schedules these units as tasks
and each one reads and writes Parquet with pyarrow in its Python worker; only small results (counts,
moments) return to the driver. The shuffle of the train split is a two-step exchange through files on
the shared data root:

* map (one task per group of input partitions): select the events of ``undersampled_dataset``, build
  the training columns and write them, grouped by output shard, as Arrow IPC pieces;
* reduce (one task per output file): gather the pieces of one shard, sort them by the shuffle key and
  write one Parquet file with small row groups (what Petastorm reads as a unit).

Shards are contiguous ranges of the shuffle key (``preparation.shard_of``), so the files in order are
the whole split sorted by the key: the same rows in the same order on every run with the same seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from lhc_assets.ml.contract import GRU_WIDTH, N_CLASSES, N_HLF
from lhc_assets.ml.preparation import (
    FeatureScalers,
    Moments,
    finite_range,
    one_hot,
    pad_standardise,
    scale_hlf,
    shard_of,
    sort_particles,
)
from lhc_assets.physics.llf_format import encode_llf, llf_rows
from lhc_assets.physics.schema import HLF_COLUMNS

SPLITS = ("train", "test")
SHUFFLE_KEY = "shuffle_key"
IDENTITY = ("sample", "file", "entry")
FLOAT_LIST = pa.list_(pa.field("element", pa.float32(), nullable=False))
INCLUSIVE_SCHEMA = pa.schema([
    pa.field("sample", pa.string(), nullable=False),
    pa.field("file", pa.string(), nullable=False),
    pa.field("entry", pa.int64(), nullable=False),
    pa.field("label", FLOAT_LIST, nullable=False),
    pa.field("hlf_input", FLOAT_LIST, nullable=False),
    pa.field("gru_input", FLOAT_LIST, nullable=False),
])
HLF_SCHEMA = pa.schema([INCLUSIVE_SCHEMA.field(c) for c in ("sample", "file", "entry", "label", "hlf_input")])
# The map's pieces carry each event's real particle rows, sorted by dR but neither padded nor scaled
# (encode_llf's float32 bytes): half the bytes of the padded GRU input through the exchange.
_PIECE_SCHEMA = pa.schema([pa.field(SHUFFLE_KEY, pa.int64(), nullable=False), *HLF_SCHEMA,
                           pa.field("particles", pa.binary(), nullable=False)])
BYTES_PER_HLF_EVENT = 4 * (N_HLF + N_CLASSES) + 8 + 48  # values, entry, identity strings
BYTES_PER_INCLUSIVE_EVENT = 4 * GRU_WIDTH + BYTES_PER_HLF_EVENT


class DatasetInputError(ValueError):
    """The feature tables do not match the selection (for example one of them was re-materialized alone)."""


def float_lists(matrix: np.ndarray) -> pa.ListArray:
    """(n, w) float32 -> list<float> column with n rows of w values (zero-copy of the values)."""
    matrix = np.ascontiguousarray(matrix, np.float32)
    n, w = matrix.shape
    if n * w >= 2**31:
        raise ValueError(f"{n} rows of {w} values do not fit a 32-bit-offset list column; use smaller chunks")
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * w), pa.array(matrix.ravel()),
                                    type=FLOAT_LIST)


def rows_per_row_group(row_group_bytes: int, bytes_per_row: int = BYTES_PER_INCLUSIVE_EVENT) -> int:
    """Events per Parquet row group so that a row group holds about ``row_group_bytes`` uncompressed."""
    return max(1, int(row_group_bytes) // bytes_per_row)


def _selection(selection_dir: str, keys: list[str], columns: list[str]) -> pa.Table:
    dataset = ds.dataset(selection_dir, format="parquet")
    return dataset.to_table(columns=columns, filter=pc.field("partition_key").isin(keys))


def _matched_llf(key: str, llf_dir: str, entries: np.ndarray, chunk_events: int):
    """Yield (selection row indices, llf row offsets, llf rows, batch indices) for the selected entries of one
    partition: event k of the selection rows is event ``batch_indices[k]`` of the offsets and rows."""
    order = np.argsort(entries, kind="stable")
    sorted_entries = entries[order]
    found = 0
    for path in dataset_files(llf_dir):
        columns = ["entry", "n_particles", "llf"]
        # pre_buffer coalesces the reads of a row group: 2.5x faster on the large particle-list chunks.
        for batch in pq.ParquetFile(path, pre_buffer=True).iter_batches(batch_size=chunk_events, columns=columns):
            batch_entries = batch.column(0).to_numpy()
            pos = np.minimum(np.searchsorted(sorted_entries, batch_entries), max(len(sorted_entries) - 1, 0))
            hit = sorted_entries[pos] == batch_entries if len(sorted_entries) else np.zeros(len(batch_entries), bool)
            if not hit.any():
                continue
            take = np.flatnonzero(hit)
            try:
                offsets, rows = llf_rows(batch.column(2))
            except (TypeError, ValueError) as exc:
                raise DatasetInputError(f"llf_features partition {key!r} ({path}): {exc}") from None
            if not np.array_equal(np.diff(offsets)[take], batch.column(1).to_numpy()[take]):
                raise DatasetInputError(
                    f"llf_features partition {key!r} ({path}): stored particle values do not match n_particles")
            found += len(take)
            yield order[pos[take]], offsets, rows, take
    if found != len(entries):
        raise DatasetInputError(
            f"llf_features partition {key!r}: {len(entries) - found} of the {len(entries)} selected events are "
            f"missing from {llf_dir}; hlf_features and llf_features come from different inputs, re-materialize "
            "the partition")


@dataclass(frozen=True)
class ShuffleMapTask:
    """Build the training columns of the selected events of some partitions, written as pieces per shard."""

    task_id: int
    partitions: tuple[tuple[str, str], ...]  # (partition key, llf_features version directory)
    selection_dir: str
    hlf_min: tuple[float, ...]  # the train ranges (the LLF mean/std are fitted by the map itself)
    hlf_max: tuple[float, ...]
    shards: tuple[tuple[str, int], ...]  # (split, number of output files)
    out_dir: str
    chunk_events: int = 1000


def piece_dir(out_dir: str | Path, split: str, shard: int) -> Path:
    return Path(out_dir) / split / f"shard-{shard:05d}"


@dataclass
class MapResult:
    written: dict[str, int]  # rows per split
    train_events: int
    # Per partition key, the moments of the real particle rows of its train events (the LLF scaler's fit):
    # merged by the driver in key order, so the scalers do not depend on how partitions are grouped in tasks.
    moments: dict[str, Moments]


def run_map(task: ShuffleMapTask) -> MapResult:
    """One Arrow IPC piece per (task, split, shard), appended chunk by chunk, with each event's particle rows
    sorted by dR but not yet padded or standardised: the particle lists are read once, and the same pass fits
    the LLF mean/std on train."""
    shards = dict(task.shards)
    moments: dict[str, Moments] = {}
    train_events = 0
    keys = [k for k, _ in task.partitions]
    columns = ["partition_key", *IDENTITY, "label", "split", SHUFFLE_KEY, *HLF_COLUMNS]
    sel = _selection(task.selection_dir, keys, columns)
    written = dict.fromkeys(shards, 0)
    writers: dict[tuple[str, int], tuple[pa.OSFile, pa.ipc.RecordBatchFileWriter]] = {}
    try:
        for key, llf_dir in task.partitions:
            part = sel.filter(pc.equal(sel["partition_key"], key))
            if part.num_rows == 0:
                continue
            hlf_raw = np.column_stack([part[c].to_numpy() for c in HLF_COLUMNS])
            labels = part["label"].to_numpy()
            split = part["split"].to_numpy(zero_copy_only=False)
            shuffle_keys = part[SHUFFLE_KEY].to_numpy()
            for idx, offsets, rows, events in _matched_llf(key, llf_dir, part["entry"].to_numpy(), task.chunk_events):
                is_train = split[idx] == "train"
                train_events += int(np.count_nonzero(is_train))
                moments[key] = moments.get(key, Moments()).merge(Moments.of_events(offsets, rows, events[is_train]))
                # Events grouped by (split, shard), so that each piece is a zero-copy slice of one table.
                group = np.full(len(idx), -1, np.int64)
                targets = []
                for name, n_shards in shards.items():
                    in_split = split[idx] == name
                    if in_split.any():
                        group[in_split] = len(targets) + shard_of(shuffle_keys[idx][in_split], n_shards)
                    targets += [(name, s) for s in range(n_shards)]
                order = np.flatnonzero(group >= 0)
                order = order[np.argsort(group[order], kind="stable")]
                rows_idx = idx[order]
                take = pa.array(rows_idx)
                sorted_offsets, sorted_rows = sort_particles(offsets, rows, events=events[order])
                chunk = pa.table({
                    SHUFFLE_KEY: pa.array(shuffle_keys[rows_idx]),
                    "sample": part["sample"].take(take),
                    "file": part["file"].take(take),
                    "entry": part["entry"].take(take),
                    "label": float_lists(one_hot(labels[rows_idx])),
                    "hlf_input": float_lists(scale_hlf(hlf_raw[rows_idx], task.hlf_min, task.hlf_max)),
                    "particles": encode_llf(np.diff(sorted_offsets), sorted_rows),
                }).cast(_PIECE_SCHEMA)
                bounds = np.searchsorted(group[order], np.arange(len(targets) + 1))
                for g, (name, s) in enumerate(targets):
                    if bounds[g + 1] == bounds[g]:
                        continue
                    out = writers.get((name, s))
                    if out is None:
                        target = piece_dir(task.out_dir, name, s)
                        target.mkdir(parents=True, exist_ok=True)
                        sink = pa.OSFile(str(target / f"map-{task.task_id:05d}.arrow"), "wb")
                        out = writers[(name, s)] = (sink, pa.ipc.new_file(sink, _PIECE_SCHEMA))
                    out[1].write_table(chunk.slice(bounds[g], bounds[g + 1] - bounds[g]))
                    written[name] += int(bounds[g + 1] - bounds[g])
    finally:
        for sink, writer in writers.values():
            writer.close()
            sink.close()
    return MapResult(written, train_events, moments)


@dataclass(frozen=True)
class ShuffleReduceTask:
    """Gather the pieces of one shard, sort by the shuffle key, pad and standardise the GRU inputs, and write
    the shard as one inclusive and one HLF-only Parquet file."""

    split: str
    shard: int
    pieces_dir: str
    out_file: str  # inclusive dataset file
    hlf_out_file: str  # HLF-only dataset file: the same rows without gru_input
    row_group_rows: int
    hlf_row_group_rows: int
    scalers: dict  # FeatureScalers.to_dict(), fitted from the map results
    compression: str = "snappy"


def _write_atomic(table: pa.Table, out_file: str, **options) -> None:
    tmp = Path(out_file).with_name(f".{Path(out_file).name}.partial")
    pq.write_table(table, tmp, compression=options.pop("compression"), use_dictionary=list(IDENTITY[:2]),
                   write_statistics=list(IDENTITY), **options)
    tmp.rename(out_file)


def run_reduce(task: ShuffleReduceTask) -> int:
    """Rows written (0 and no file when the shard received no rows)."""
    files = sorted(Path(task.pieces_dir).glob("*.arrow")) if Path(task.pieces_dir).is_dir() else []
    if not files:
        return 0
    tables = []
    for f in files:
        with pa.memory_map(str(f)) as source:
            tables.append(pa.ipc.open_file(source).read_all())
    table = pa.concat_tables(tables)
    order = pc.sort_indices(table.select([SHUFFLE_KEY, *IDENTITY]),
                            sort_keys=[(SHUFFLE_KEY, "ascending"), *((c, "ascending") for c in IDENTITY)])
    scalers = FeatureScalers.from_dict(task.scalers)
    # The GRU inputs (nearly all the bytes) are sorted, padded and standardised in one copy straight from
    # the memory-mapped pieces: row g of the pieces goes to row position[g] of the shard.
    position = np.empty(table.num_rows, np.int64)
    position[order.to_numpy()] = np.arange(table.num_rows)
    gru = np.empty((table.num_rows, GRU_WIDTH), np.float32)
    start = 0
    for chunk in table.column("particles").chunks:
        offsets, rows = llf_rows(chunk)
        pad_standardise(offsets, rows, scalers, out=gru, out_rows=position[start:start + len(chunk)])
        start += len(chunk)
    hlf = table.drop_columns(["particles"]).take(order).drop_columns([SHUFFLE_KEY])
    _write_atomic(hlf, task.hlf_out_file, row_group_size=task.hlf_row_group_rows, compression=task.compression)
    inclusive = hlf.append_column(INCLUSIVE_SCHEMA.field("gru_input"), float_lists(gru))
    _write_atomic(inclusive, task.out_file, row_group_size=task.row_group_rows, compression=task.compression)
    return table.num_rows


def write_empty(out_file: str | Path, schema: pa.Schema = INCLUSIVE_SCHEMA) -> None:
    """A split without rows still gets one file that carries the schema."""
    pq.write_table(pa.Table.from_batches([], schema=schema), out_file)


@dataclass
class ColumnScan:
    """What the dataset checks look at, gathered row group by row group (never the whole dataset at once)."""

    rows: int
    bad_lengths: dict[str, int]  # rows whose list length is not the expected one
    non_finite: dict[str, int]  # NaN/inf values
    minimum: dict[str, float]  # of the finite values
    maximum: dict[str, float]

    @classmethod
    def empty(cls, columns: dict[str, int]) -> ColumnScan:
        return cls(0, dict.fromkeys(columns, 0), dict.fromkeys(columns, 0), dict.fromkeys(columns, np.inf),
                   dict.fromkeys(columns, -np.inf))

    def merge(self, other: ColumnScan) -> ColumnScan:
        return ColumnScan(
            self.rows + other.rows,
            {c: n + other.bad_lengths[c] for c, n in self.bad_lengths.items()},
            {c: n + other.non_finite[c] for c, n in self.non_finite.items()},
            {c: min(v, other.minimum[c]) for c, v in self.minimum.items()},
            {c: max(v, other.maximum[c]) for c, v in self.maximum.items()},
        )


def dataset_files(path: str | Path) -> list[Path]:
    """The Parquet files of a dataset directory, in order (hidden and in-progress files excluded)."""
    return sorted(p for p in Path(path).glob("*.parquet") if not p.name.startswith(("_", ".")))


def scan_file(path: str | Path, columns: dict[str, int]) -> ColumnScan:
    """Row count, rows with a wrong list length, non-finite values and the value range of the list columns
    of one Parquet file (``columns`` maps a list column to its expected length), row group by row group."""
    scan = ColumnScan.empty(columns)
    pf = pq.ParquetFile(path, pre_buffer=True)
    for i in range(pf.num_row_groups):
        table = pf.read_row_group(i, columns=list(columns))
        scan.rows += table.num_rows
        for name, width in columns.items():
            col = table[name].combine_chunks()
            scan.bad_lengths[name] += int(np.count_nonzero(np.diff(col.offsets.to_numpy()) != width))
            bad, lo, hi = finite_range(col.flatten().to_numpy(zero_copy_only=False))
            scan.non_finite[name] += bad
            scan.minimum[name] = min(scan.minimum[name], lo)
            scan.maximum[name] = max(scan.maximum[name], hi)
    return scan


def scan_files(units: list[tuple[str, dict[str, int]]]) -> list[ColumnScan]:
    """``scan_file`` of each (path, columns) (a Spark task of the dataset checks)."""
    return [scan_file(path, columns) for path, columns in units]


def scan_dataset(path: str | Path, columns: dict[str, int]) -> ColumnScan:
    """``scan_file`` over every file of a dataset."""
    scan = ColumnScan.empty(columns)
    for f in dataset_files(path):
        scan = scan.merge(scan_file(f, columns))
    return scan
