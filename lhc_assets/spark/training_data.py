"""Stage 2b on Spark: undersampling, train/test split, scalers and the training datasets.

Small columns (identity, label, the 14 HLF) stay in Spark DataFrames: undersampling, the split, the
shuffle key and the HLF range. The 801 x 19 particle lists never enter the JVM: Spark schedules the
pyarrow work units of ``lhc_assets.ml.dataset_writer`` as tasks (see there why), which write the
inclusive datasets and, from the same sorted rows, the HLF-only ones.
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
from lhc_assets.spark.tasks import pack_by_weight, run_tasks

SELECTION_COLUMNS = ("sample", "label", "file", "entry", "partition_key", "split", W.SHUFFLE_KEY, *HLF_COLUMNS)


class EmptyClassError(ValueError):
    """A class has no selected events, so nothing can be balanced."""


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


@dataclass(frozen=True)
class SelectionAudit:
    """What the checks of undersampled_dataset look at."""

    counts: dict[str, dict[int, int]]  # rows per split and class
    in_both_splits: int  # events with rows in train and in test
    duplicated: int  # events with more than one row


def selection_audit(selection: DataFrame) -> SelectionAudit:
    """Rows per split and class, and events in both splits or in several rows, in one aggregation."""
    per_event = selection.groupBy("sample", "file", "entry").agg(
        F.min("label").alias("label"), F.count(F.lit(1)).alias("n"),
        *(F.sum((F.col("split") == s).cast("long")).alias(s) for s in W.SPLITS))
    rows = per_event.groupBy("label").agg(
        *(F.sum(s).alias(s) for s in W.SPLITS),
        F.sum((F.least(*(F.col(s) for s in W.SPLITS)) > 0).cast("long")).alias("in_both"),
        F.sum((F.col("n") > 1).cast("long")).alias("duplicated")).collect()
    counts: dict[str, dict[int, int]] = {s: dict.fromkeys(SAMPLES.values(), 0) for s in W.SPLITS}
    for r in rows:
        for s in W.SPLITS:
            counts[s][int(r["label"])] = int(r[s])
    return SelectionAudit(counts, sum(int(r["in_both"]) for r in rows), sum(int(r["duplicated"]) for r in rows))


@dataclass(frozen=True)
class SelectionSummary:
    """What the inclusive datasets need to know of the selection, gathered in one Spark job."""

    counts: dict[str, dict[int, int]]  # rows per split and class
    hlf_min: list[float]  # of the train split
    hlf_max: list[float]
    partition_keys: list[str]


def summarize_selection(selection: DataFrame) -> SelectionSummary:
    """Rows per split and class, the train range of the 14 HLF and the partition keys of the selection in one
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


def write_training_datasets(
    session: SparkSession,
    partitions: list[tuple[str, str]],
    selection_dir: str,
    hlf_min: list[float],
    hlf_max: list[float],
    split_rows: dict[str, int],
    out_dirs: dict[str, Path],
    hlf_out_dirs: dict[str, Path],
    work_dir: Path,
    *,
    events_per_file: int,
    row_group_bytes: int,
    compression: str = "snappy",
) -> tuple[dict[str, int], FeatureScalers]:
    """Write the inclusive dataset of every split into ``out_dirs[split]`` and the HLF-only one (the same
    rows and files without gru_input) into ``hlf_out_dirs[split]``.

    One pass over the particle lists: the map tasks sort each event's particles and fit the LLF mean/std
    on the train rows as they go; the driver merges those into the scalers; the reduce tasks pad and
    standardise while sorting each shard. Returns rows written per split and the fitted scalers.
    """
    shards = {s: max(1, math.ceil(split_rows[s] / events_per_file)) for s in out_dirs}
    llf_dirs = dict(partitions)
    # Map tasks by the bytes of particle lists they read (the map's main cost); one task per core, as
    # small partitions would otherwise each pay a task's start-up.
    weights = {k: sum(f.stat().st_size for f in W.dataset_files(d)) for k, d in llf_dirs.items()}
    groups = pack_by_weight(weights, session.sparkContext.defaultParallelism)
    work_dir.mkdir(parents=True, exist_ok=False)
    try:
        maps = [W.ShuffleMapTask(task_id=i, partitions=tuple((k, llf_dirs[k]) for k in keys),
                                 selection_dir=selection_dir, hlf_min=tuple(hlf_min), hlf_max=tuple(hlf_max),
                                 shards=tuple(shards.items()), out_dir=str(work_dir))
                for i, keys in enumerate(groups)]
        per_key, train_events = {}, 0
        for result in run_tasks(session, W.run_map, maps, description="inclusive datasets: map"):
            per_key.update(result.moments)
            train_events += result.train_events
        moments = Moments()
        for key in sorted(per_key):
            moments = moments.merge(per_key[key])
        scalers = FeatureScalers(
            hlf_min=tuple(hlf_min), hlf_max=tuple(hlf_max), llf_mean=tuple(float(v) for v in moments.mean),
            llf_std=tuple(float(v) for v in moments.std()), train_events=train_events,
            train_particles=moments.count,
        )
        reduces = [W.ShuffleReduceTask(split=s, shard=i, pieces_dir=str(W.piece_dir(work_dir, s, i)),
                                       out_file=str(out_dirs[s] / f"part-{i:05d}.parquet"),
                                       hlf_out_file=str(hlf_out_dirs[s] / f"part-{i:05d}.parquet"),
                                       scalers=scalers.to_dict(), compression=compression,
                                       row_group_rows=W.rows_per_row_group(row_group_bytes),
                                       hlf_row_group_rows=W.rows_per_row_group(row_group_bytes, W.BYTES_PER_HLF_EVENT))
                   for s, n in shards.items() for i in range(n)]
        for d in (*out_dirs.values(), *hlf_out_dirs.values()):
            d.mkdir(parents=True, exist_ok=True)
        written = dict.fromkeys(out_dirs, 0)
        for task, rows in zip(reduces, run_tasks(session, W.run_reduce, reduces, description="inclusive datasets: "
                                                 "reduce"), strict=True):
            written[task.split] += rows
        for s in out_dirs:
            if written[s] == 0:
                W.write_empty(out_dirs[s] / "part-00000.parquet")
                W.write_empty(hlf_out_dirs[s] / "part-00000.parquet", W.HLF_SCHEMA)
        return written, scalers
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
