"""Stages 1-2 of the study as per-file partitioned assets: raw_events -> hlf_features, llf_features.

One multi-asset materializes the three tables in one pass over the input: each Spark task reads an
entry range of a ROOT file with uproot, writes its raw_events rows, runs the selection once and the HLF
and LLF kernels on the same Arrow batches, and writes their rows, all with pyarrow in the executor's
Python worker (``lhc_assets.physics.ingest``). Only small per-task summaries cross the JVM. The three
assets stay separate in the graph (hlf_features and llf_features depend on raw_events) and can be
materialized on their own: the feature tables alone are recomputed from the stored raw_events Parquet.
"""

import json
import math
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    AssetSpec,
    BackfillPolicy,
    Config,
    DagsterLogManager,
    Failure,
    MetadataValue,
    Output,
    ResourceParam,
    define_asset_job,
    multi_asset,
)
from pydantic import Field

from lhc_assets.defs.partitions import delphes_files
from lhc_assets.operations.failures import FAILED_PARTITIONS_METADATA
from lhc_assets.physics.collection_names import ENV_VAR, CollectionConfigError, CollectionNames
from lhc_assets.physics.delphes_reader import DelphesInputError, inspect_file
from lhc_assets.physics.features import SELECTED
from lhc_assets.physics.ingest import (
    HLF,
    LLF,
    LLF_COMPRESSION,
    RAW,
    SOURCE_PARQUET,
    SOURCE_ROOT,
    TABLE_SCHEMAS,
    Slice,
    plan_entry_ranges,
    run_slices,
    summarize,
)
from lhc_assets.physics.schema import DROP_NO_LEPTON, DROP_NOT_ISOLATED, HLF_COLUMNS, LLF_ROWS
from resources.io_manager import (
    PartitionNotMaterialized,
    SparkParquetIOManager,
    StagedParquet,
    new_version,
    staged_partition_dir,
    written_metadata,
)
from resources.spark import SparkResource
from resources.storage import StorageResource


def _role_field(key: str, default: str, alternatives: str = "") -> Any:
    also = f"; if absent, the first of {alternatives} present is read, with a warning" if alternatives else ""
    return Field(default=None, description=(
        f"Delphes collection read as the {key} role (unset: {ENV_VAR}'s choice, else {default!r}{also}). "
        "A name set here must be in the file, or its partition fails."))


class CollectionsConfig(Config):
    """The collection of the input files read for each role; None leaves the choice to LHC_DELPHES_COLLECTIONS,
    else to the defaults (lhc_assets/physics/schema.py COLLECTION_CANDIDATES)."""

    tracks: str | None = _role_field("tracks", "EFlowTrack")
    photons: str | None = _role_field("photons", "EFlowPhoton")
    neutral_hadrons: str | None = _role_field("neutral_hadrons", "EFlowNeutralHadron")
    electron: str | None = _role_field("electron", "Electron", "ElectronMedium, ElectronTight, ElectronLoose")
    muon: str | None = _role_field("muon", "MuonTight", "Muon, MuonMedium, MuonLoose")
    jet: str | None = _role_field("jet", "Jet", "JetPUPPI")
    missing_et: str | None = _role_field("missing_et", "MissingET", "PuppiMissingET")


class IngestionConfig(Config):
    entries_per_split: int = Field(default=5000, description="Entries per Spark task; a large file uses several cores.")
    batch_size: int = Field(default=2000, description="Events per Arrow record batch (and Parquet row group).")
    compression: str = Field(default="snappy", description="Parquet codec of raw_events and hlf_features.")
    llf_compression: str = Field(
        default=LLF_COMPRESSION,
        description="Parquet codec of llf_features. Its particle lists are float32 bytes that snappy shrinks only "
                    "about 1.5x at a large cost in write and read time, so they are stored uncompressed by default; "
                    "choose 'zstd' or 'snappy' to trade that time for about a third less disk.")
    collections: CollectionsConfig = Field(
        default_factory=CollectionsConfig,
        description="Collection names per role when the Delphes card did not write the study's (MuonTight, Jet, ...).")


