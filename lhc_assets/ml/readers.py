"""Training-data readers: Parquet datasets of section 5 -> tf.data pipelines or numpy arrays.

This is the only module that imports Petastorm, so that it can be replaced by the pyarrow-native
``arrow_dataset`` (same contract) if Petastorm is ever dropped.

A dataset is a directory of Parquet files (names starting with ``_`` or ``.`` are ignored, as Spark
writes ``_SUCCESS`` and ``.crc`` files) with plain ``list<float>`` columns ``label`` [3],
``hlf_input`` [14] and, in inclusive datasets, ``gru_input`` [801*19, row-major] (``lhc_assets.ml.contract``).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from lhc_assets.ml.contract import GRU_INPUT, GRU_SHAPE, INPUT_COLUMNS, INPUTS, LABEL, WIDTHS

# Row groups decoded ahead of the consumer by arrow_dataset (pyarrow releases the GIL while decoding).
_READ_AHEAD = 4

PathLike = str | Path
ModelInputs = np.ndarray | dict[str, np.ndarray]


@dataclass(frozen=True)
class _RowGroup:
    file: Path
    index: int
    metadata: pq.FileMetaData
    num_rows: int


def columns_for(inputs: str) -> tuple[str, ...]:
    """The Parquet columns a reader of ``inputs`` loads: the model inputs, then the label."""
    if inputs not in INPUT_COLUMNS:
        raise ValueError(f"inputs must be one of {INPUTS}, got {inputs!r}")
    return (*INPUT_COLUMNS[inputs], LABEL)


def parquet_files(path: PathLike) -> list[Path]:
    """Sorted data files of a dataset directory (or the file itself); FileNotFoundError if there are none."""
    root = Path(path)
    if root.is_file():
        return [root]
    files = []
    if root.is_dir():
        files = sorted(
            p for p in root.iterdir()
            if p.is_file() and not p.name.startswith(("_", ".")) and not p.name.endswith(".crc")
        )
    if not files:
        raise FileNotFoundError(f"no Parquet files in dataset {str(root)!r}")
    return files


def dataset_rows(path: PathLike) -> int:
    """Number of rows of a dataset, from the Parquet footers only."""
    return sum(pq.read_metadata(f).num_rows for f in parquet_files(path))


def _row_groups(path: PathLike, columns: Sequence[str]) -> list[_RowGroup]:
    """All row groups in stored order (sorted files, then row group index), after checking every footer.

    The list lengths are checked from metadata alone: a leaf column chunk of a list column holds
    ``rows * width`` values when every list has the expected width (one level per value), so a dataset
    written with the wrong shape fails here, before any data is read or a reader thread is started.
    """
    groups = []
    for file in parquet_files(path):
        metadata = pq.read_metadata(file)
        schema = metadata.schema.to_arrow_schema()
        for name in columns:
            if name not in schema.names:
                raise ValueError(f"column {name!r} missing from {str(file)!r} in dataset {str(path)!r}")
            kind = schema.field(name).type
            if pa.types.is_fixed_size_list(kind):
                # Petastorm's batch reader drops fixed-size-list columns with only a warning.
                raise ValueError(f"column {name!r} in {str(file)!r} is {kind}; store it as plain list<float>")
            if not pa.types.is_list(kind) or kind.value_type != pa.float32():
                raise ValueError(f"column {name!r} in {str(file)!r} is {kind}, expected list<float>")
        leaves = [metadata.schema.column(j).path for j in range(metadata.num_columns)]
        for index in range(metadata.num_row_groups):
            row_group = metadata.row_group(index)
            for name in columns:
                leaf = next(j for j, p in enumerate(leaves) if p.startswith(f"{name}."))
                values = row_group.column(leaf).num_values
                if values != row_group.num_rows * WIDTHS[name]:
                    raise ValueError(
                        f"column {name!r} in {str(file)!r} row group {index}: {values} values for "
                        f"{row_group.num_rows} rows, expected lists of length {WIDTHS[name]}"
                    )
            groups.append(_RowGroup(file, index, metadata, row_group.num_rows))
    return groups


def _shard(groups: list[_RowGroup], cur_shard: int | None, shard_count: int | None) -> list[_RowGroup]:
    """Row group i of the stored order goes to shard i % shard_count (Petastorm's rule too)."""
    if cur_shard is None and shard_count is None:
        return groups
    if cur_shard is None or shard_count is None or not 0 <= cur_shard < shard_count:
        raise ValueError(f"need 0 <= cur_shard < shard_count, got cur_shard={cur_shard}, shard_count={shard_count}")
    if len(groups) < shard_count:
        raise ValueError(f"{len(groups)} row groups cannot feed {shard_count} shards without an empty shard")
    return groups[cur_shard::shard_count]


def _list_column(column: pa.ChunkedArray | pa.Array, name: str) -> np.ndarray:
    """A list<float> column as a (rows, width) float32 array: a view of the flat values, no per-row work."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    width = WIDTHS[name]
    if array.null_count:
        raise ValueError(f"column {name!r} has {array.null_count} null rows")
    offsets = array.offsets.to_numpy()
    if len(array) and (offsets[-1] - offsets[0] != len(array) * width or np.any(np.diff(offsets) != width)):
        raise ValueError(f"column {name!r} holds lists whose length is not {width}")
    values = array.flatten()  # honours the array's slice offset
    if values.null_count:
        raise ValueError(f"column {name!r} has null elements")
    return values.to_numpy(zero_copy_only=True).reshape(len(array), width)


def _read_row_group(group: _RowGroup, columns: Sequence[str]) -> tuple[np.ndarray, ...]:
    table = pq.ParquetFile(group.file, metadata=group.metadata).read_row_group(group.index, columns=list(columns))
    return tuple(_list_column(table.column(name), name) for name in columns)


def _model_inputs(inputs: str, columns: Sequence[str]) -> Callable[..., tuple]:
    """A tf.data map from the flat columns of a row-group batch to ``(model inputs, label)``.

    The reshape of gru_input to (801, 19) is a metadata-only tf.reshape here, done once per row group.
    """

    def to_model_inputs(*tensors: tf.Tensor) -> tuple:
        named = {}
        for name, tensor in zip(columns, tensors, strict=True):
            named[name] = tf.ensure_shape(tensor, (None, WIDTHS[name]))
        if GRU_INPUT in named:
            named[GRU_INPUT] = tf.reshape(named[GRU_INPUT], (-1, *GRU_SHAPE))
        label = named.pop(LABEL)
        x = named if inputs == "inclusive" else next(iter(named.values()))
        return x, label

    return to_model_inputs


def prefetched(dataset: tf.data.Dataset, batches: int = 2) -> tf.data.Dataset:
    """``dataset`` with ``batches`` batches read ahead and tf.data's autotuning off.

    The autotuner's thread sleeps in periods that double from 10 ms, and deleting an iterator waits for
    the current period to end: a Keras fit whose last step ended after 5.2 s returned at 10.3 s (measured
    with TensorFlow 2.21 on two cores). These pipelines have nothing to tune but the read-ahead depth.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(batches).with_options(options)


def _finish(dataset: tf.data.Dataset, batch_size: int, drop_remainder: bool) -> tf.data.Dataset:
    # The next row group is fetched in the background (the Python reader is off the training's path);
    # rebatch slices/concatenates whole row-group tensors, where unbatch().batch() would go row by row.
    return prefetched(dataset.prefetch(1).rebatch(batch_size, drop_remainder=drop_remainder))


def _check_common(inputs: str, batch_size: int, num_epochs: int | None) -> tuple[str, ...]:
    columns = columns_for(inputs)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be None (forever) or positive, got {num_epochs}")
    return columns


@contextlib.contextmanager
def petastorm_dataset(
    path: PathLike,
    inputs: str,
    batch_size: int = 128,
    num_epochs: int | None = 1,
    shuffle_row_groups: bool = True,
    seed: int | None = None,
    cur_shard: int | None = None,
    shard_count: int | None = None,
    workers_count: int | None = None,
    drop_remainder: bool = False,
) -> Iterator[tf.data.Dataset]:
    """``(inputs, label)`` batches streamed by Petastorm's batch reader; the reader is stopped on exit.

    ``num_epochs=None`` repeats forever (use Keras ``steps_per_epoch``). Shards split the row groups of
    the stored order (i % shard_count). Petastorm shuffles the row-group order once per reader, so all
    epochs of one reader see the same order; Petastorm treats seed 0 as "unseeded".

    ``workers_count`` reader threads; by default one for a finite number of epochs and two for an endless
    stream. With one thread every epoch holds each row exactly once and a seed fixes the order. Petastorm
    0.13.1 skips a thread whose queue is momentarily drained, so with several threads row groups arrive out
    of turn when the consumer outpaces them: fine for an endless stream, but it blurs the epoch boundaries,
    so a finite ``num_epochs`` with several threads is refused.
    """
    from petastorm import make_batch_reader
    from petastorm.tf_utils import make_petastorm_dataset

    # Petastorm 0.13.1 on the pinned pyarrow 14 warns about pyarrow's legacy dataset API on every row group
    # (the reason pyarrow is pinned, pyproject.toml); nothing a user can act on, so keep consoles readable.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm(\.|$)")

    columns = _check_common(inputs, batch_size, num_epochs)
    if workers_count is None:
        workers_count = 2 if num_epochs is None else 1
    if workers_count < 1:
        raise ValueError(f"workers_count must be positive, got {workers_count}")
    if workers_count > 1 and num_epochs is not None:
        raise ValueError(f"num_epochs={num_epochs} needs workers_count=1: several Petastorm threads deliver "
                         "row groups out of turn, which moves rows across epoch boundaries; read an endless "
                         "stream (num_epochs=None, Keras steps_per_epoch) to use several threads")
    # Validate here so that a bad dataset fails with a clear error before Petastorm starts threads.
    groups = _shard(_row_groups(path, columns), cur_shard, shard_count)
    root = Path(path).resolve()
    # Petastorm always streams endlessly; epochs are cut here after that many passes over the shard's row
    # groups (one element each). Its own end-of-epoch detection races with its ventilator thread: reads
    # have ended early, after 4 of 8 row groups with num_epochs=1 and after one of two epochs in CI.
    reader = make_batch_reader(
        root.as_uri(),
        # schema_fields are regular expressions matched against whole column names.
        schema_fields=[re.escape(name) for name in columns],
        reader_pool_type="thread",
        workers_count=workers_count,
        num_epochs=None,
        shuffle_row_groups=shuffle_row_groups,
        # With shuffling off a seed would still permute the shard's row groups: keep the stored order.
        seed=seed if shuffle_row_groups else None,
        cur_shard=cur_shard,
        shard_count=shard_count,
        # Convert Arrow -> numpy in the worker threads instead of the thread feeding TensorFlow.
        convert_early_to_numpy=True,
    )
    try:
        # One element per row group: a namedtuple of (rows, width) arrays in schema (column) order.
        rows = make_petastorm_dataset(reader).map(lambda t: tuple(getattr(t, name) for name in columns))
        if num_epochs is not None:
            rows = rows.take(num_epochs * len(groups))
        yield _finish(rows.map(_model_inputs(inputs, columns)), batch_size, drop_remainder)
    finally:
        reader.stop()
        reader.join()


def _row_group_order(
    groups: list[_RowGroup], num_epochs: int | None, shuffle: bool, seed: int | None
) -> Iterator[_RowGroup]:
    rng = np.random.default_rng(seed)
    epoch = 0
    while num_epochs is None or epoch < num_epochs:
        order = rng.permutation(len(groups)) if shuffle else range(len(groups))
        for i in order:
            yield groups[i]
        epoch += 1


@contextlib.contextmanager
def arrow_dataset(
    path: PathLike,
    inputs: str,
    batch_size: int = 128,
    num_epochs: int | None = 1,
    shuffle_row_groups: bool = True,
    seed: int | None = None,
    cur_shard: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool = False,
) -> Iterator[tf.data.Dataset]:
    """Same contract as ``petastorm_dataset``, with plain pyarrow row-group reads.

    The row-group order is reshuffled every epoch (seeded: reproducible). Row groups are decoded a few
    ahead in background threads; each becomes a zero-copy numpy view of the flat list values.
    """
    columns = _check_common(inputs, batch_size, num_epochs)
    groups = _shard(_row_groups(path, columns), cur_shard, shard_count)

    def generate() -> Iterator[tuple[np.ndarray, ...]]:
        pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="arrow-reader")
        pending: deque[Future] = deque()
        try:
            for group in _row_group_order(groups, num_epochs, shuffle_row_groups, seed):
                pending.append(pool.submit(_read_row_group, group, columns))
                if len(pending) >= _READ_AHEAD:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    signature = tuple(tf.TensorSpec((None, WIDTHS[name]), tf.float32) for name in columns)
    rows = tf.data.Dataset.from_generator(generate, output_signature=signature)
    yield _finish(rows.map(_model_inputs(inputs, columns)), batch_size, drop_remainder)


def load_arrays(path: PathLike, inputs: str, max_rows: int | None = None) -> tuple[ModelInputs, np.ndarray]:
    """A whole (small) dataset in memory, in stored order: ``(model inputs, labels)`` as float32 numpy.

    Same structure as the tf.data readers: an array for "hlf" (N, 14) and "gru" (N, 801, 19), a dict
    keyed by column name for "inclusive". ``max_rows``: only the first rows (whole row groups are read).
    """
    columns = columns_for(inputs)
    parts, rows = [], 0
    for group in _row_groups(path, columns):
        if max_rows is not None and rows >= max_rows:
            break
        parts.append(_read_row_group(group, columns))
        rows += group.num_rows
    arrays = {}
    for k, name in enumerate(columns):
        pieces = [part[k] for part in parts]
        arrays[name] = (np.concatenate(pieces) if pieces else np.empty((0, WIDTHS[name]), np.float32))[:max_rows]
    if GRU_INPUT in arrays:
        arrays[GRU_INPUT] = arrays[GRU_INPUT].reshape(-1, *GRU_SHAPE)
    labels = arrays.pop(LABEL)
    x = arrays if inputs == "inclusive" else next(iter(arrays.values()))
    return x, labels
