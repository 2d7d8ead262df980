"""Stage 2b on Spark: undersampling, train/test split, scalers and the training datasets.

Small columns (identity, label, the 14 HLF) stay in Spark DataFrames: undersampling, the split, the
shuffle key, the HLF range and the HLF-only datasets. The 801 x 19 particle lists never enter the JVM:
Spark schedules the pyarrow work units of ``lhc_assets.ml.dataset_writer`` as tasks (see there why).
Nothing is collected to the driver except counts, ranges and moments.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from lhc_assets.ml import dataset_writer as W
from lhc_assets.ml.preparation import FeatureScalers, Moments
from lhc_assets.physics.schema import HLF_COLUMNS, LABEL_NAMES, SAMPLES
from lhc_assets.spark.tasks import run_tasks

SELECTION_COLUMNS = ("sample", "label", "file", "entry", "partition_key", "split", W.SHUFFLE_KEY, *HLF_COLUMNS)


class EmptyClassError(ValueError):
    """A class has no selected events, so nothing can be balanced."""


def class_counts(df: DataFrame) -> dict[int, int]:
    """Rows per class label (every class present, zero when absent)."""
    counts = {int(r["label"]): int(r["count"]) for r in df.groupBy("label").count().collect()}
    return {label: counts.get(label, 0) for label in SAMPLES.values()}


def undersample(hlf: DataFrame, counts: dict[int, int], *, seed: int, train_fraction: float) -> DataFrame:
    """Balance the classes to the smallest one, split train/test, and give every row a shuffle key.

    Within each class the rows are ranked by a seeded hash of the event identity: the first
    ``n_min`` are kept, the first ``round(train_fraction * n_min)`` of those go to train. Hashing the
    identity (not ``rand()``) makes the choice independent of how Spark partitions the input, so the
    same inputs and seed give the same rows on any cluster.
    """
    empty = [f"{LABEL_NAMES[label]} ({sample})" for sample, label in SAMPLES.items() if counts.get(label, 0) == 0]
    if empty:
        raise EmptyClassError(f"no selected events for class {', '.join(empty)}")
    n_min = min(counts.values())
    n_train = round(train_fraction * n_min)
    identity = [F.col("sample"), F.col("file"), F.col("entry")]
    rank = F.row_number().over(
        Window.partitionBy("label").orderBy(F.xxhash64(*identity, F.lit(seed)), *identity))
    return (
        hlf.withColumn("_rank", rank)
        .where(F.col("_rank") <= n_min)
        .withColumn("split", F.when(F.col("_rank") <= n_train, F.lit("train")).otherwise(F.lit("test")))
        .withColumn(W.SHUFFLE_KEY, F.xxhash64(*identity, F.lit(seed), F.lit("shuffle")))
        .select(*SELECTION_COLUMNS)
        # Sorted by partition so the dataset tasks read only the row groups of their partitions.
        .repartitionByRange("partition_key", "entry")
        .sortWithinPartitions("partition_key", "entry")
    )


def split_counts(selection: DataFrame) -> dict[str, dict[int, int]]:
    """Rows per split and class."""
    out: dict[str, dict[int, int]] = {s: dict.fromkeys(SAMPLES.values(), 0) for s in W.SPLITS}
    for r in selection.groupBy("split", "label").count().collect():
        out[r["split"]][int(r["label"])] = int(r["count"])
    return out


@dataclass(frozen=True)
class SelectionSummary:
    """What the inclusive datasets need to know of the selection, gathered in one Spark job."""

    counts: dict[str, dict[int, int]]  # rows per split and class
    hlf_min: list[float]  # of the train split
    hlf_max: list[float]
    partition_keys: list[str]


def summarize_selection(selection: DataFrame) -> SelectionSummary:
    """``split_counts``, the train range of the 14 HLF and the partition keys of the selection in one
    aggregation (one Spark job instead of three; the result has at most one row per split and partition)."""
    n = len(HLF_COLUMNS)
    rows = selection.groupBy("split", "label", "partition_key").agg(
        F.count(F.lit(1)).alias("n"), *(F.min(c).alias(f"min_{i}") for i, c in enumerate(HLF_COLUMNS)),
        *(F.max(c).alias(f"max_{i}") for i, c in enumerate(HLF_COLUMNS))).collect()
    counts: dict[str, dict[int, int]] = {s: dict.fromkeys(SAMPLES.values(), 0) for s in W.SPLITS}
    for r in rows:
        counts[r["split"]][int(r["label"])] += int(r["n"])
    train = [r for r in rows if r["split"] == "train"]
    if not train:
        raise EmptyClassError("the train split is empty: nothing to fit the scalers on")
    return SelectionSummary(
        counts=counts,
        hlf_min=[float(min(r[f"min_{i}"] for r in train)) for i in range(n)],
        hlf_max=[float(max(r[f"max_{i}"] for r in train)) for i in range(n)],
        partition_keys=sorted({r["partition_key"] for r in rows}),
    )


def hlf_dataset(selection: DataFrame, split: str, scalers: FeatureScalers) -> DataFrame:
    """The HLF-only training data of one split, in shuffle order: identity, one-hot label, scaled hlf_input."""
    span = scalers.hlf_span()
    # Same arithmetic as preparation.scale_hlf (float64, then float32), so both datasets agree bit for bit.
    scaled = [((F.col(c).cast("double") - F.lit(float(lo))) / F.lit(float(sp))).cast("float")
              for c, lo, sp in zip(HLF_COLUMNS, scalers.hlf_min, span, strict=True)]
    one_hot = [(F.col("label") == i).cast("float") for i in range(len(SAMPLES))]
    return (
        selection.where(F.col("split") == split)
        .orderBy(W.SHUFFLE_KEY, "sample", "file", "entry")
        .select("sample", "file", "entry", F.array(*one_hot).alias("label"), F.array(*scaled).alias("hlf_input"))
    )


def inclusive_datasets(
    session: SparkSession,
    partitions: list[tuple[str, str]],
    selection_dir: str,
    hlf_min: list[float],
    hlf_max: list[float],
    split_rows: dict[str, int],
    out_dirs: dict[str, Path],
    work_dir: Path,
    *,
    events_per_file: int,
    row_group_rows: int,
    compression: str = "snappy",
) -> tuple[dict[str, int], FeatureScalers]:
    """Write the inclusive dataset of every split into ``out_dirs[split]``.

    One pass over the particle lists: the map tasks build the GRU inputs unscaled and fit the LLF
    mean/std on the train rows as they go; the driver merges those into the scalers; the reduce tasks
    standardise while sorting each shard. Returns rows written per split and the fitted scalers.
    """
    shards = {s: max(1, math.ceil(split_rows[s] / events_per_file)) for s in out_dirs}
    work_dir.mkdir(parents=True, exist_ok=False)
    try:
        maps = [W.ShuffleMapTask(task_id=i, partitions=(p,), selection_dir=selection_dir, hlf_min=tuple(hlf_min),
                                 hlf_max=tuple(hlf_max), shards=tuple(shards.items()), out_dir=str(work_dir))
                for i, p in enumerate(partitions)]
        moments, train_events = Moments(), 0
        for result in run_tasks(session, W.run_map, maps, description="inclusive datasets: map"):
            moments = moments.merge(result.moments)
            train_events += result.train_events
        scalers = FeatureScalers(
            hlf_min=tuple(hlf_min), hlf_max=tuple(hlf_max), llf_mean=tuple(float(v) for v in moments.mean),
            llf_std=tuple(float(v) for v in moments.std()), train_events=train_events,
            train_particles=moments.count,
        )
        reduces = [W.ShuffleReduceTask(split=s, shard=i, pieces_dir=str(W.piece_dir(work_dir, s, i)),
                                       out_file=str(out_dirs[s] / f"part-{i:05d}.parquet"), scalers=scalers.to_dict(),
                                       row_group_rows=row_group_rows, compression=compression)
                   for s, n in shards.items() for i in range(n)]
        for d in out_dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        written = dict.fromkeys(out_dirs, 0)
        for task, rows in zip(reduces, run_tasks(session, W.run_reduce, reduces, description="inclusive datasets: "
                                                 "reduce"), strict=True):
            written[task.split] += rows
        for s, d in out_dirs.items():
            if written[s] == 0:
                W.write_empty(d / "part-00000.parquet")
        return written, scalers
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
