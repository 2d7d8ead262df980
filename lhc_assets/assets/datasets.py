"""Stage 2b of the study: balanced, scaled, shuffled training data that TensorFlow streams (DESIGN.md section 5).

undersampled_dataset -> feature_scalers, train_set, test_set (one pass over the particle lists, Spark tasks)
                     -> hlf_train_set / hlf_test_set (HLF only, written by Spark, scaled with feature_scalers)
"""


import shutil
import uuid

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetOut,
    AssetSelection,
    Config,
    Failure,
    MetadataValue,
    Output,
    asset,
    asset_check,
    define_asset_job,
    multi_asset,
)
from pydantic import Field

from lhc_assets.assets.ingestion import delphes_files
from lhc_assets.ml.dataset_writer import GRU_WIDTH, INCLUSIVE_SCHEMA, SPLITS, rows_per_row_group, scan_dataset
from lhc_assets.ml.preparation import N_CLASSES, N_HLF, FeatureScalers
from lhc_assets.physics.schema import HLF_COLUMNS, LABEL_NAMES, LLF_COLUMNS, SAMPLES
from resources.io_manager import SparkTable, StagedParquet, materialized_path, staging_dir
from resources.spark import SparkResource
from resources.storage import StorageResource

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


def _counts_table(rows: dict[str, dict[int, int]]) -> MetadataValue:
    lines = ["| class | " + " | ".join(rows) + " |", "|---|" + "---:|" * len(rows)]
    lines += [f"| {name} | " + " | ".join(str(rows[c][label]) for c in rows) + " |" for label, name in _CLASSES.items()]
    return MetadataValue.md("\n".join(lines))


