"""Stages 1-2 of the study as per-file partitioned assets: raw_events -> hlf_features, llf_features.

One multi-asset materializes the three tables in one pass over the input: each Spark task reads an
entry range of a ROOT file with uproot, writes its raw_events rows, runs the selection once and the HLF
and LLF kernels on the same Arrow batches, and writes their rows, all with pyarrow in the executor's
Python worker (``lhc_assets.physics.ingest``). Only small per-task summaries cross the JVM. The three
assets stay separate in the graph (hlf_features and llf_features depend on raw_events) and can be
materialized on their own: the feature tables alone are recomputed from the stored raw_events Parquet.
"""

import shutil
from collections.abc import Iterator
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetMaterialization,
    AssetSelection,
    AssetSpec,
    BackfillPolicy,
    Output,
    ResourceParam,
    define_asset_job,
    multi_asset,
)

from lhc_assets.defs.ingestion.config import IngestionConfig, collection_names
from lhc_assets.defs.ingestion.inputs import plan_tasks, resolve_inputs, stored_raw_events
from lhc_assets.defs.ingestion.metadata import fail_partitions, raw_metadata, selection_metadata, table_metadata
from lhc_assets.defs.ingestion.tables import (
    HLF_FEATURES,
    INGESTION_ASSETS,
    LLF_FEATURES,
    RAW_EVENTS,
    SCHEMAS,
    selected_tables,
)
from lhc_assets.defs.partitions import INPUT_FILE_TAG, delphes_files
from lhc_assets.physics.ingest import run_slices, summarize
from lhc_assets.physics.schema import HLF_COLUMNS, LLF_ROWS
from lhc_assets.spark.metering import StageMeter
from resources.io_manager import SparkParquetIOManager, StagedParquet, staged_partition_dir, written_metadata
from resources.publisher import new_version
from resources.spark import SparkResource
from resources.storage import StorageResource

_SPEC_COMMON = {"owners": ["team:lhc-data-engineering"]}
INGESTION_SPECS = [
    AssetSpec(
        RAW_EVENTS, group_name="ingestion", kinds={"spark", "parquet", "root"}, tags={"stage": "ingestion"},
        description=(
            "Delphes events of one input file, read with uproot in Spark tasks (entry-range splits, only the "
            "needed branches) and stored as Parquet: the collections and fields of DESIGN.md section 3 as "
            "structs of arrays (EFlowTrack.PT, ...), plus sample, label, file, entry and partition_key."
        ),
        **_SPEC_COMMON,
    ).with_io_manager_key("warehouse_io_manager"),
    AssetSpec(
        HLF_FEATURES, deps=[RAW_EVENTS], group_name="features", kinds={"spark", "parquet", "numba"},
        tags={"stage": "features"},
        description=(
            "High-level features of the selected events (one isolated electron or muon with PT > 23 GeV): "
            f"{', '.join(HLF_COLUMNS)}; one float column each, with the event identity and label."
        ),
        **_SPEC_COMMON,
    ).with_io_manager_key("warehouse_io_manager"),
    AssetSpec(
        LLF_FEATURES, deps=[RAW_EVENTS], group_name="features", kinds={"spark", "parquet", "numba"},
        tags={"stage": "features"},
        description=(
            f"Particle list of the selected events: the real rows of the {LLF_ROWS} x 19 list (lepton, up to 450 "
            "tracks, 150 photons, 200 neutral hadrons; columns E, px, py, pz, pT, eta, phi, vtxX/Y/Z, isolations, "
            "type flags, charge) stored row-major as float32 bytes in 'llf' with 'n_particles' rows "
            "(lhc_assets.spark.views.llf_as_array gives an array<float> view); padding rows are zero."
        ),
        **_SPEC_COMMON,
    ).with_io_manager_key("warehouse_io_manager"),
]

# Partitions per run of `lhc backfill` (daemon and --in-process). Creating a run writes one planned event per asset and
# partition, about 100 per second on SQLite: a daemon backfill run over 50,000 files takes 25 minutes to create and
# run monitoring fails it after its 300 s start timeout (docs/performance.md, "Many partitions"). 1,000 files (3,000
# events, about 30 s) per run keep each creation far below that.
MAX_PARTITIONS_PER_RUN = 1000


