"""What an ingestion run reads: the input file of each partition (checked on the driver) or its stored
raw_events, and the Spark tasks that cover them."""

import math
from dataclasses import asdict
from pathlib import Path

import pyarrow.parquet as pq
from dagster import DagsterLogManager

from lhc_assets.defs.ingestion.config import IngestionConfig
from lhc_assets.defs.ingestion.tables import RAW_EVENTS, TABLE_OF
from lhc_assets.physics.collection_names import CollectionNames
from lhc_assets.physics.delphes_reader import DelphesInputError, inspect_file
from lhc_assets.physics.ingest import SOURCE_PARQUET, SOURCE_ROOT, Slice, plan_entry_ranges
from resources.io_manager import SparkParquetIOManager, staged_partition_dir
from resources.storage import StorageResource


def resolve_inputs(keys: list[str], storage: StorageResource, names: CollectionNames,
                    log: DagsterLogManager, file_id: str | None = None) -> tuple[list[dict], dict[str, str]]:
    """Input file of every key, checked on the driver (cheap: headers and branch lists only), with the
    collection of the file read for each role (``names``: the explicit choices). ``file_id`` is the file the
    new-file sensor named in the run's tags.

    Returns the readable files and, per partition key, the problem with the others.
    """
    available = storage.locate_input_files(keys, file_id)
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


def plan_tasks(files: list[dict], tables: list[str], staging: dict[str, Path], config: IngestionConfig,
           parallelism: int) -> list[dict]:
    """The Spark tasks of a run, each a list of slices: balanced entry ranges of the input files, or
    the stored raw_events files when only the feature tables are recomputed."""

    def slice_(f: dict, **kw) -> dict:
        key = f["partition_key"]
        return asdict(Slice(partition_key=key, sample=f["sample"], batch_size=config.batch_size,
                            compression=config.compression, llf_compression=config.llf_compression,
                            outputs={TABLE_OF[t]: str(staged_partition_dir(staging[t], key)) for t in tables}, **kw))

    if RAW_EVENTS in tables:
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


def stored_raw_events(keys: list[str], io: SparkParquetIOManager) -> tuple[list[dict], dict[str, str]]:
    """The current raw_events files of every key, for recomputing the feature tables alone. raw_events is an
    output of this same multi-asset, which Dagster cannot also pass in as an input: its reference comes from
    the IO manager directly."""
    raw = io.ref(RAW_EVENTS, keys)
    problems = {k: f"partition {k!r} of asset {RAW_EVENTS!r} has not been materialized: materialize raw_events for {k} "
                   "first" for k in raw.missing}
    # Partition keys are '<sample>/<stem>'.
    files = [{"partition_key": k, "sample": k.split("/", 1)[0], "raw_files": raw.files(k)} for k in raw.partition_keys]
    return files, problems
