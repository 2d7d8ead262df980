"""One unit of ingestion work: the events of one input slice -> raw_events / hlf_features / llf_features
Parquet part files. pyarrow, polars (the raw_events writer) and the numba kernels: no Spark, no Dagster.

Spark runs one ``run_slice`` per task (``lhc_assets.spark.tasks``); the benchmark runs the same calls in
one plain process. The bulk arrays never leave the Python process that read them: uproot -> Arrow
batches -> kernels -> Parquet, which is what makes ingestion fast (see docs/performance.md: passing the
~7,000 array values per event through the JVM cost 10x).

A slice is either an entry range of a ROOT file, or one raw_events Parquet file when only the feature
tables are recomputed. The selection runs once per batch and feeds both feature tables. Each output is
written to a hidden temporary file and renamed into place when complete, so a killed or retried task
never leaves a partial part file; a slice that fails removes what it wrote.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lhc_assets.physics import features as K
from lhc_assets.physics.delphes_reader import RAW_SCHEMA, DelphesInputError, read_batches

# The tables one ingestion task writes, as named in a slice's outputs and in its summary.
RAW, HLF, LLF = "raw", "hlf", "llf"
TABLE_SCHEMAS = {RAW: RAW_SCHEMA, HLF: K.HLF_SCHEMA, LLF: K.LLF_SCHEMA}
SOURCE_ROOT, SOURCE_PARQUET = "root", "parquet"

# Dictionaries only for the repeated identity strings; statistics only where a reader can prune with
# them. Both are per-value work on the float arrays that nobody would use.
_IDENTITY_STRINGS = ["sample", "file", "partition_key"]
_STATISTICS = ["label", "entry", "partition_key", "n_particles"]
# The particle lists are float32 bytes, which snappy shrinks only about 1.5x while taking 40 % of the
# time spent writing them and two thirds of the time reading them back (docs/performance.md): by default
# they are stored uncompressed; any Parquet codec can be configured instead.
LLF_COMPRESSION = "none"
# raw_events is written by polars' Rust Parquet writer, which encodes its ~7,000 nested list values per event
# about 3x faster than the pinned pyarrow 14 (docs/performance.md). It writes whole tables, so each batch
# becomes its own part file: a task holds one batch at a time, as with pyarrow's incremental writer.
_POLARS_CODECS = {"none": "uncompressed"}


@dataclass
class Slice:
    """What one task reads and where it writes. ``outputs`` maps a table name to its output directory."""

    partition_key: str
    sample: str
    source: str  # SOURCE_ROOT: entries [start, stop) of a ROOT file; SOURCE_PARQUET: one raw_events file
    path: str
    outputs: dict[str, str]
    part: str  # part file name, unique among the slices of one write
    start: int = 0
    stop: int = 0
    batch_size: int = 2000
    compression: str = "snappy"  # Parquet codec of raw_events and hlf_features
    llf_compression: str = LLF_COMPRESSION  # of llf_features
    # ROOT slices: role (raw_events column) -> the file's collection, as resolved on the driver
    # (delphes_reader.inspect_file); None reads every role under its own name.
    collections: dict[str, str] | None = None


@dataclass
class SliceResult:
    partition_key: str
    path: str
    events_read: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # selected / dropped_<reason> counts
    rows: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0  # wall time of the slice, for the run's metadata

    def as_dict(self) -> dict:
        return asdict(self)


def _raw_columns(tables: set[str]) -> list[str]:
    """raw_events columns the feature kernels need (nested pruning: the HLF reads three track fields)."""
    fields = K.LLF_INPUT_FIELDS if LLF in tables else K.HLF_INPUT_FIELDS
    return [*K.IDENTITY_COLUMNS, *(f"{c}.{f}" for c, names in fields.items() for f in names)]


def _batches(s: Slice) -> Iterator[pa.RecordBatch]:
    if s.source == SOURCE_ROOT:
        yield from read_batches(s.path, s.sample, s.partition_key, s.start, s.stop, step=s.batch_size,
                                collections=s.collections)
        return
    try:
        parquet = pq.ParquetFile(s.path)
    except (OSError, pa.ArrowException) as exc:
        raise DelphesInputError(f"{s.path}: cannot read raw_events Parquet ({exc})") from None
    for batch in parquet.iter_batches(batch_size=s.batch_size, columns=_raw_columns(set(s.outputs))):
        yield as_raw_schema(batch)


class _PartWriter:
    """A Parquet part file written under a hidden temporary name and renamed into place on success."""

    def __init__(self, directory: str, part: str, schema: pa.Schema, compression: str):
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.final = os.path.join(directory, f"{part}.parquet")
        self.tmp = os.path.join(directory, f".{part}.parquet.tmp")
        self.schema = schema
        self.rows = 0
        self.writer = pq.ParquetWriter(
            self.tmp, schema, compression=compression,
            use_dictionary=[c for c in _IDENTITY_STRINGS if c in schema.names],
            write_statistics=[c for c in _STATISTICS if c in schema.names],
        )

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self.writer.write_batch(batch)
            self.rows += batch.num_rows

    def commit(self) -> None:
        self.writer.close()  # with no row group (no event selected) the file still carries the schema
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            Path(self.tmp).unlink(missing_ok=True)


class RawPartFiles:
    """raw_events part files ``<part>-<k>.parquet``, one per batch, written by polars, each under a hidden
    temporary name until the slice commits. Same interface as ``_PartWriter``."""

    def __init__(self, directory: str, part: str, compression: str):
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.directory, self.part = directory, part
        self.compression = _POLARS_CODECS.get(compression, compression)
        self.rows = 0
        self.files: list[tuple[str, str]] = []  # (temporary, final) names

    def write(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        # One thread: a Spark task is one core's work, and polars would otherwise start a thread per core.
        os.environ.setdefault("POLARS_MAX_THREADS", "1")
        import polars as pl

        name = f"{self.part}-{len(self.files):04d}.parquet"
        tmp = os.path.join(self.directory, f".{name}.tmp")
        self.files.append((tmp, os.path.join(self.directory, name)))
        # One row group; min/max statistics so that readers can prune by entry.
        pl.from_arrow(batch).write_parquet(tmp, compression=self.compression, row_group_size=batch.num_rows)
        self.rows += batch.num_rows

    def commit(self) -> None:
        if not self.files:  # no events: the part still carries the schema
            tmp = os.path.join(self.directory, f".{self.part}.parquet.tmp")
            self.files.append((tmp, os.path.join(self.directory, f"{self.part}.parquet")))
            pq.write_table(RAW_SCHEMA.empty_table(), tmp)
        for tmp, final in self.files:
            os.replace(tmp, final)

    def abort(self) -> None:
        for tmp, _ in self.files:
            Path(tmp).unlink(missing_ok=True)


def _raw_type(raw: pa.DataType, stored: pa.DataType) -> pa.DataType:
    """``RAW_SCHEMA``'s type ``raw`` keeping only the struct fields present in ``stored`` (nested pruning)."""
    if pa.types.is_struct(raw):
        return pa.struct([pa.field(f.name, _raw_type(raw.field(f.name).type, f.type),
                                   nullable=raw.field(f.name).nullable) for f in stored])
    return raw


