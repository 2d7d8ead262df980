"""Benchmark of the two CLI backfills of the ingestion assets (issue: orchestration). Prints one JSON object.

Against one real ``dagster-daemon`` and the same files, times from submission until every partition is
materialized: ``dagster job backfill --all`` (one run per partition: a process and a Spark JVM each) and
``lhc backfill --all`` (an asset backfill; the single-run policy makes it one run, one Spark job over all
files). The ratio is what the single-run path saves for many files on this machine.

    python benchmarks/backfill.py [--quick] [--files N] [--events N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from lhc_assets.cli.home import DAGSTER_YAML

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
INGESTION = ("raw_events", "hlf_features", "llf_features")


def _all_materialized_since(instance: DagsterInstance, keys: list[str], since: float) -> bool:
    for asset in INGESTION:
        done = set()
        cursor = None
        while True:
            page = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=AssetKey(asset), after_timestamp=since), limit=1000, cursor=cursor)
            done |= {r.partition_key for r in page.records}
            if not page.has_more:
                break
            cursor = page.cursor
        if not set(keys) <= done:
            return False
    return True


def _wait(instance: DagsterInstance, keys: list[str], since: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _all_materialized_since(instance, keys, since):
            return time.time() - since
        time.sleep(1)
    raise TimeoutError(f"partitions not materialized within {timeout} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 small files (a few minutes)")
    p.add_argument("--files", type=int, default=None, help="files per sample")
    p.add_argument("--events", type=int, default=None, help="events per file")
    args = p.parse_args()
    files = args.files or (1 if args.quick else 3)
    events = args.events or (500 if args.quick else 2000)

    with tempfile.TemporaryDirectory(prefix="lhc-bench-backfill-") as tmp:
        base = Path(tmp)
        home, data = base / "home", base / "data"
        home.mkdir()
        (home / "dagster.yaml").write_text(DAGSTER_YAML)  # what users get: at most 2 runs at once
        env = {**os.environ, "DAGSTER_HOME": str(home), "LHC_DATA_ROOT": str(data), "PYSPARK_PYTHON": sys.executable,
               "LHC_SPARK_MASTER": os.environ.get("LHC_SPARK_MASTER", "local[2]"),
               "LHC_SENSOR_INTERVAL_S": "3600"}  # the commands under test register the files, not the sensor
        subprocess.run([str(BIN / "lhc-generate"), "--out", str(data / "incoming"), "--events-per-file", str(events),
                        "--files-per-sample", str(files), "--seed", "3", "--jobs", "2"], env=env, check=True,
                       capture_output=True)
        daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=REPO, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            os.environ["DAGSTER_HOME"] = str(home)
            with DagsterInstance.get() as instance:
                deadline = time.monotonic() + 180
                while not instance.get_daemon_heartbeats().get("BACKFILL"):
                    if time.monotonic() > deadline:
                        raise TimeoutError("the daemon did not start")
                    time.sleep(1)
                # Registers the partitions too; its run is the single-run measurement.
                since = time.time()
                out = subprocess.run([str(BIN / "lhc"), "backfill", "--all", "--no-wait"], cwd=REPO, env=env,
                                     capture_output=True, text=True, check=False)
                if out.returncode:
                    raise RuntimeError(f"lhc backfill failed:\n{out.stdout}\n{out.stderr}")
                keys = list(instance.get_dynamic_partitions("delphes_files"))
                single_s = _wait(instance, keys, since, 1800)

                since = time.time()
                subprocess.run([str(BIN / "dagster"), "job", "backfill", "-w", "workspace.yaml", "-j", "ingestion_job",
                                "--all", "--noprompt"], cwd=REPO, env=env, capture_output=True, check=True)
                per_partition_s = _wait(instance, keys, since, 3600)
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=60)

    n_events = 3 * files * events
    print(json.dumps({
        "partitions": len(keys),
        "events": n_events,
        "single_run_backfill_s": round(single_s, 1),
        "per_partition_backfill_s": round(per_partition_s, 1),
        "single_run_speedup": round(per_partition_s / single_s, 2),
        "single_run_events_per_s": round(n_events / single_s, 1),
        "lhc_backfill_output": out.stdout.splitlines()[0] if out.stdout else "",
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }, indent=2))


if __name__ == "__main__":
    main()
