"""Stage 2b of the study: balanced, scaled, shuffled training data that TensorFlow streams (DESIGN.md section 5).

undersampled_dataset -> training_datasets: feature_scalers, train_set / test_set (inclusive) and
                        hlf_train_set / hlf_test_set (the same rows, HLF only), one pass over the particle
                        lists in Spark tasks
"""


import shutil
import uuid

import pyarrow.parquet as pq
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetOut,
    AssetSelection,
    Config,
    Failure,
    MetadataValue,
    Output,
    ResourceParam,
    asset,
    define_asset_job,
    multi_asset,
)
from pydantic import Field

from lhc_assets.ml.dataset_writer import (
    BYTES_PER_HLF_EVENT,
    BYTES_PER_INCLUSIVE_EVENT,
    HLF_SCHEMA,
    INCLUSIVE_SCHEMA,
    SPLITS,
    dataset_files,
    rows_per_row_group,
)
from lhc_assets.ml.preparation import FeatureScalers
from lhc_assets.physics.partition_keys import parse_key
from lhc_assets.physics.schema import HLF_COLUMNS, LABEL_NAMES, LLF_COLUMNS, SAMPLES
from lhc_assets.spark.metering import StageMeter
from resources.io_manager import SparkParquetIOManager, SparkTable, StagedParquet
from resources.references import TableRef
from resources.spark import SparkResource

_OWNERS = ["team:lhc-data-engineering"]
_CLASSES = {label: f"{LABEL_NAMES[label]} ({sample})" for sample, label in SAMPLES.items()}


class UndersamplingConfig(Config):
    seed: int = Field(default=42, description="Seed of the undersampling, the train/test split and the shuffle.")
    train_fraction: float = Field(default=0.8, gt=0.0, lt=1.0, description="Fraction of each class for training.")


class DatasetConfig(Config):
    row_group_bytes: int = Field(
        default=1 << 20, description="Target uncompressed size of a Parquet row group (Petastorm reads one at a time).")
    events_per_file: int = Field(default=2000, gt=0, description="Events per Parquet file of the inclusive datasets.")
    compression: str = Field(default="snappy", description="Parquet codec of the inclusive datasets.")


def counts_table(rows: dict[str, dict[int, int]]) -> MetadataValue:
    lines = ["| class | " + " | ".join(rows) + " |", "|---|" + "---:|" * len(rows)]
    lines += [f"| {name} | " + " | ".join(str(rows[c][label]) for c in rows) + " |" for label, name in _CLASSES.items()]
    return MetadataValue.md("\n".join(lines))


def _class_counts(hlf: TableRef, keys: list[str]) -> dict[int, int]:
    """Selected events per class, from the Parquet footers of hlf_features (a partition holds one sample):
    no Spark job."""
    counts = dict.fromkeys(SAMPLES.values(), 0)
    for k in keys:
        counts[SAMPLES[parse_key(k)[0]]] += sum(pq.read_metadata(f).num_rows for f in dataset_files(hlf.partition(k)))
    return counts


