"""Checks of the training data: the selection's balance and disjointness, the datasets' shapes and scaling."""

from pathlib import Path

from dagster import AssetCheckResult, AssetCheckSpec, AssetIn, MetadataValue, multi_asset_check

from lhc_assets.defs.datasets.assets import counts_table
from lhc_assets.ml.contract import GRU_WIDTH, N_CLASSES, N_HLF
from lhc_assets.ml.dataset_writer import ColumnScan, dataset_files, scan_files
from lhc_assets.physics.schema import LLF_ROWS, N_LLF
from resources.references import TableRef
from resources.spark import SparkResource


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
        metadata={"class_counts": counts_table(audit.counts),
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
def dataset_checks(spark: SparkResource, train_set: TableRef, test_set: TableRef, hlf_train_set: TableRef,
                   hlf_test_set: TableRef):
    from lhc_assets.spark.tasks import pack_by_weight, run_tasks

    datasets = {"train_set": train_set, "test_set": test_set, "hlf_train_set": hlf_train_set,
                "hlf_test_set": hlf_test_set}

    files = {check: [(str(f), columns) for f in dataset_files(datasets[name].path)]
             for check, (name, columns, _) in _DATASET_CHECKS.items()}
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
        scan = ColumnScan.empty(columns)
        for path, _ in files[check]:
            scan = scan.merge(scanned[f"{check}:{path}"])
        yield _scan_result(check, asset_name, scan, columns, unit_interval)


dataset_asset_checks = [selection_checks, dataset_checks]
