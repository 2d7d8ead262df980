"""Scaling study: each Spark stage on a Spark standalone cluster of E workers x C cores, and a projection.

For every cluster shape of the grid, starts a standalone cluster on 127.0.0.1 from the pyspark package
(``lhc_assets.spark.standalone``), runs the platform's Spark stages through Dagster in one application (the
ingestion job over every input file, the training-data job, the random-forest baseline) on the same generated
inputs at each input size, after a warm-up pass (JVM, Python workers, numba), and stops the cluster, also when
something failed. Spark's event log splits each stage's wall time into driver-side (serial) seconds and the
span of its Spark jobs (``lhc_assets.spark.eventlog``). Reports per stage and shape: speedup and parallel
efficiency against the smallest shape, then fits the per-stage model of ``lhc_assets.operations.scaling``
(serial part, per-task overhead, per-event cost) and projects the study's full data set (54,470,137 events)
on 50 / 200 / 400 / 800 cores next to the published figures (the ingestion also at the study's 83 kB per
event: its cost follows the bytes it reads, and generated events are smaller).

    python benchmarks/scaling.py [--quick] [--grid 1x1,1x2,2x1] [--events-per-file 1250,5000] [--files 2]

Prints one JSON object: ``measurements`` (per stage, shape and size), ``speedups``, ``models``,
``model_check`` (the model against each measurement), ``projection``, ``ingestion_io_floor_seconds`` (the study's
4.5 TB read at 1 / 5 / 10 GB/s), ``published``, ``input_bytes_per_event``, ``seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
STUDY_EVENTS = 54_470_137
STUDY_BYTES = 4.5e12
STUDY_TRAIN_ROWS = 3_430_000
PROJECTED_CORES = (50, 200, 400, 800)
# The stages measured: (stage as pipeline_performance names it, the Dagster job that runs it).
STAGES = {
    "ingestion and features": "ingestion_job",
    "training data: selection": "training_data_job",
    "training data: datasets": "training_data_job",
    "training: random forest": "random_forest_baseline",
}
# Published figures of the study's Spark pipeline (arXiv:1909.10389 and the 2023 SparkDLTrigger notes).
PUBLISHED = {
    "ingestion and features": [
        {"what": "54,470,137 events, 50 executors x 8 cores, Python UDFs", "cores": 400, "seconds": 3 * 3600 + 13 * 60},
        {"what": "the same with Spark SQL higher-order functions", "cores": 400, "seconds": 2 * 3600 + 11 * 60},
    ],
    "training data: datasets": [
        {"what": "2023 feature preparation: test set written", "seconds": 3600},
        {"what": "2023 feature preparation: train set written (3.43 M rows)", "seconds": 2 * 3600 + 9 * 60},
    ],
    "training: HLF classifier": [
        {"what": "HLF training, about 4 M events, 20 executors x 2 cores", "cores": 40, "seconds": 17 * 60},
        {"what": "BigDL on YARN, HLF classifier", "events_per_s": 60_000},
        {"what": "BigDL on YARN, GRU classifier", "events_per_s": 5_000},
    ],
}


def _generate(incoming: Path, events_per_file: int, files: int, seed: int) -> None:
    from lhc_assets.cli.generate import main as generate

    generate(["--out", str(incoming), "--events-per-file", str(events_per_file), "--files-per-sample", str(files),
              "--seed", str(seed), "--jobs", "2", "--quiet"])


def worker(inputs: list[str], out: Path) -> list[dict]:
    """In the application's process: every stage on each input set in turn; the stage records of each."""
    from dagster import DagsterInstance

    from lhc_assets.definitions import build_definitions
    from lhc_assets.operations.performance import collect
    from resources.storage import StorageResource

    results = []
    for i, incoming in enumerate(inputs):
        root = out / f"data-{i}"
        root.mkdir(parents=True)
        (root / "incoming").symlink_to(incoming)
        os.environ["LHC_DATA_ROOT"] = str(root)
        defs = build_definitions()
        keys = sorted(StorageResource(root=str(root)).input_files())
        with DagsterInstance.ephemeral() as instance:
            instance.add_dynamic_partitions("delphes_files", keys)
            tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
            for job in dict.fromkeys(STAGES.values()):
                if job.endswith("_job"):
                    result = defs.resolve_job_def(job).execute_in_process(
                        instance=instance, run_config=QUIET, tags=tags if job == "ingestion_job" else None)
                else:
                    from dagster import AssetKey

                    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
                        instance=instance, run_config=QUIET, asset_selection=[AssetKey(job)])
                if not result.success:
                    raise RuntimeError(f"{job} failed on {incoming}")
            runs = collect(instance, history=1, stages=[(s, _asset(s)) for s in STAGES])
        results.append({"inputs": incoming, "stages": {s: r[0].to_dict() for s, r in runs.items()}})
    return results