@asset(
    group_name="datasets",
    kinds={"spark", "parquet"},
    tags={"stage": "training-data"},
    owners=_OWNERS,
    ins={"hlf_features": AssetIn(dagster_type=TableRef), "llf_features": AssetIn(dagster_type=TableRef)},
    io_manager_key="warehouse_io_manager",
    description=(
        "Every selected event of the materialized feature partitions, balanced by undersampling each class to "
        "the smallest one and split 80/20 into train and test with a fixed seed; each row has its split and a "
        "seeded shuffle key (the train set is written in that order), the identity, the label and the 14 raw HLF."
    ),
)
def undersampled_dataset(
    context: AssetExecutionContext, config: UndersamplingConfig, spark: SparkResource, hlf_features: TableRef,
    llf_features: TableRef,
) -> SparkTable:
    from lhc_assets.spark.training_data import EmptyClassError, undersample

    meter = StageMeter(spark.get_session().sparkContext.defaultParallelism)
    usable = sorted(set(hlf_features.partition_keys) & set(llf_features.partition_keys))
    missing = sorted({*hlf_features.missing, *llf_features.missing} - set(usable))
    if missing:
        context.log.warning(f"{len(missing)} input partitions have no feature tables and are left out: {missing}")
    if not usable:
        raise Failure(description=(
            f"no partition of hlf_features and llf_features is materialized ({len(missing)} input partitions "
            "registered); run the ingestion job first"))
    counts = _class_counts(hlf_features, usable)
    try:
        selection = undersample(hlf_features.select(usable).read(spark.get_session()), counts, seed=config.seed,
                                train_fraction=config.train_fraction)
    except EmptyClassError as exc:
        considered = "; ".join(f"{s}: {', '.join(k for k in usable if k.startswith(s + '/')) or 'no files'}"
                               for s in SAMPLES)
        raise Failure(description=f"undersampled_dataset: {exc}. Files considered: {considered}") from None
    n_min = min(counts.values())
    n_train = round(config.train_fraction * n_min)
    after = {"before": counts, "train": dict.fromkeys(counts, n_train), "test": dict.fromkeys(counts, n_min - n_train)}
    return SparkTable(selection, after_write=lambda _: meter.metadata(sum(counts.values())), metadata={
        "class_counts": counts_table(after),
        "events_per_class": n_min,
        "train_events": n_train * len(counts),
        "test_events": (n_min - n_train) * len(counts),
        "partitions_used": len(usable),
        "partitions_missing": MetadataValue.json(missing),
        "seed": config.seed,
    })


def _scalers_tables(s: FeatureScalers) -> dict[str, MetadataValue]:
    hlf = ["| HLF | min | max |", "|---|---:|---:|"]
    hlf += [f"| {c} | {lo:.6g} | {hi:.6g} |" for c, lo, hi in zip(HLF_COLUMNS, s.hlf_min, s.hlf_max, strict=True)]
    llf = ["| LLF | mean | std |", "|---|---:|---:|"]
    llf += [f"| {c} | {m:.6g} | {sd:.6g} |" for c, m, sd in zip(LLF_COLUMNS, s.llf_mean, s.llf_std, strict=True)]
    return {"hlf_min_max": MetadataValue.md("\n".join(hlf)), "llf_mean_std": MetadataValue.md("\n".join(llf))}


def _feature_partitions(llf_features: TableRef, keys: list[str]) -> list[tuple[str, str]]:
    """(partition key, current llf_features directory) of every partition the selection draws from."""
    chosen = llf_features.select(keys)
    if chosen.missing:
        raise Failure(description=(
            f"llf_features partitions used by undersampled_dataset are gone: {list(chosen.missing)}; "
            "re-materialize undersampled_dataset"))
    return [(k, str(chosen.partition(k))) for k in keys]


def _data_errors(fn):
    """Run ``fn``; a data error raised inside a Spark task becomes a Failure with its message."""
    from lhc_assets.spark.errors import input_error_message

    try:
        return fn()
    except Exception as exc:
        message = input_error_message(exc)
        if message is None:
            raise
        raise Failure(description=message) from None


_DATASET_TAGS = {"stage": "training-data", "format": "petastorm"}
_DATASET_ROWS = ("in shuffle order, one Parquet file per shard of events_per_file events, row groups of at most "
                 "row_group_bytes (1 MB) for Petastorm")


_SELECTION, _LLF, _SCALERS = AssetKey("undersampled_dataset"), AssetKey("llf_features"), AssetKey("feature_scalers")