def _collection_names(config: IngestionConfig) -> CollectionNames:
    """The run's explicit collection choices: LHC_DELPHES_COLLECTIONS (read now, so sensor runs and backfills see
    the current value) with the run config's on top."""
    try:
        return CollectionNames.from_env().override(
            CollectionNames.from_mapping(config.collections.model_dump(), "ingestion config 'collections'"))
    except CollectionConfigError as exc:
        raise Failure(description=str(exc)) from None


def _resolve_inputs(keys: list[str], storage: StorageResource, names: CollectionNames,
                    log: DagsterLogManager) -> tuple[list[dict], dict[str, str]]:
    """Input file of every key, checked on the driver (cheap: headers and branch lists only), with the
    collection of the file read for each role (``names``: the explicit choices).

    Returns the readable files and, per partition key, the problem with the others.
    """
    available = storage.input_files()
    problems, files = {}, []
    for key in keys:
        if key not in available:
            problems[key] = f"partition {key!r}: no input file under {storage.incoming} maps to this key"
            continue
        sample, path = available[key]
        try:
            info = inspect_file(str(path), names)
        except DelphesInputError as exc:
            problems[key] = str(exc)
            continue
        for warning in info.warnings:
            log.warning(f"{key}: {warning}")
        files.append({"path": str(path), "sample": sample, "partition_key": key, "num_entries": info.num_entries,
                      "collections": info.collections, "collection_warnings": list(info.warnings)})
    return files, problems


def _fail(problems: dict[str, str], published: list[str] | None = None) -> None:
    """Fail the step naming every bad partition; ``failed_partitions`` ({key: problem}) is what the
    failure ledger and ``lhc backfill`` read (lhc_assets/failures.py)."""
    metadata = {"bad_inputs": MetadataValue.md("\n".join(f"* {p}" for p in problems.values())),
                FAILED_PARTITIONS_METADATA: MetadataValue.json(problems)}
    description = "\n".join(problems.values())
    if published:
        metadata["published_partitions"] = MetadataValue.md("\n".join(f"* {k}" for k in published))
        description += (f"\n({len(published)} other partition(s) of this run were materialized; "
                        "re-run only the failed ones)")
    raise Failure(description=description, metadata=metadata)


_SPEC_COMMON = {"owners": ["team:lhc-data-engineering"]}
INGESTION_SPECS = [
    AssetSpec(
        RAW, group_name="ingestion", kinds={"spark", "parquet", "root"}, tags={"stage": "ingestion"},
        description=(
            "Delphes events of one input file, read with uproot in Spark tasks (entry-range splits, only the "
            "needed branches) and stored as Parquet: the collections and fields of DESIGN.md section 3 as "
            "structs of arrays (EFlowTrack.PT, ...), plus sample, label, file, entry and partition_key."
        ),
        **_SPEC_COMMON,
    ).with_io_manager_key("warehouse_io_manager"),
    AssetSpec(
        HLF, deps=[RAW], group_name="features", kinds={"spark", "parquet", "numba"}, tags={"stage": "features"},
        description=(
            "High-level features of the selected events (one isolated electron or muon with PT > 23 GeV): "
            f"{', '.join(HLF_COLUMNS)}; one float column each, with the event identity and label."
        ),
        **_SPEC_COMMON,
    ).with_io_manager_key("warehouse_io_manager"),
    AssetSpec(
        LLF, deps=[RAW], group_name="features", kinds={"spark", "parquet", "numba"}, tags={"stage": "features"},
        description=(
            f"Particle list of the selected events: the real rows of the {LLF_ROWS} x 19 list (lepton, up to 450 "
            "tracks, 150 photons, 200 neutral hadrons; columns E, px, py, pz, pT, eta, phi, vtxX/Y/Z, isolations, "
            "type flags, charge) stored row-major as float32 bytes in 'llf' with 'n_particles' rows "
            "(lhc_assets.spark.views.llf_as_array gives an array<float> view); padding rows are zero."
        ),
        **_SPEC_COMMON,
    ).with_io_manager_key("warehouse_io_manager"),
]