def _asset(stage: str) -> str:
    from lhc_assets.operations.performance import STAGES as PIPELINE_STAGES

    return dict(PIPELINE_STAGES)[stage]


def measure_shape(workers: int, cores: int, inputs: list[str], sizes: list[int], tmp: Path) -> list[dict]:
    """Start the cluster, run the stages on every input set in one application, stop the cluster."""
    from lhc_assets.operations.scaling import Measurement
    from lhc_assets.spark.eventlog import activity, event_log_files, read_events
    from lhc_assets.spark.standalone import StandaloneCluster

    where = tmp / f"cluster-{workers}x{cores}"
    (where / "events").mkdir(parents=True)
    with StandaloneCluster(workers, cores, where, memory_per_worker="3g") as cluster:
        conf = ";".join((cluster.client_conf(), "spark.eventLog.enabled=true", "spark.eventLog.compress=false",
                         "spark.eventLog.rolling.enabled=false",
                         f"spark.eventLog.dir=file://{where / 'events'}"))
        env = {**os.environ, "LHC_SPARK_MASTER": cluster.master_url, "LHC_SPARK_CONF": conf,
               "LHC_SPARK_DRIVER_MEMORY": "2g", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        proc = subprocess.run([sys.executable, __file__, "--worker", "--inputs", ",".join(inputs), "--out",
                               str(where / "run")], env=env, capture_output=True, text=True, cwd=REPO, check=False)
        (where / "driver.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"{workers}x{cores}: the stages failed (log {where / 'driver.log'}):\n"
                               f"{(proc.stdout + proc.stderr)[-3000:]}")
        if cluster.alive() != [p.pid for p in cluster.processes]:
            raise RuntimeError(f"{workers}x{cores}: a cluster daemon died during the run (logs in {where})")
    runs = json.loads(proc.stdout.strip().splitlines()[-1])
    events = read_events(event_log_files(where / "events")[-1])
    measured = []
    for size, run in zip(sizes, runs[-len(sizes):], strict=True):  # the first input set is the warm-up
        for stage, record in run["stages"].items():
            # From the stage's start to its materialization (the IO manager's publishing included).
            start = record["started_at"] or record["timestamp"] - record["wall_seconds"]
            spark = activity(events, start, record["timestamp"])
            m = Measurement(stage=stage, workers=workers, cores_per_worker=cores, events=record["events"],
                            wall_seconds=spark.window_seconds, driver_seconds=spark.driver_seconds,
                            parallel_seconds=spark.parallel_seconds, tasks=spark.tasks,
                            task_seconds=spark.task_seconds, executor_run_seconds=spark.executor_run_seconds)
            measured.append({**m.__dict__, "cores": m.cores, "events_per_file": size, "spark": spark.to_dict(),
                             "driver_cpu_seconds": record["cpu_seconds"]})
    return measured


def _production_events(stage: str, measured: list[dict]) -> int:
    """The stage's events for the study's full data set: the study's own counts where published, else our
    measured ratio of the stage's events to the ingested events."""
    if stage == "ingestion and features":
        return STUDY_EVENTS
    if stage == "training data: datasets":
        return round(STUDY_TRAIN_ROWS / 0.8)  # train + test rows of the balanced set (80/20 split)
    if stage == "training: random forest":
        return STUDY_TRAIN_ROWS
    largest = max(m["events_per_file"] for m in measured)
    ingested = next(m["events"] for m in measured if m["stage"] == "ingestion and features"
                    and m["events_per_file"] == largest)
    mine = next(m["events"] for m in measured if m["stage"] == stage and m["events_per_file"] == largest)
    return round(STUDY_EVENTS * mine / ingested)


def _size_factors(stage: str, study_over_ours: float) -> tuple[float, ...]:
    """The ingestion's cost follows the bytes it reads: also project it at the study's bytes per event."""
    return (1.0, study_over_ours) if stage == "ingestion and features" else (1.0,)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small inputs (a few minutes)")
    p.add_argument("--grid", help="cluster shapes WORKERSxCORES, comma-separated (default 1x1,1x2,2x1)")
    p.add_argument("--events-per-file", help="input sizes, events per file, comma-separated")
    p.add_argument("--files", type=int, help="files per sample")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--inputs", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.inputs.split(","), Path(args.out))))
        return
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so the clusters' finally blocks stop their daemons.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    grid = [tuple(int(x) for x in s.split("x")) for s in (args.grid or "1x1,1x2,2x1").split(",")]
    sizes = [int(s) for s in (args.events_per_file or ("300,1200" if args.quick else "1250,5000")).split(",")]
    files = args.files or (1 if args.quick else 2)

    from lhc_assets.operations.scaling import Measurement, fit_stage, project, speedups

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lhc-scaling-") as tmp_name:
        tmp = Path(tmp_name)
        inputs = [tmp / "inputs" / "warm-up" / "incoming"]
        _generate(inputs[0], 200, 1, seed=1)
        for size in sizes:
            inputs.append(tmp / "inputs" / f"{size}" / "incoming")
            _generate(inputs[-1], size, files, seed=2)
        input_bytes = sum(f.stat().st_size for f in inputs[-1].rglob("*.root"))
        measured = []
        for workers, cores in grid:
            measured += measure_shape(workers, cores, [str(i) for i in inputs], sizes, tmp)
    fields = Measurement.__dataclass_fields__
    measurements = [Measurement(**{k: m[k] for k in fields}) for m in measured]
    models = {stage: fit_stage([m for m in measurements if m.stage == stage]) for stage in STAGES
              if any(m.stage == stage for m in measurements)}
    ingested = max(m.events for m in measurements if m.stage == "ingestion and features")
    size_factor = (STUDY_BYTES / STUDY_EVENTS) / (input_bytes / ingested)
    print(json.dumps({
        "benchmark": "scaling",
        "grid": [f"{w}x{c}" for w, c in grid], "events_per_file": sizes, "files_per_sample": files,
        "speedups": speedups(measurements),
        "models": {s: m.to_dict() | {"serial_fraction_at_study_size": round(
            m.serial_fraction(_production_events(s, measured)), 4)} for s, m in models.items()},
        "projection": [row for s, m in models.items() for factor in _size_factors(s, size_factor)
                       for row in project(m, _production_events(s, measured), PROJECTED_CORES, factor)],
        "model_check": [{"stage": m.stage, "shape": m.shape, "events": m.events, "measured_seconds": m.wall_seconds,
                         "model_seconds": round(models[m.stage].seconds(m.events, m.cores, m.tasks), 2)}
                        for m in measurements],
        # Reading the study's 4.5 TB at a cluster's aggregate storage bandwidth: a floor under the ingestion.
        "ingestion_io_floor_seconds": {f"{gb} GB/s": round(STUDY_BYTES / (gb * 1e9)) for gb in (1, 5, 10)},
        "published": PUBLISHED,
        "input_bytes_per_event": round(input_bytes / ingested),
        "study_input_bytes_per_event": round(STUDY_BYTES / STUDY_EVENTS),
        "measurements": measured,
        "seconds": round(time.perf_counter() - start, 1),
    }))


if __name__ == "__main__":
    main()
