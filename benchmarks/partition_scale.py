"""How the orchestration copes with many file partitions: registration and backfill submission, one sensor tick, and
the webserver answering the asset page's partition query.

For each partition count N: N input files (empty: nothing here opens them) under a fresh data root and a fresh
SQLite ``$DAGSTER_HOME`` (the platform's own dagster.yaml), then

* ``lhc backfill --all --no-wait`` in a subprocess: registers N partitions and submits one asset backfill of the
  ingestion assets over them (no daemon runs, so nothing executes), wall seconds;
* one tick of ``new_delphes_files_sensor`` with every file registered, and one with 100 new files (wall seconds);
* ``dagster-webserver`` started on the workspace; the median of three GraphQL queries that the asset page of
  ``raw_events`` makes for its partitions (the partition counts and the materialized / failed key ranges).

    python benchmarks/partition_scale.py [--quick] [--partitions 10000,50000]

Prints one JSON object: per N the seconds of each step, and ``growth`` (each step's seconds at the largest N over the
smallest, next to the ratio of the partition counts: linear growth gives the same number).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SAMPLES = ("qcd", "ttbar", "wjets")
ASSET_PAGE_QUERY = """
query {
  assetNodeOrError(assetKey: {path: ["raw_events"]}) {
    ... on AssetNode {
      partitionStats { numMaterialized numPartitions numFailed numMaterializing }
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses { materializedPartitions failedPartitions materializingPartitions }
      }
    }
  }
}
"""


def _files(incoming: Path, n: int, tag: str = "seed7") -> None:
    for i in range(n):
        sample = SAMPLES[i % 3]
        (incoming / sample).mkdir(parents=True, exist_ok=True)
        (incoming / sample / f"{sample}_{tag}_{i:06d}.root").touch()


def _graphql(port: int, query: str) -> tuple[float, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        body = json.loads(response.read())
    return time.perf_counter() - t0, body


def _webserver(env: dict, root: Path) -> tuple[subprocess.Popen, int]:
    from lhc_assets.spark.standalone import free_port

    port = free_port()
    log = open(root / "webserver.log", "w")  # noqa: SIM115 (closed with the process)
    command = [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the webserver exited:\n{(root / 'webserver.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                return proc, port
        except OSError:
            time.sleep(0.5)
    raise TimeoutError("the webserver did not answer within 300 s")


def measure(n: int) -> dict:
    from dagster import DagsterInstance, build_sensor_context

    from lhc_assets.cli.home import create_storage, dagster_yaml
    from lhc_assets.defs.sensors.new_files import evaluate
    from resources.storage import StorageResource

    with tempfile.TemporaryDirectory(prefix="lhc-partitions-") as tmp:
        root = Path(tmp)
        (root / "home").mkdir()
        (root / "home" / "dagster.yaml").write_text(dagster_yaml())
        create_storage(root / "home")
        _files(root / "data" / "incoming", n)
        env = {**os.environ, "DAGSTER_HOME": str(root / "home"), "LHC_DATA_ROOT": str(root / "data")}

        t0 = time.perf_counter()
        out = subprocess.run([str(BIN / "lhc"), "backfill", "--all", "--no-wait"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=3600, check=False)
        submit_s = time.perf_counter() - t0
        if out.returncode != 0 or f"{n} partition(s)" not in out.stdout:
            raise RuntimeError(f"lhc backfill failed:\n{out.stdout}\n{out.stderr[-3000:]}")

        storage = StorageResource(root=str(root / "data"))
        with DagsterInstance.from_config(str(root / "home")) as instance:
            t0 = time.perf_counter()
            evaluate(build_sensor_context(instance=instance), storage)
            tick_s = time.perf_counter() - t0
            _files(root / "data" / "incoming", 100, tag="seed8")
            t0 = time.perf_counter()
            evaluate(build_sensor_context(instance=instance), storage)
            tick_new_s = time.perf_counter() - t0

        proc, port = _webserver(env, root)
        try:
            timings = []
            for _ in range(3):
                seconds, body = _graphql(port, ASSET_PAGE_QUERY)
                stats = body["data"]["assetNodeOrError"]["partitionStats"]
                if stats["numPartitions"] < n:
                    raise RuntimeError(f"the webserver sees {stats['numPartitions']} partitions, expected {n}")
                timings.append(seconds)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    return {"partitions": n, "lhc_backfill_all_no_wait_seconds": round(submit_s, 2),
            "sensor_tick_seconds": round(tick_s, 3), "sensor_tick_100_new_seconds": round(tick_new_s, 3),
            "asset_page_query_seconds": round(statistics.median(timings), 3),
            "asset_page_query_all_seconds": [round(t, 3) for t in timings]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1,000 and 5,000 partitions")
    p.add_argument("--partitions", help="partition counts, comma-separated (default 10000,50000)")
    args = p.parse_args()
    counts = [int(x) for x in (args.partitions or ("1000,5000" if args.quick else "10000,50000")).split(",")]
    results = [measure(n) for n in counts]
    small, large = results[0], results[-1]
    keys = [k for k in small if k.endswith("_seconds") and not isinstance(small[k], list)]
    print(json.dumps({
        "benchmark": "partition_scale", "results": results,
        "growth": {"partitions": large["partitions"] / small["partitions"],
                   **{k: round(large[k] / max(small[k], 1e-9), 2) for k in keys}},
    }))


if __name__ == "__main__":
    main()