def as_raw_schema(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A raw_events batch read back from Parquet with ``RAW_SCHEMA``'s types: polars writes large strings and
    lists, all nullable (the offsets are rewritten, the values shared)."""
    target = pa.schema([RAW_SCHEMA.field(f.name).with_type(_raw_type(RAW_SCHEMA.field(f.name).type, f.type))
                        for f in batch.schema])
    if target.equals(batch.schema):
        return batch
    return pa.RecordBatch.from_arrays([_as_type(c, f.type) for c, f in zip(batch.columns, target, strict=True)],
                                      schema=target)


def _as_type(array: pa.Array, t: pa.DataType) -> pa.Array:
    if pa.types.is_struct(t):  # pyarrow 14 will not cast a struct's nullable fields to non-nullable ones
        return pa.StructArray.from_arrays([_as_type(c, f.type) for c, f in zip(array.flatten(), t, strict=True)],
                                          fields=list(t))
    return array.cast(t)


def run_slice(spec: dict) -> dict:
    """Process one slice (a ``Slice`` as a dict, so it travels as JSON); returns a ``SliceResult`` dict.

    A problem with the input data is returned as ``error`` (naming the file), not raised, so the
    driver can report every bad file of a run at once; anything else is a bug and raises.
    """
    t0 = time.perf_counter()
    s = Slice(**spec)
    result = SliceResult(s.partition_key, s.path)
    unknown = set(s.outputs) - set(TABLE_SCHEMAS)
    if unknown or not s.outputs or (s.source == SOURCE_PARQUET and RAW in s.outputs):
        raise ValueError(f"invalid outputs {sorted(s.outputs)} for a {s.source} slice")
    want_features = HLF in s.outputs or LLF in s.outputs
    counts: Counter = Counter()
    with ExitStack() as stack:
        writers = {t: RawPartFiles(d, s.part, s.compression) if t == RAW else
                   _PartWriter(d, s.part, TABLE_SCHEMAS[t], s.llf_compression if t == LLF else s.compression)
                   for t, d in s.outputs.items()}
        for w in writers.values():
            stack.callback(w.abort)
        try:
            for batch in _batches(s):
                result.events_read += batch.num_rows
                if RAW in writers:
                    writers[RAW].write(batch)
                if not want_features:
                    continue
                selection = K.select(batch)
                counts.update(K.reason_counts(selection.reason))
                if HLF in writers:
                    writers[HLF].write(K.hlf_batch(batch, selection))
                if LLF in writers:
                    writers[LLF].write(K.llf_batch(batch, selection))
            for w in writers.values():
                w.commit()
            stack.pop_all()
        except DelphesInputError as exc:
            result.error = str(exc)
    if result.error is None:
        result.rows = {t: w.rows for t, w in writers.items()}
        result.reasons = dict(counts)
    result.seconds = time.perf_counter() - t0
    return result.as_dict()


def run_slices(unit: dict) -> dict:
    """One Spark task: ``{"slices": [Slice dicts]}`` -> ``{"results": [SliceResult dicts]}``.

    Every slice runs even after one failed, so a run reports all of its bad files at once.
    """
    return {"results": [run_slice(s) for s in unit["slices"]]}


def plan_entry_ranges(sizes: list[int], max_per_task: int, parallelism: int) -> list[list[tuple[int, int, int]]]:
    """Split the entries of several files into tasks of (nearly) equal size, each a list of
    (file index, start, stop) ranges taken in file order.

    The task count is the smallest multiple of ``parallelism`` whose tasks hold at most ``max_per_task``
    entries, so every core gets the same amount of work whatever the number and sizes of the files
    (three files on two cores as one task each would leave a core idle half the time).
    """
    total = sum(sizes)
    if total == 0:
        return []
    parallelism = max(1, parallelism)
    n_tasks = min(total, parallelism * math.ceil(total / (parallelism * max(1, max_per_task))))
    # Task k takes the global entries [k * total // n_tasks, (k + 1) * total // n_tasks): sizes differ by <= 1.
    bounds = [k * total // n_tasks for k in range(n_tasks + 1)]
    file_start = [0]
    for n in sizes:
        file_start.append(file_start[-1] + n)
    tasks, first = [], 0  # first: the first file not wholly before the current task (one pass over files)
    for lo, hi in itertools.pairwise(bounds):
        while file_start[first + 1] <= lo:
            first += 1
        task, i = [], first
        while i < len(sizes) and file_start[i] < hi:
            start, stop = max(lo, file_start[i]), min(hi, file_start[i + 1])
            if start < stop:
                task.append((i, start - file_start[i], stop - file_start[i]))
            i += 1
        tasks.append(task)
    return tasks


def summarize(results: list[dict]) -> dict[str, dict]:
    """Per partition key: events read, rows per table and selection counts, summed over its slices."""
    out: dict[str, dict] = {}
    for r in results:
        agg = out.setdefault(r["partition_key"], {"events_read": 0, "rows": Counter(), "reasons": Counter()})
        agg["events_read"] += r["events_read"]
        agg["rows"].update(r["rows"])
        agg["reasons"].update(r["reasons"])
    return out