def _run_tasks(session, files: list[dict], tables: list[str], staging: dict[str, Path], config: IngestionConfig,
               problems: dict[str, str]) -> dict:
    """Run the Spark tasks writing the run's tables into ``staging``; data errors a task met are added to
    ``problems`` (one per partition); returns the per-partition summary."""
    from lhc_assets.spark.tasks import run_tasks

    tasks = plan_tasks(files, tables, staging, config, session.sparkContext.defaultParallelism)
    results = [r for out in run_tasks(session, run_slices, tasks,
                                      description=f"{', '.join(tables)} for {len(files)} partition(s)")
               for r in out["results"]]
    for r in results:
        if r["error"]:
            problems.setdefault(r["partition_key"], r["error"])
    return summarize(results)


def _publish_good_partitions(context: AssetExecutionContext, io: SparkParquetIOManager, staging: dict[str, Path],
                             good: list[str], bad: list[str], files: list[dict], summary: dict) -> None:
    """In a run that failed for some partitions, publish the others and record their materializations,
    so one bad file does not cost a whole backfill."""
    version = new_version(context.run.run_id)
    for t, directory in staging.items():
        for key in bad:
            shutil.rmtree(staged_partition_dir(directory, key), ignore_errors=True)
        published = io.publish_staged(StagedParquet(directory, SCHEMAS[t]), t, good, version)
        for key in good:
            per_key = {key: summary.get(key, {"events_read": 0, "rows": {}, "reasons": {}})}
            metadata = (raw_metadata([f for f in files if f["partition_key"] == key], per_key) if t == RAW_EVENTS
                        else selection_metadata(context, per_key))
            metadata.update(written_metadata({key: published[key]}, [key], io.asset_dir(t)))
            context.log_event(AssetMaterialization(asset_key=t, partition=key, metadata=metadata))


@multi_asset(
    name="delphes_ingestion",
    specs=INGESTION_SPECS,
    partitions_def=delphes_files,
    # Backfilling many files runs as one Spark job over all of them (the fast path); a run for a single partition
    # (sensor, UI) fails or succeeds on its own. Not multi_run(MAX_PARTITIONS_PER_RUN): `dagster asset materialize
    # --partition-range` accepts only single_run assets.
    backfill_policy=BackfillPolicy.single_run(),
    can_subset=True,
    description="Reads Delphes ROOT files and computes the event selection, HLF and LLF tables in one pass.",
)
def delphes_ingestion(
    context: AssetExecutionContext, config: IngestionConfig, spark: SparkResource, storage: StorageResource,
    warehouse_io_manager: ResourceParam[SparkParquetIOManager],
) -> Iterator[Output]:
    session = spark.get_session()
    meter = StageMeter(session.sparkContext.defaultParallelism)
    io = warehouse_io_manager
    tables = selected_tables(context.selected_asset_keys)
    keys = sorted(context.partition_keys)
    # Bad partitions are set aside (driver-side checks here, data errors from the tasks below); the run
    # fails naming each of them, after the good partitions are published.
    files, problems = (resolve_inputs(keys, storage, collection_names(config), context.log,
                                      context.run.tags.get(INPUT_FILE_TAG)) if RAW_EVENTS in tables
                       else stored_raw_events(keys, io))
    staging = {t: io.new_staging_dir(t) for t in tables}
    try:
        summary = _run_tasks(session, files, tables, staging, config, problems)
        if problems:
            good = [k for k in keys if k not in problems]
            if good:
                _publish_good_partitions(context, io, staging, good, sorted(problems), files, summary)
            fail_partitions({k: problems[k] for k in sorted(problems)}, published=good)
    except BaseException:
        for d in staging.values():
            shutil.rmtree(d, ignore_errors=True)
        raise
    cost = meter.metadata(sum(s["events_read"] for s in summary.values()))
    for t in tables:
        metadata = {**table_metadata(context, t, files, summary), **cost}
        yield Output(StagedParquet(staging[t], SCHEMAS[t], metadata=metadata), output_name=t)


ingestion_assets = [delphes_ingestion]

raw_events_job = define_asset_job(
    "raw_events_job", selection=AssetSelection.assets(RAW_EVENTS),
    description="Stage 1: read input ROOT files into raw_events.",
)
features_job = define_asset_job(
    "features_job", selection=AssetSelection.assets(HLF_FEATURES, LLF_FEATURES),
    description="Stage 2: HLF and LLF tables recomputed from the stored raw_events.",
)
ingestion_job = define_asset_job(
    "ingestion_job", selection=AssetSelection.assets(*INGESTION_ASSETS),
    description="The whole ingestion graph for the chosen files: raw_events, hlf_features, llf_features.",
)
ingestion_jobs = [raw_events_job, features_job, ingestion_job]
