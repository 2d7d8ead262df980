"""Stages 1-2 of the study as per-file partitioned assets: raw_events -> hlf_features, llf_features."""


import json

from dagster import (
    AssetExecutionContext,
    AssetSelection,
    BackfillPolicy,
    Config,
    DynamicPartitionsDefinition,
    Failure,
    MetadataValue,
    asset,
    define_asset_job,
)
from pydantic import Field

from lhc_assets.physics.delphes_reader import DelphesInputError, inspect_file
from lhc_assets.physics.schema import DROP_NO_LEPTON, DROP_NOT_ISOLATED, HLF_COLUMNS, LLF_ROWS
from resources.io_manager import SparkTable
from resources.spark import SparkResource
from resources.storage import StorageResource

# One partition per input file; keys are '<sample>/<safe file stem>' (see physics/partition_keys.py).
delphes_files = DynamicPartitionsDefinition(name="delphes_files")

_COMMON = {
    "partitions_def": delphes_files,
    # Backfilling many files runs as one Spark job over all of them (the fast path); a run for a
    # single partition (sensor, UI) fails or succeeds on its own.
    "backfill_policy": BackfillPolicy.single_run(),
    "io_manager_key": "warehouse_io_manager",
    "owners": ["team:lhc-data-engineering"],
}


class RawEventsConfig(Config):
    entries_per_split: int = Field(default=5000, description="Entries per Spark task; a large file uses several cores.")
    batch_size: int = Field(default=2000, description="Events per Arrow record batch read by uproot.")


def _resolve_inputs(keys: list[str], storage: StorageResource) -> list[dict]:
    """Input file of every key, checked on the driver (cheap: headers and branch lists only)."""
    available = storage.input_files()
    problems, files = [], []
    for key in keys:
        if key not in available:
            problems.append(f"partition {key!r}: no input file under {storage.incoming} maps to this key")
            continue
        sample, path = available[key]
        try:
            info = inspect_file(str(path))
        except DelphesInputError as exc:
            problems.append(str(exc))
            continue
        files.append({"path": str(path), "sample": sample, "partition_key": key, "num_entries": info.num_entries})
    if problems:
        raise Failure(description="\n".join(problems), metadata={"bad_inputs": MetadataValue.md("\n".join(
            f"* {p}" for p in problems))})
    return files


@asset(
    group_name="ingestion",
    kinds={"spark", "parquet", "root"},
    tags={"stage": "ingestion"},
    description=(
        "Delphes events of one input file, read by the Spark 'delphes' data source (uproot, Arrow batches, "
        "entry-range splits) and stored as Parquet: the collections and fields of DESIGN.md section 3 as "
        "structs of arrays (EFlowTrack.PT, ...), plus sample, label, file, entry and partition_key."
    ),
    **_COMMON,
)
def raw_events(
    context: AssetExecutionContext, config: RawEventsConfig, spark: SparkResource, storage: StorageResource
) -> SparkTable:
    from lhc_assets.spark.datasource import FORMAT_NAME, DelphesDataSource

    files = _resolve_inputs(list(context.partition_keys), storage)
    session = spark.get_session()
    session.dataSource.register(DelphesDataSource)
    df = (
        session.read.format(FORMAT_NAME)
        .option("files", json.dumps(files))
        .option("entries_per_split", config.entries_per_split)
        .option("min_splits_per_file", session.sparkContext.defaultParallelism)
        .option("batch_size", config.batch_size)
        .load()
    )
    events = sum(f["num_entries"] for f in files)
    metadata = {"events_read": events, "files": len(files)}
    if len(files) == 1:
        metadata["input_file"] = files[0]["path"]
    return SparkTable(df, metadata=metadata)


def _selection_metadata(context: AssetExecutionContext, acc, keys: list[str]) -> dict:
    from lhc_assets.spark.features import SELECTED, selection_summary

    summary = selection_summary(acc.value, keys)
    read = sum(s["events_read"] for s in summary.values())
    selected = sum(s[SELECTED] for s in summary.values())
    for key, s in summary.items():
        if s["events_read"] and not s[SELECTED]:
            context.log.warning(f"{key}: none of its {s['events_read']} events passed the selection (0 rows written)")
    metadata = {
        "events_read": read,
        "events_selected": selected,
        f"dropped_{DROP_NO_LEPTON}": sum(s[DROP_NO_LEPTON] for s in summary.values()),
        f"dropped_{DROP_NOT_ISOLATED}": sum(s[DROP_NOT_ISOLATED] for s in summary.values()),
        "selection_efficiency": round(selected / read, 4) if read else 0.0,
    }
    if len(keys) > 1:
        lines = ["| partition | read | selected | efficiency |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {s['events_read']} | {s[SELECTED]} | "
                  f"{(s[SELECTED] / s['events_read'] if s['events_read'] else 0):.3f} |" for k, s in summary.items()]
        metadata["per_partition"] = MetadataValue.md("\n".join(lines))
    return metadata


@asset(
    group_name="features",
    kinds={"spark", "parquet", "numba"},
    tags={"stage": "features"},
    description=(
        "High-level features of the selected events (one isolated electron or muon with PT > 23 GeV): "
        f"{', '.join(HLF_COLUMNS)}; one float column each, with the event identity and label."
    ),
    **_COMMON,
)
def hlf_features(context: AssetExecutionContext, raw_events) -> SparkTable:
    from lhc_assets.spark.features import hlf_features as compute

    df, acc = compute(raw_events)
    keys = list(context.partition_keys)
    return SparkTable(df, after_write=lambda: _selection_metadata(context, acc, keys))


@asset(
    group_name="features",
    kinds={"spark", "parquet", "numba"},
    tags={"stage": "features"},
    description=(
        f"Particle list of the selected events: the real rows of the {LLF_ROWS} x 19 list (lepton, up to 450 "
        "tracks, 150 photons, 200 neutral hadrons; columns E, px, py, pz, pT, eta, phi, vtxX/Y/Z, isolations, "
        "type flags, charge) stored row-major in 'llf' with 'n_particles' rows; padding rows are zero."
    ),
    **_COMMON,
)
def llf_features(context: AssetExecutionContext, raw_events) -> SparkTable:
    from lhc_assets.spark.features import llf_features as compute

    df, acc = compute(raw_events)
    keys = list(context.partition_keys)
    return SparkTable(df, after_write=lambda: _selection_metadata(context, acc, keys))


ingestion_assets = [raw_events, hlf_features, llf_features]

raw_events_job = define_asset_job(
    "raw_events_job", selection=AssetSelection.assets(raw_events), partitions_def=delphes_files,
    description="Stage 1: read input ROOT files into raw_events.",
)
features_job = define_asset_job(
    "features_job", selection=AssetSelection.assets(hlf_features, llf_features), partitions_def=delphes_files,
    description="Stage 2: HLF and LLF tables from raw_events.",
)
ingestion_job = define_asset_job(
    "ingestion_job", selection=AssetSelection.assets(*ingestion_assets), partitions_def=delphes_files,
    description="The whole ingestion graph for the chosen files: raw_events, hlf_features, llf_features.",
)
ingestion_jobs = [raw_events_job, features_job, ingestion_job]
