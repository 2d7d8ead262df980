"""Stage 2b of the study: balanced, scaled, shuffled training data that TensorFlow streams (DESIGN.md section 5).

undersampled_dataset -> training_datasets: feature_scalers, train_set / test_set (inclusive) and
                        hlf_train_set / hlf_test_set (the same rows, HLF only), one pass over the particle
                        lists in Spark tasks
"""


import shutil
import uuid
from pathlib import Path

import pyarrow.parquet as pq
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetOut,
    AssetSelection,
    Config,
    Failure,
    MetadataValue,
    Output,
    asset,
    define_asset_job,
    multi_asset,
    multi_asset_check,
)
from pydantic import Field

from lhc_assets.defs.partitions import delphes_files
from lhc_assets.ml.contract import GRU_WIDTH, N_CLASSES, N_HLF
from lhc_assets.ml.dataset_writer import (
    BYTES_PER_HLF_EVENT,
    BYTES_PER_INCLUSIVE_EVENT,
    HLF_SCHEMA,
    INCLUSIVE_SCHEMA,
    SPLITS,
    ColumnScan,
    dataset_files,
    rows_per_row_group,
    scan_files,
)
from lhc_assets.ml.preparation import FeatureScalers
from lhc_assets.physics.partition_keys import parse_key
from lhc_assets.physics.schema import HLF_COLUMNS, LABEL_NAMES, LLF_COLUMNS, LLF_ROWS, N_LLF, SAMPLES
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


def _class_counts(storage: StorageResource, keys: list[str]) -> dict[int, int]:
    """Selected events per class, from the Parquet footers of hlf_features (a partition holds one sample):
    no Spark job."""
    counts = dict.fromkeys(SAMPLES.values(), 0)
    for k in keys:
        rows = sum(pq.read_metadata(f).num_rows for f in dataset_files(materialized_path(storage, "hlf_features", k)))
        counts[SAMPLES[parse_key(k)[0]]] += rows
    return counts


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
    from lhc_assets.spark.training_data import EmptyClassError, undersample

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
    counts = _class_counts(storage, usable)
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
_DATASET_ROWS = ("in shuffle order, one Parquet file per shard of events_per_file events, row groups of at most "
                 "row_group_bytes (1 MB) for Petastorm")


_SELECTION, _LLF, _SCALERS = AssetKey("undersampled_dataset"), AssetKey("llf_features"), AssetKey("feature_scalers")


@multi_asset(
    group_name="datasets",
    deps=["llf_features"],
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
    storage: StorageResource,
    undersampled_dataset,
):
    """One pass over the particle lists of the selection writes every training dataset (Spark tasks, see
    ``lhc_assets.spark.training_data.write_training_datasets``)."""
    from lhc_assets.spark.training_data import summarize_selection, write_training_datasets

    summary = summarize_selection(undersampled_dataset)
    partitions = _feature_partitions(storage, summary.partition_keys)
    totals = {s: sum(c.values()) for s, c in summary.counts.items()}
    out_dirs = {s: staging_dir(storage, f"{s}_set") for s in SPLITS}
    hlf_out_dirs = {s: staging_dir(storage, f"hlf_{s}_set") for s in SPLITS}
    try:
        written, scalers = _data_errors(lambda: write_training_datasets(
            spark.get_session(), partitions, str(materialized_path(storage, "undersampled_dataset")),
            summary.hlf_min, summary.hlf_max, totals, out_dirs, hlf_out_dirs,
            storage.warehouse / f".shuffle-{uuid.uuid4().hex}", events_per_file=config.events_per_file,
            row_group_bytes=config.row_group_bytes, compression=config.compression,
        ))
    except BaseException:
        for d in (*out_dirs.values(), *hlf_out_dirs.values()):
            shutil.rmtree(d, ignore_errors=True)
        raise
    yield Output(scalers.to_dict(), output_name="feature_scalers", metadata={
        **_scalers_tables(scalers), "train_events": scalers.train_events, "train_particles": scalers.train_particles})
    for split in SPLITS:
        if written[split] != totals[split]:
            raise Failure(description=f"{split}_set: wrote {written[split]} events, the selection has {totals[split]}")
        for name, directory, schema, per_event in (
                (f"{split}_set", out_dirs[split], INCLUSIVE_SCHEMA, BYTES_PER_INCLUSIVE_EVENT),
                (f"hlf_{split}_set", hlf_out_dirs[split], HLF_SCHEMA, BYTES_PER_HLF_EVENT)):
            yield Output(StagedParquet(directory, schema), output_name=name, metadata={
                "split": split, "events": written[split], "events_per_file": config.events_per_file,
                "row_group_events": rows_per_row_group(config.row_group_bytes, per_event)})


# ---- checks