def _tasks(files: list[dict], tables: list[str], staging: dict[str, Path], config: IngestionConfig,
           parallelism: int) -> list[dict]:
    """The Spark tasks of a run, each a list of slices: balanced entry ranges of the input files, or
    the stored raw_events files when only the feature tables are recomputed."""

    def slice_(f: dict, **kw) -> dict:
        key = f["partition_key"]
        return asdict(Slice(partition_key=key, sample=f["sample"], batch_size=config.batch_size,
                            compression=config.compression, llf_compression=config.llf_compression,
                            outputs={t: str(staged_partition_dir(staging[t], key)) for t in tables}, **kw))

    if RAW in tables:
        plan = plan_entry_ranges([f["num_entries"] for f in files], config.entries_per_split, parallelism)
        return [{"slices": [slice_(files[i], source=SOURCE_ROOT, path=files[i]["path"], part=f"part-{start:010d}",
                                   start=start, stop=stop, collections=files[i]["collections"])
                            for i, start, stop in task]} for task in plan]
    # Stored raw_events part files (one per ingestion batch) packed in order into tasks of up to
    # entries_per_split events, so that small files do not each pay a task's overhead, but into at least
    # as many tasks as there are cores when there are enough files.
    stored = [(f, r, pq.read_metadata(r).num_rows) for f in files for r in f["raw_files"]]
    cap = max(1, min(config.entries_per_split, math.ceil(sum(n for *_, n in stored) / max(1, parallelism))))
    tasks, current, events = [], [], 0
    for f, r, rows in stored:
        if current and events + rows > cap:
            tasks.append({"slices": current})
            current, events = [], 0
        current.append(slice_(f, source=SOURCE_PARQUET, path=str(r), part=r.stem))
        events += rows
    if current:
        tasks.append({"slices": current})
    return tasks


def _stored_raw_events(keys: list[str], io: SparkParquetIOManager) -> tuple[list[dict], dict[str, str]]:
    """The current raw_events files of every key, for recomputing the feature tables alone."""
    files, problems = [], {}
    for key in keys:
        try:
            raw_files = io.partition_files(RAW, key)
        except PartitionNotMaterialized as exc:
            problems[key] = f"{exc}: materialize raw_events for {key} first"
            continue
        # Partition keys are '<sample>/<stem>'.
        files.append({"partition_key": key, "sample": key.split("/", 1)[0], "raw_files": raw_files})
    return files, problems


def _publish_good_partitions(context: AssetExecutionContext, io: SparkParquetIOManager, staging: dict[str, Path],
                             good: list[str], bad: list[str], files: list[dict], summary: dict) -> None:
    """In a run that failed for some partitions, publish the others and record their materializations,
    so one bad file does not cost a whole backfill."""
    version = new_version(context.run.run_id)
    for t, directory in staging.items():
        for key in bad:
            shutil.rmtree(staged_partition_dir(directory, key), ignore_errors=True)
        published = io.publish_staged(StagedParquet(directory, TABLE_SCHEMAS[t]), t, good, version)
        for key in good:
            per_key = {key: summary.get(key, {"events_read": 0, "rows": {}, "reasons": {}})}
            metadata = (_raw_metadata([f for f in files if f["partition_key"] == key], per_key) if t == RAW
                        else _selection_metadata(context, per_key))
            metadata.update(written_metadata({key: published[key]}, [key], io.asset_dir(t)))
            context.log_event(AssetMaterialization(asset_key=t, partition=key, metadata=metadata))


def _raw_metadata(files: list[dict], summary: dict) -> dict:
    metadata = {"events_read": sum(s["events_read"] for s in summary.values()), "files": len(files)}
    if len(files) == 1:
        metadata["input_file"] = files[0]["path"]
    return metadata | _collections_metadata(files)


def _collections_metadata(files: list[dict]) -> dict:
    """``collections_read`` (role -> the collection read; a table per partition when the files of the run
    differ) and ``collection_warnings`` when a role fell back to another well-known collection."""
    if not files:
        return {}
    read = {f["partition_key"]: f["collections"] for f in files}
    if len({json.dumps(m, sort_keys=True) for m in read.values()}) == 1:
        metadata = {"collections_read": MetadataValue.json(files[0]["collections"])}
    else:
        roles = list(files[0]["collections"])
        lines = [f"| partition | {' | '.join(roles)} |", "|---|" + "---|" * len(roles)]
        lines += [f"| {key} | {' | '.join(m[r] for r in roles)} |" for key, m in read.items()]
        metadata = {"collections_read": MetadataValue.md("\n".join(lines))}
    warnings = [f"* {f['partition_key']}: {w}" if len(files) > 1 else f"* {w}"
                for f in files for w in f["collection_warnings"]]
    if warnings:
        metadata["collection_warnings"] = MetadataValue.md("\n".join(warnings))
    return metadata