@multi_asset(
    group_name="datasets",
    ins={"undersampled_dataset": AssetIn(dagster_type=TableRef), "llf_features": AssetIn(dagster_type=TableRef)},
    # What each output is computed from: the scalers from the selection's particle lists; the datasets are
    # scaled with them, and only the inclusive ones read the particle lists.
    internal_asset_deps={
        "feature_scalers": {_SELECTION, _LLF},
        **{f"{split}_set": {_SELECTION, _LLF, _SCALERS} for split in SPLITS},
        **{f"hlf_{split}_set": {_SELECTION, _SCALERS} for split in SPLITS},
    },
    outs={
        "feature_scalers": AssetOut(
            io_manager_key="json_io_manager", kinds={"spark", "json"}, owners=_OWNERS,
            tags={"stage": "training-data"},
            description=(
                "Scalers fitted on the train split only: min-max for the 14 HLF, per-feature mean/std for the 19 "
                "LLF columns over real particle rows (padding excluded), fitted in the same pass over the particle "
                "lists that builds the datasets. A small JSON artifact under <data root>/models/.")),
        **{f"{split}_set": AssetOut(
            io_manager_key="warehouse_io_manager", kinds={"spark", "parquet"}, owners=_OWNERS, tags=_DATASET_TAGS,
            description=(f"Inclusive {split} data: sample, file, entry, label (one-hot float32[3]), hlf_input "
                         "(float32[14], min-max scaled with the train ranges), gru_input (float32[801*19]: zero "
                         "padding rows first, then the real rows sorted by dR to the lepton, descending, "
                         f"standardised with the train mean/std); {_DATASET_ROWS}."))
           for split in SPLITS},
        **{f"hlf_{split}_set": AssetOut(
            io_manager_key="warehouse_io_manager", kinds={"spark", "parquet"}, owners=_OWNERS, tags=_DATASET_TAGS,
            description=(f"HLF-only {split} data: the rows of {split}_set without gru_input (sample, file, entry, "
                         f"label, hlf_input), {_DATASET_ROWS}."))
           for split in SPLITS},
    },
)
def training_datasets(
    context: AssetExecutionContext,
    config: DatasetConfig,
    spark: SparkResource,
    warehouse_io_manager: ResourceParam[SparkParquetIOManager],
    undersampled_dataset: TableRef,
    llf_features: TableRef,
):
    """One pass over the particle lists of the selection writes every training dataset (Spark tasks, see
    ``lhc_assets.spark.training_data.write_training_datasets``)."""
    from lhc_assets.spark.training_data import summarize_selection, write_training_datasets

    session, io = spark.get_session(), warehouse_io_manager
    meter = StageMeter(session.sparkContext.defaultParallelism)
    summary = summarize_selection(undersampled_dataset.read(session))
    partitions = _feature_partitions(llf_features, summary.partition_keys)
    totals = {s: sum(c.values()) for s, c in summary.counts.items()}
    out_dirs = {s: io.new_staging_dir(f"{s}_set") for s in SPLITS}
    hlf_out_dirs = {s: io.new_staging_dir(f"hlf_{s}_set") for s in SPLITS}
    try:
        written, scalers = _data_errors(lambda: write_training_datasets(
            session, partitions, str(undersampled_dataset.path),
            summary.hlf_min, summary.hlf_max, totals, out_dirs, hlf_out_dirs,
            io.storage.warehouse / f".shuffle-{uuid.uuid4().hex}", events_per_file=config.events_per_file,
            row_group_bytes=config.row_group_bytes, compression=config.compression,
        ))
    except BaseException:
        for d in (*out_dirs.values(), *hlf_out_dirs.values()):
            shutil.rmtree(d, ignore_errors=True)
        raise
    cost = meter.metadata(sum(totals.values()))
    yield Output(scalers.to_dict(), output_name="feature_scalers", metadata={**cost,
        **_scalers_tables(scalers), "train_events": scalers.train_events, "train_particles": scalers.train_particles})
    for split in SPLITS:
        if written[split] != totals[split]:
            raise Failure(description=f"{split}_set: wrote {written[split]} events, the selection has {totals[split]}")
        for name, directory, schema, per_event in (
                (f"{split}_set", out_dirs[split], INCLUSIVE_SCHEMA, BYTES_PER_INCLUSIVE_EVENT),
                (f"hlf_{split}_set", hlf_out_dirs[split], HLF_SCHEMA, BYTES_PER_HLF_EVENT)):
            yield Output(StagedParquet(directory, schema), output_name=name, metadata={**cost,
                "split": split, "events": written[split], "events_per_file": config.events_per_file,
                "row_group_events": rows_per_row_group(config.row_group_bytes, per_event)})


dataset_assets = [undersampled_dataset, training_datasets]

training_data_job = define_asset_job(
    "training_data_job",
    selection=AssetSelection.assets(*dataset_assets),
    description="Stage 2b: undersampling, split, scalers and the Petastorm datasets from all materialized features.",
)
dataset_jobs = [training_data_job]
