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

from lhc_assets.ml.preparation import (
    GRU_WIDTH,
    N_CLASSES,
    N_HLF,
    FeatureScalers,
    Moments,
    gru_input,
    one_hot,
    scale_hlf,
    shard_of,
    standardise_gru,
)
from lhc_assets.physics.llf_format import llf_rows
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
_PIECE_SCHEMA = pa.schema([pa.field(SHUFFLE_KEY, pa.int64(), nullable=False), *INCLUSIVE_SCHEMA])
BYTES_PER_INCLUSIVE_EVENT = 4 * (GRU_WIDTH + N_HLF + N_CLASSES) + 8 + 48  # values, entry, identity strings


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
    """Yield (selection row indices, llf row offsets, llf rows) for the selected entries of one partition."""
    order = np.argsort(entries, kind="stable")
    sorted_entries = entries[order]
    found = 0
    files = sorted(p for p in Path(llf_dir).glob("*.parquet") if not p.name.startswith(("_", ".")))
    for path in files:
        columns = ["entry", "n_particles", "llf"]
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_events, columns=columns):
            batch_entries = batch.column(0).to_numpy()
            pos = np.minimum(np.searchsorted(sorted_entries, batch_entries), max(len(sorted_entries) - 1, 0))
            hit = sorted_entries[pos] == batch_entries if len(sorted_entries) else np.zeros(len(batch_entries), bool)
            if not hit.any():
                continue
            take = np.flatnonzero(hit)
            n_particles = batch.column(1).to_numpy()[take].astype(np.int64)
            try:
                offsets, rows = llf_rows(batch.column(2).take(pa.array(take)))
            except (TypeError, ValueError) as exc:
                raise DatasetInputError(f"llf_features partition {key!r} ({path}): {exc}") from None
            if not np.array_equal(np.diff(offsets), n_particles):
                raise DatasetInputError(
                    f"llf_features partition {key!r} ({path}): stored particle values do not match n_particles")
            found += len(take)
            yield order[pos[take]], offsets, rows
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
    moments: Moments  # of the real particle rows of the train events: the LLF scaler's fit


def run_map(task: ShuffleMapTask) -> MapResult:
    """One Arrow IPC piece per (task, split, shard), appended chunk by chunk, with the GRU inputs not yet
    standardised: the particle lists are read once, and the same pass fits the LLF mean/std on train."""
    shards = dict(task.shards)
    moments, train_events = Moments(), 0
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
            for idx, offsets, rows in _matched_llf(key, llf_dir, part["entry"].to_numpy(), task.chunk_events):
                is_train = split[idx] == "train"
                train_events += int(np.count_nonzero(is_train))
                moments = moments.merge(Moments.of(rows[np.repeat(is_train, np.diff(offsets))]))
                # Events grouped by (split, shard), so that each piece is a zero-copy slice of one table whose
                # GRU inputs are built once, in that order.
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
                chunk = pa.table({
                    SHUFFLE_KEY: pa.array(shuffle_keys[rows_idx]),
                    "sample": part["sample"].take(take),
                    "file": part["file"].take(take),
                    "entry": part["entry"].take(take),
                    "label": float_lists(one_hot(labels[rows_idx])),
                    "hlf_input": float_lists(scale_hlf(hlf_raw[rows_idx], task.hlf_min, task.hlf_max)),
                    "gru_input": float_lists(gru_input(offsets, rows, events=order)),
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
    """Gather the pieces of one shard, sort by the shuffle key, standardise the GRU inputs, write one Parquet file."""

    split: str
    shard: int
    pieces_dir: str
    out_file: str
    row_group_rows: int
    scalers: dict  # FeatureScalers.to_dict(), fitted from the map results
    compression: str = "snappy"


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
    # The GRU inputs (nearly all the bytes) are sorted and standardised in one copy straight from the
    # memory-mapped pieces: row g of the pieces goes to row position[g] of the shard.
    position = np.empty(table.num_rows, np.int64)
    position[order.to_numpy()] = np.arange(table.num_rows)
    scaled = np.empty((table.num_rows, GRU_WIDTH), np.float32)
    start = 0
    for chunk in table.column("gru_input").chunks:
        values = chunk.flatten().to_numpy().reshape(len(chunk), GRU_WIDTH)
        standardise_gru(values, scalers, out=scaled, out_rows=position[start:start + len(chunk)])
        start += len(chunk)
    table = table.drop_columns(["gru_input"]).take(order).drop_columns([SHUFFLE_KEY])
    table = table.append_column(INCLUSIVE_SCHEMA.field("gru_input"), float_lists(scaled))
    tmp = Path(task.out_file).with_name(f".{Path(task.out_file).name}.partial")
    pq.write_table(table, tmp, row_group_size=task.row_group_rows, compression=task.compression,
                   use_dictionary=list(IDENTITY[:2]), write_statistics=list(IDENTITY))
    tmp.rename(task.out_file)
    return table.num_rows


def write_empty(out_file: str | Path, schema: pa.Schema = INCLUSIVE_SCHEMA) -> None:
    """A split without rows still gets one file that carries the schema."""
    pq.write_table(pa.Table.from_batches([], schema=schema), out_file)


@dataclass
class ColumnScan:
    """What the dataset checks look at, gathered row group by row group (never the whole dataset at once)."""

    rows: int = 0
    bad_lengths: dict[str, int] | None = None
    non_finite: dict[str, int] | None = None
    minimum: dict[str, float] | None = None
    maximum: dict[str, float] | None = None


def scan_dataset(path: str | Path, columns: dict[str, int]) -> ColumnScan:
    """Row count, rows with a wrong list length, non-finite values and the value range of list columns.

    ``columns`` maps a list column to its expected length.
    """
    scan = ColumnScan(0, dict.fromkeys(columns, 0), dict.fromkeys(columns, 0),
                      dict.fromkeys(columns, np.inf), dict.fromkeys(columns, -np.inf))
    files = sorted(p for p in Path(path).glob("*.parquet") if not p.name.startswith(("_", ".")))
    for f in files:
        pf = pq.ParquetFile(f)
        for i in range(pf.num_row_groups):
            table = pf.read_row_group(i, columns=list(columns))
            scan.rows += table.num_rows
            for name, width in columns.items():
                col = table[name].combine_chunks()
                lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
                scan.bad_lengths[name] += int(np.count_nonzero(lengths != width))
                values = col.flatten().to_numpy(zero_copy_only=False)
                if values.size:
                    finite = np.isfinite(values)
                    scan.non_finite[name] += int(values.size - np.count_nonzero(finite))
                    scan.minimum[name] = min(scan.minimum[name], float(values[finite].min(initial=np.inf)))
                    scan.maximum[name] = max(scan.maximum[name], float(values[finite].max(initial=-np.inf)))
    return scan
