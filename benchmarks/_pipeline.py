"""Shared setup of the benchmarks: generated Delphes files -> ingestion -> training data, in one process."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def prepare_training_data(root: Path, events_per_file: int, files: int, qcd_files: int | None = None,
                          timed_runs: int = 1) -> dict:
    """Generate, ingest (untimed) and materialize ``training_data_job`` ``timed_runs`` times on ``local[2]``.

    Returns the feature and train event counts, the median seconds of the runs after the first (JVM start and
    compilation happen in the first; just the first when there is one), every run's seconds, the last run's
    seconds per step and the dataset paths.
    """
    import pyarrow.parquet as pq
    from dagster import DagsterInstance

    from lhc_assets.cli.generate import main as generate
    from lhc_assets.definitions import build_definitions
    from resources.io_manager import materialized_path
    from resources.storage import StorageResource

    for samples, count in (("ttbar,wjets", files), ("qcd", qcd_files or files)):
        generate(["--out", str(root / "incoming"), "--events-per-file", str(events_per_file), "--files-per-sample",
                  str(count), "--samples", samples, "--seed", "3", "--jobs", "2", "--quiet"])
    os.environ.update(LHC_DATA_ROOT=str(root), LHC_SPARK_MASTER="local[2]", LHC_SPARK_DRIVER_MEMORY="2g")
    defs = build_definitions()
    storage = StorageResource(root=str(root))
    keys = sorted(storage.input_files())
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("delphes_files", keys)
        result = defs.resolve_job_def("ingestion_job").execute_in_process(
            instance=instance, run_config=QUIET,
            tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]})
        assert result.success
        feature_events = sum(pq.ParquetFile(f).metadata.num_rows for k in keys
                             for f in materialized_path(storage, "hlf_features", k).glob("*.parquet"))
        seconds = []
        for _ in range(timed_runs):
            t0 = time.perf_counter()
            result = defs.resolve_job_def("training_data_job").execute_in_process(instance=instance, run_config=QUIET)
            seconds.append(time.perf_counter() - t0)
            assert result.success
        steps = {s.step_key: round(s.end_time - s.start_time, 2)
                 for s in instance.get_run_step_stats(result.run_id) if s.end_time and s.start_time}
    paths = {name: str(materialized_path(storage, name))
             for name in ("train_set", "test_set", "hlf_train_set", "hlf_test_set")}
    train_events = sum(pq.ParquetFile(f).metadata.num_rows for f in Path(paths["train_set"]).glob("*.parquet"))
    return {"feature_events": feature_events, "train_events": train_events,
            "seconds": statistics.median(seconds[1:] or seconds), "run_seconds": seconds,
            "first_run_seconds": seconds[0], "step_seconds": steps, **paths,
            "feature_scalers_file": str(storage.models / "feature_scalers.json")}