@asset(
    group_name="datasets",
    kinds={"spark", "parquet"},
    tags={"stage": "training-data"},
    owners=_OWNERS,
    deps=["hlf_features", "llf_features"],
    io_manager_key="warehouse_io_manager",
    description=(
        "Every selected event of the materialized feature partitions, balanced by undersampling each class to "
        "the smallest one and split 80/20 into train and test with a fixed seed; each row has its split and a "
        "seeded shuffle key (the train set is written in that order), the identity, the label and the 14 raw HLF."
    ),
)
def undersampled_dataset(
    context: AssetExecutionContext, config: UndersamplingConfig, spark: SparkResource, storage: StorageResource
) -> SparkTable:
    from lhc_assets.spark.training_data import EmptyClassError, class_counts, undersample

    keys = context.instance.get_dynamic_partitions(delphes_files.name)
    usable = [k for k in keys
              if materialized_path(storage, "hlf_features", k) and materialized_path(storage, "llf_features", k)]
    missing = sorted(set(keys) - set(usable))
    if missing:
        context.log.warning(f"{len(missing)} input partitions have no feature tables and are left out: {missing}")
    if not usable:
        raise Failure(description=(
            f"no partition of hlf_features and llf_features is materialized ({len(keys)} input partitions "
            "registered); run the ingestion job first"))
    session = spark.get_session()
    hlf = session.read.parquet(*(str(materialized_path(storage, "hlf_features", k)) for k in usable))
    counts = class_counts(hlf)
    try:
        selection = undersample(hlf, counts, seed=config.seed, train_fraction=config.train_fraction)
    except EmptyClassError as exc:
        considered = "; ".join(f"{s}: {', '.join(k for k in usable if k.startswith(s + '/')) or 'no files'}"
                               for s in SAMPLES)
        raise Failure(description=f"undersampled_dataset: {exc}. Files considered: {considered}") from None
    n_min = min(counts.values())
    n_train = round(config.train_fraction * n_min)
    after = {"before": counts, "train": dict.fromkeys(counts, n_train), "test": dict.fromkeys(counts, n_min - n_train)}
    return SparkTable(selection, metadata={
        "class_counts": _counts_table(after),
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


def _feature_partitions(storage: StorageResource, keys: list[str]) -> list[tuple[str, str]]:
    """(partition key, current llf_features directory) of every partition the selection draws from."""
    out, gone = [], []
    for k in keys:
        path = materialized_path(storage, "llf_features", k)
        (out if path else gone).append((k, str(path)))
    if gone:
        raise Failure(description=(
            f"llf_features partitions used by undersampled_dataset are gone: {[k for k, _ in gone]}; "
            "re-materialize undersampled_dataset"))
    return out


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


@multi_asset(
    group_name="datasets",
    outs={
        f"hlf_{split}_set": AssetOut(
            io_manager_key="warehouse_io_manager", kinds={"spark", "parquet"}, owners=_OWNERS, tags=_DATASET_TAGS,
            description=(f"HLF-only {split} data for Petastorm: sample, file, entry, label (one-hot float32[3]), "
                         "hlf_input (float32[14], min-max scaled with the train ranges), in shuffle order, "
                         "written by Spark with row groups of about 1 MB."))
        for split in SPLITS
    },
)
def hlf_datasets(context: AssetExecutionContext, config: DatasetConfig, undersampled_dataset, feature_scalers: dict):
    from lhc_assets.spark.training_data import hlf_dataset

    scalers = FeatureScalers.from_dict(feature_scalers)
    options = {"parquet.block.size": str(config.row_group_bytes)}
    for split in SPLITS:
        df = hlf_dataset(undersampled_dataset, split, scalers)
        yield Output(SparkTable(df, options=options), output_name=f"hlf_{split}_set",
                     metadata={"split": split, "row_group_bytes": config.row_group_bytes})


@multi_asset(
    group_name="datasets",
    deps=["llf_features"],
    outs={
        "feature_scalers": AssetOut(
            io_manager_key="json_io_manager", kinds={"spark", "json"}, owners=_OWNERS,
            tags={"stage": "training-data"},
            description=(
                "Scalers fitted on the train split only: min-max for the 14 HLF, per-feature mean/std for the 19 "
                "LLF columns over real particle rows (padding excluded), fitted in the same pass over the particle "
                "lists that builds train_set and test_set. A small JSON artifact under <data root>/models/.")),
        **{f"{split}_set": AssetOut(
            io_manager_key="warehouse_io_manager", kinds={"spark", "parquet"}, owners=_OWNERS, tags=_DATASET_TAGS,
            description=(f"Inclusive {split} data for Petastorm: sample, file, entry, label (one-hot float32[3]), "
                         "hlf_input (float32[14], scaled), gru_input (float32[801*19]: zero padding rows first, then "
                         "the real rows sorted by dR to the lepton, descending, standardised with the train "
                         "mean/std), in shuffle order, row groups of about 1 MB."))
           for split in SPLITS},
    },
)
def inclusive_datasets(
    context: AssetExecutionContext,
    config: DatasetConfig,
    spark: SparkResource,
    storage: StorageResource,
    undersampled_dataset,
):
    from lhc_assets.spark.training_data import inclusive_datasets as write
    from lhc_assets.spark.training_data import summarize_selection

    summary = summarize_selection(undersampled_dataset)
    hlf_min, hlf_max = summary.hlf_min, summary.hlf_max
    partitions = _feature_partitions(storage, summary.partition_keys)
    totals = {s: sum(c.values()) for s, c in summary.counts.items()}
    out_dirs = {s: staging_dir(storage, f"{s}_set") for s in SPLITS}
    row_group_rows = rows_per_row_group(config.row_group_bytes)
    try:
        written, scalers = _data_errors(lambda: write(
            spark.get_session(), partitions, str(materialized_path(storage, "undersampled_dataset")), hlf_min,
            hlf_max, totals, out_dirs, storage.warehouse / f".shuffle-{uuid.uuid4().hex}",
            events_per_file=config.events_per_file, row_group_rows=row_group_rows, compression=config.compression,
        ))
    except BaseException:
        for d in out_dirs.values():
            shutil.rmtree(d, ignore_errors=True)
        raise
    yield Output(scalers.to_dict(), output_name="feature_scalers", metadata={
        **_scalers_tables(scalers), "train_events": scalers.train_events, "train_particles": scalers.train_particles})
    for split in SPLITS:
        if written[split] != totals[split]:
            raise Failure(description=f"{split}_set: wrote {written[split]} events, the selection has {totals[split]}")
        yield Output(StagedParquet(out_dirs[split], INCLUSIVE_SCHEMA), output_name=f"{split}_set", metadata={
            "split": split, "events": written[split], "row_group_events": row_group_rows,
            "events_per_file": config.events_per_file})


# ---- checks


@asset_check(asset=undersampled_dataset, description="Every class has the same number of events (within 1 %) in "
             "train and in test.")
def classes_balanced(undersampled_dataset) -> AssetCheckResult:
    from lhc_assets.spark.training_data import split_counts

    counts = split_counts(undersampled_dataset)
    spread = {s: (max(c.values()) - min(c.values())) / max(max(c.values()), 1) for s, c in counts.items()}
    return AssetCheckResult(
        passed=all(v <= 0.01 for v in spread.values()),
        metadata={"class_counts": _counts_table(counts), **{f"{s}_imbalance": round(v, 4) for s, v in spread.items()}},
    )


@asset_check(asset=undersampled_dataset, description="No event is both in train and in test, and none appears twice.")
def train_test_disjoint(undersampled_dataset) -> AssetCheckResult:
    from pyspark.sql import functions as F

    identity = ["sample", "file", "entry"]
    per_event = undersampled_dataset.groupBy(*identity).agg(F.count("*").alias("n"),
                                                            F.countDistinct("split").alias("splits"))
    row = per_event.agg(F.sum(F.when(F.col("splits") > 1, 1).otherwise(0)).alias("both"),
                        F.sum(F.when(F.col("n") > 1, 1).otherwise(0)).alias("dups")).first()
    both, dups = int(row["both"] or 0), int(row["dups"] or 0)
    return AssetCheckResult(passed=both == 0 and dups == 0, metadata={"in_both_splits": both, "duplicated": dups})


def _dataset_check(storage: StorageResource, asset_name: str, columns: dict[str, int], unit_interval: bool = False):
    path = materialized_path(storage, asset_name)
    if path is None:
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR, metadata={"error": "not materialized"})
    scan = scan_dataset(path, columns)
    problems = [f"{c}: {n} rows with a length other than {columns[c]}" for c, n in scan.bad_lengths.items() if n]
    problems += [f"{c}: {n} NaN/inf values" for c, n in scan.non_finite.items() if n]
    if unit_interval and scan.rows:
        lo, hi = scan.minimum["hlf_input"], scan.maximum["hlf_input"]
        if lo < 0.0 or hi > 1.0:
            problems.append(f"hlf_input outside [0, 1]: min {lo}, max {hi}")
    if scan.rows == 0:
        problems.append("no rows")
    metadata = {"rows": scan.rows, "problems": MetadataValue.md("\n".join(f"* {p}" for p in problems) or "none")}
    metadata.update({f"{c}_min": float(scan.minimum[c]) for c in columns if scan.rows})
    metadata.update({f"{c}_max": float(scan.maximum[c]) for c in columns if scan.rows})
    return AssetCheckResult(passed=not problems, metadata=metadata)


_HLF_SHAPES = {"label": N_CLASSES, "hlf_input": N_HLF}
_INCLUSIVE_SHAPES = {**_HLF_SHAPES, "gru_input": GRU_WIDTH}


@asset_check(asset="train_set", description="Shapes 3 / 14 / 801*19 and no NaN or inf in label, hlf_input, gru_input.")
def train_set_finite_and_shaped(storage: StorageResource) -> AssetCheckResult:
    return _dataset_check(storage, "train_set", _INCLUSIVE_SHAPES)


@asset_check(asset="test_set", description="Shapes 3 / 14 / 801*19 and no NaN or inf in label, hlf_input, gru_input.")
def test_set_finite_and_shaped(storage: StorageResource) -> AssetCheckResult:
    return _dataset_check(storage, "test_set", _INCLUSIVE_SHAPES)


@asset_check(asset="hlf_train_set", description="Shapes 3 / 14, no NaN or inf, and every HLF input in [0, 1] "
             "(the scaler was fitted on this split).")
def hlf_train_set_scaled(storage: StorageResource) -> AssetCheckResult:
    return _dataset_check(storage, "hlf_train_set", _HLF_SHAPES, unit_interval=True)


@asset_check(asset="hlf_test_set", description="Shapes 3 / 14 and no NaN or inf.")
def hlf_test_set_finite_and_shaped(storage: StorageResource) -> AssetCheckResult:
    return _dataset_check(storage, "hlf_test_set", _HLF_SHAPES)


dataset_assets = [undersampled_dataset, inclusive_datasets, hlf_datasets]
dataset_checks = [classes_balanced, train_test_disjoint, train_set_finite_and_shaped, test_set_finite_and_shaped,
                  hlf_train_set_scaled, hlf_test_set_finite_and_shaped]

training_data_job = define_asset_job(
    "training_data_job",
    selection=AssetSelection.assets(*dataset_assets),
    description="Stage 2b: undersampling, split, scalers and the Petastorm datasets from all materialized features.",
)
dataset_jobs = [training_data_job]
