"""Benchmark of ingestion + features: ROOT -> raw_events, hlf_features, llf_features Parquet.

Prints one JSON object. Every Spark figure runs the real code path (the Dagster ingestion job: Spark
tasks reading ROOT with uproot, the numba kernels, pyarrow Parquet, the warehouse IO manager publishing
the versions) in a fresh process with its own JVM, timed after a warm-up run (JVM start, numba
compilation and Python worker start excluded). The plain reference runs the same work units
(``lhc_assets.physics.ingest.run_slice``, one per file) one after the other in one Python process.

    python benchmarks/ingest_features.py [--quick] [--llf-compression snappy]

Keys: events_per_s_per_core (Spark, 2 local cores, whole graph), events_per_s_per_core_1core,
plain_events_per_s_per_core, spark_vs_plain_ratio, peak_rss_growth (max over driver and Python workers of
peak(10x events)/peak - 1), features_only_events_per_s_per_core (hlf_features + llf_features recomputed from
the stored raw_events), parquet_write_only_events_per_s_per_core (the writers alone rewriting the same three
tables from memory, polars for raw_events and pyarrow for the feature tables: a floor no pipeline that stores
them can beat), plus the raw figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = ("qcd", "ttbar", "wjets")


def _generate(root: Path, events_per_file: int, seed: int) -> None:
    from lhc_assets.cli.generate import main as generate

    generate(["--out", str(root / "incoming"), "--events-per-file", str(events_per_file), "--files-per-sample", "1",
              "--seed", str(seed), "--jobs", "2", "--quiet"])


class RssSampler(threading.Thread):
    """Peak RSS of this process's tree: driver (this Python + the JVM) and the largest Python worker."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        import psutil

        self.me = psutil.Process()
        self.driver_peak = 0
        self.worker_peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            driver = self.me.memory_info().rss
            worker = 0
            for p in self.me.children(recursive=True):
                try:
                    cmd = " ".join(p.cmdline())
                    rss = p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                if cmd.startswith("java") or "/java " in cmd or cmd.split(" ")[0].endswith("/java"):
                    jvm = rss
                    driver += jvm
                elif "pyspark" in cmd or "python" in cmd:
                    worker = max(worker, rss)
            self.driver_peak = max(self.driver_peak, driver)
            self.worker_peak = max(self.worker_peak, worker)
            time.sleep(0.2)