@multi_asset_check(
    name="selection_checks",
    description="Balance and disjointness of undersampled_dataset, from one Spark aggregation.",
    ins={"undersampled_dataset": AssetIn("undersampled_dataset")},
    specs=[
        AssetCheckSpec("classes_balanced", asset="undersampled_dataset",
                       description="Every class has the same number of events (within 1 %) in train and in test."),
        AssetCheckSpec("train_test_disjoint", asset="undersampled_dataset",
                       description="No event is both in train and in test, and none appears twice."),
    ],
)
def selection_checks(undersampled_dataset):
    from lhc_assets.spark.training_data import selection_audit

    audit = selection_audit(undersampled_dataset)
    spread = {s: (max(c.values()) - min(c.values())) / max(max(c.values()), 1) for s, c in audit.counts.items()}
    yield AssetCheckResult(
        check_name="classes_balanced", asset_key="undersampled_dataset",
        passed=all(v <= 0.01 for v in spread.values()),
        metadata={"class_counts": _counts_table(audit.counts),
                  **{f"{s}_imbalance": round(v, 4) for s, v in spread.items()}})
    yield AssetCheckResult(
        check_name="train_test_disjoint", asset_key="undersampled_dataset",
        passed=audit.in_both_splits == 0 and audit.duplicated == 0,
        metadata={"in_both_splits": audit.in_both_splits, "duplicated": audit.duplicated})


_HLF_SHAPES = {"label": N_CLASSES, "hlf_input": N_HLF}
_INCLUSIVE_SHAPES = {**_HLF_SHAPES, "gru_input": GRU_WIDTH}
# check name -> (dataset, list columns and their lengths, HLF inputs must lie in [0, 1])
_DATASET_CHECKS = {
    "train_set_finite_and_shaped": ("train_set", _INCLUSIVE_SHAPES, False),
    "test_set_finite_and_shaped": ("test_set", _INCLUSIVE_SHAPES, False),
    "hlf_train_set_scaled": ("hlf_train_set", _HLF_SHAPES, True),
    "hlf_test_set_finite_and_shaped": ("hlf_test_set", _HLF_SHAPES, False),
}


def _check_description(columns: dict[str, int], unit_interval: bool) -> str:
    shapes = " / ".join(str(n) if n != GRU_WIDTH else f"{LLF_ROWS}*{N_LLF}" for n in columns.values())
    text = f"Shapes {shapes} and no NaN or inf"
    return text + (", and every HLF input in [0, 1] (the scaler was fitted on this split)." if unit_interval else ".")


def _scan_result(check: str, asset_name: str, scan, columns: dict[str, int], unit_interval: bool) -> AssetCheckResult:
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
    return AssetCheckResult(check_name=check, asset_key=asset_name, passed=not problems, metadata=metadata)


@multi_asset_check(
    name="dataset_checks",
    description="Shapes, finiteness and scaling of the four training datasets: every file scanned in a Spark task.",
    specs=[AssetCheckSpec(check, asset=asset_name, description=_check_description(columns, unit_interval))
           for check, (asset_name, columns, unit_interval) in _DATASET_CHECKS.items()],
)
def dataset_checks(spark: SparkResource, storage: StorageResource):
    from lhc_assets.spark.tasks import pack_by_weight, run_tasks

    paths = {check: materialized_path(storage, asset_name) for check, (asset_name, *_) in _DATASET_CHECKS.items()}
    files = {check: [(str(f), _DATASET_CHECKS[check][1]) for f in dataset_files(path)] if path else []
             for check, path in paths.items()}
    # The files of the four datasets are read in parallel Spark tasks, packed by size (one task per core).
    units = {f"{check}:{path}": (path, columns) for check in _DATASET_CHECKS for path, columns in files[check]}
    session = spark.get_session()
    groups = pack_by_weight({u: Path(path).stat().st_size for u, (path, _) in units.items()},
                             session.sparkContext.defaultParallelism)
    scanned = {}
    for group, scans in zip(groups, run_tasks(session, scan_files, [[units[u] for u in g] for g in groups],
                                              description="training dataset checks"), strict=True):
        scanned.update(zip(group, scans, strict=True))
    for check, (asset_name, columns, unit_interval) in _DATASET_CHECKS.items():
        if paths[check] is None:
            yield AssetCheckResult(check_name=check, asset_key=asset_name, passed=False,
                                   severity=AssetCheckSeverity.ERROR, metadata={"error": "not materialized"})
            continue
        scan = ColumnScan.empty(columns)
        for path, _ in files[check]:
            scan = scan.merge(scanned[f"{check}:{path}"])
        yield _scan_result(check, asset_name, scan, columns, unit_interval)


dataset_assets = [undersampled_dataset, training_datasets]
dataset_asset_checks = [selection_checks, dataset_checks]

training_data_job = define_asset_job(
    "training_data_job",
    selection=AssetSelection.assets(*dataset_assets),
    description="Stage 2b: undersampling, split, scalers and the Petastorm datasets from all materialized features.",
)
dataset_jobs = [training_data_job]