def _selection_metadata(context: AssetExecutionContext, summary: dict) -> dict:
    def selected(s: dict) -> int:
        return s["reasons"].get(SELECTED, 0)

    for key, s in summary.items():
        if s["events_read"] and not selected(s):
            context.log.warning(f"{key}: none of its {s['events_read']} events passed the selection (0 rows written)")
    read = sum(s["events_read"] for s in summary.values())
    n_selected = sum(selected(s) for s in summary.values())
    metadata = {
        "events_read": read,
        "events_selected": n_selected,
        **{f"dropped_{r}": sum(s["reasons"].get(r, 0) for s in summary.values())
           for r in (DROP_NO_LEPTON, DROP_NOT_ISOLATED)},
        "selection_efficiency": round(n_selected / read, 4) if read else 0.0,
    }
    if len(summary) > 1:
        lines = ["| partition | read | selected | efficiency |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {s['events_read']} | {selected(s)} | "
                  f"{(selected(s) / s['events_read'] if s['events_read'] else 0):.3f} |" for k, s in summary.items()]
        metadata["per_partition"] = MetadataValue.md("\n".join(lines))
    return metadata


@multi_asset(
    name="delphes_ingestion",
    specs=INGESTION_SPECS,
    partitions_def=delphes_files,
    # Backfilling many files runs as one Spark job over all of them (the fast path); a run for a
    # single partition (sensor, UI) fails or succeeds on its own.
    backfill_policy=BackfillPolicy.single_run(),
    can_subset=True,
    description="Reads Delphes ROOT files and computes the event selection, HLF and LLF tables in one pass.",
)
def delphes_ingestion(
    context: AssetExecutionContext, config: IngestionConfig, spark: SparkResource, storage: StorageResource,
    warehouse_io_manager: ResourceParam[SparkParquetIOManager],
) -> Iterator[Output]:
    from lhc_assets.spark.tasks import run_tasks

    io = warehouse_io_manager
    tables = [t for t in (RAW, HLF, LLF) if AssetKey(t) in context.selected_asset_keys]
    keys = sorted(context.partition_keys)
    # Bad partitions are set aside (driver-side checks here, data errors from the tasks below); the run
    # fails naming each of them, after the good partitions are published.
    files, problems = (_resolve_inputs(keys, storage, _collection_names(config), context.log) if RAW in tables
                       else _stored_raw_events(keys, io))
    session = spark.get_session()
    staging = {t: io.new_staging_dir(t) for t in tables}
    try:
        tasks = _tasks(files, tables, staging, config, session.sparkContext.defaultParallelism)
        results = [r for out in run_tasks(session, run_slices, tasks,
                                          description=f"{', '.join(tables)} for {len(keys)} partition(s)")
                   for r in out["results"]]
        for r in results:
            if r["error"]:
                problems.setdefault(r["partition_key"], r["error"])
        summary = summarize(results)
        if problems:
            bad = sorted(problems)
            good = [k for k in keys if k not in problems]
            if good:
                _publish_good_partitions(context, io, staging, good, bad, files, summary)
            _fail({k: problems[k] for k in bad}, published=good)
    except BaseException:
        for d in staging.values():
            shutil.rmtree(d, ignore_errors=True)
        raise
    for t in tables:
        metadata = _raw_metadata(files, summary) if t == RAW else _selection_metadata(context, summary)
        yield Output(StagedParquet(staging[t], TABLE_SCHEMAS[t], metadata=metadata), output_name=t)


ingestion_assets = [delphes_ingestion]

raw_events_job = define_asset_job(
    "raw_events_job", selection=AssetSelection.assets(RAW),
    description="Stage 1: read input ROOT files into raw_events.",
)
features_job = define_asset_job(
    "features_job", selection=AssetSelection.assets(HLF, LLF),
    description="Stage 2: HLF and LLF tables recomputed from the stored raw_events.",
)
ingestion_job = define_asset_job(
    "ingestion_job", selection=AssetSelection.assets(RAW, HLF, LLF),
    description="The whole ingestion graph for the chosen files: raw_events, hlf_features, llf_features.",
)
ingestion_jobs = [raw_events_job, features_job, ingestion_job]