def spark_run(events_per_file: int, cores: int, batch: int, llf_compression: str | None = None) -> dict:
    """One measurement in this process (called in a subprocess): materialize the ingestion graph."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        warm = root / "warm"
        _generate(warm, 200, seed=1)
        data = root / "data"
        _generate(data, events_per_file, seed=2)
        os.environ["LHC_SPARK_MASTER"] = f"local[{cores}]"
        os.environ["LHC_SPARK_DRIVER_MEMORY"] = "1g"
        # Batches smaller than the small run's files, so both runs of the memory comparison stream full batches.
        config = {"batch_size": batch} | ({"llf_compression": llf_compression} if llf_compression else {})
        run_config = {"ops": {"delphes_ingestion": {"config": config}}}
        from dagster import DagsterInstance

        from lhc_assets.definitions import build_definitions
        from resources.storage import StorageResource

        sampler = RssSampler()
        sampler.start()
        timings = {}
        for label, where in (("warmup", warm), ("measured", data)):
            os.environ["LHC_DATA_ROOT"] = str(where)
            defs = build_definitions()
            keys = sorted(StorageResource(root=str(where)).input_files())
            with DagsterInstance.ephemeral() as instance:
                instance.add_dynamic_partitions("delphes_files", keys)

                def run(job: str, instance=instance, defs=defs, keys=keys):
                    t0 = time.perf_counter()
                    result = defs.resolve_job_def(job).execute_in_process(
                        instance=instance, run_config=run_config,
                        tags={"dagster/asset_partition_range_start": keys[0],
                              "dagster/asset_partition_range_end": keys[-1]})
                    assert result.success
                    return result, time.perf_counter() - t0

                result, timings[label] = run("ingestion_job")
                steps = {e.step_key: e.event_specific_data.duration_ms / 1000 for e in result.all_events
                         if e.event_type_value == "STEP_SUCCESS"}
                # The feature tables alone, recomputed from the stored raw_events (features_job).
                _, timings[f"{label}_features"] = run("features_job")
        sampler.stop.set()
        sampler.join()
        n = events_per_file * len(SAMPLES)
        return {"events": n, "cores": cores, "seconds": timings["measured"], "events_per_s": n / timings["measured"],
                "features_only_events_per_s": n / timings["measured_features"], "step_seconds": steps,
                "driver_peak_rss_mb": sampler.driver_peak / 2**20,
                "worker_peak_rss_mb": sampler.worker_peak / 2**20}


def plain_run(events_per_file: int, llf_compression: str | None = None) -> dict:
    """The same work units in one plain Python process: ROOT -> raw/HLF/LLF Parquet, one file after another."""
    import pyarrow.parquet as pq

    from lhc_assets.physics.delphes_reader import RAW_SCHEMA, inspect_file
    from lhc_assets.physics.ingest import HLF, LLF, LLF_COMPRESSION, RAW, SOURCE_ROOT, RawPartFiles, run_slice

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _generate(root / "warm", 200, seed=1)
        _generate(root / "data", events_per_file, seed=2)
        timings = {}
        for label in ("warm", "data"):
            t0 = time.perf_counter()
            for sample in SAMPLES:
                path = str(next((root / label / "incoming" / sample).glob("*.root")))
                result = run_slice({
                    "partition_key": f"{sample}/x", "sample": sample, "source": SOURCE_ROOT, "path": path,
                    "start": 0, "stop": inspect_file(path).num_entries, "part": "part-0",
                    **({"llf_compression": llf_compression} if llf_compression else {}),
                    "outputs": {t: str(root / "out" / label / sample / t) for t in (RAW, HLF, LLF)},
                })
                assert result["error"] is None, result["error"]
            timings[label] = time.perf_counter() - t0
        n = events_per_file * len(SAMPLES)
        # The floor set by the Parquet writer alone: rewrite the tables just produced, from memory.
        # (Each table with the codec the run used.)
        codecs = {LLF: llf_compression or LLF_COMPRESSION}
        tables = [(pq.read_table(f), codecs.get(f.parent.name, "snappy"))
                  for f in sorted((root / "out" / "data").rglob("*.parquet"))]
        t0 = time.perf_counter()
        for i, (table, codec) in enumerate(tables):
            if table.schema.names == RAW_SCHEMA.names:  # raw_events: polars, as the ingestion writes it
                writer = RawPartFiles(str(root / "rewrite"), f"rewrite-{i}", codec)
                for batch in table.to_batches():
                    writer.write(batch)
                writer.commit()
                continue
            pq.write_table(table, root / f"rewrite-{i}.parquet", row_group_size=2000, compression=codec,
                           use_dictionary=["sample", "file", "partition_key"], write_statistics=["entry"])
        write_s = time.perf_counter() - t0
        return {"events": n, "cores": 1, "seconds": timings["data"], "events_per_s": n / timings["data"],
                "parquet_write_only_events_per_s": n / write_s}


def _subprocess(mode: str, events_per_file: int, cores: int, batch: int = 500, llf_compression: str | None = None
                ) -> dict:
    codec = ["--llf-compression", llf_compression] if llf_compression else []
    out = subprocess.run(
        [sys.executable, __file__, "--worker", mode, "--events-per-file", str(events_per_file), "--cores", str(cores),
         "--batch", str(batch), *codec],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller files (under 3 minutes)")
    p.add_argument("--worker", choices=["spark", "plain"], help=argparse.SUPPRESS)
    p.add_argument("--events-per-file", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--cores", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=500, help=argparse.SUPPRESS)
    p.add_argument("--llf-compression", help="Parquet codec of llf_features in the Spark runs (default: the asset's)")
    args = p.parse_args()
    if args.worker:
        result = (spark_run(args.events_per_file, args.cores, args.batch, args.llf_compression)
                  if args.worker == "spark" else plain_run(args.events_per_file, args.llf_compression))
        print(json.dumps(result))
        return

    small, batch = (600, 200) if args.quick else (2000, 500)
    spark2 = _subprocess("spark", small, 2, batch, args.llf_compression)
    spark2_10x = _subprocess("spark", small * 10, 2, batch, args.llf_compression)
    spark1 = _subprocess("spark", small * 2, 1, batch, args.llf_compression)
    plain = _subprocess("plain", small * 4, 1, llf_compression=args.llf_compression)
    per_core_2 = spark2_10x["events_per_s"] / 2
    growth_driver = spark2_10x["driver_peak_rss_mb"] / spark2["driver_peak_rss_mb"] - 1
    growth_worker = spark2_10x["worker_peak_rss_mb"] / spark2["worker_peak_rss_mb"] - 1
    result = {
        "benchmark": "ingest_features",
        "events_per_s_per_core": per_core_2,
        "events_per_s_per_core_1core": spark1["events_per_s"],
        "plain_events_per_s_per_core": plain["events_per_s"],
        "spark_vs_plain_ratio": per_core_2 / plain["events_per_s"],
        "features_only_events_per_s_per_core": spark2_10x["features_only_events_per_s"] / 2,
        "parquet_write_only_events_per_s_per_core": plain["parquet_write_only_events_per_s"],
        "peak_rss_growth": max(growth_driver, growth_worker),
        "peak_rss_growth_driver": growth_driver,
        "peak_rss_growth_python_workers": growth_worker,
        "targets": {"events_per_s_per_core": 2000, "spark_vs_plain_ratio": 0.5, "peak_rss_growth": 0.25},
        "reference_2019_events_per_s_per_core": [11.7, 17.3],
        "runs": {"spark_2cores": spark2, "spark_2cores_10x": spark2_10x, "spark_1core": spark1, "plain": plain},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
