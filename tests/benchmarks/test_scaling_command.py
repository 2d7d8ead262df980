"""The scaling study's command on a tiny grid: it measures every Spark stage on each cluster shape from the
same inputs, and leaves no Spark daemon, executor or Python worker behind, also when it is stopped midway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "scaling.py"
STAGES = {"ingestion and features", "training data: selection", "training data: datasets",
          "training: random forest"}


def _cluster_processes(tmp: Path) -> list[psutil.Process]:
    """Live processes the command started with ``TMPDIR=tmp``: the Spark drivers (Python and JVM) inherit it, the
    daemons, executors and their Python workers also carry the SPARK_WORKER_DIR of a cluster under ``tmp``."""
    found = []
    for process in psutil.process_iter():
        try:
            env = process.environ()
            if env.get("TMPDIR") == str(tmp) or env.get("SPARK_WORKER_DIR", "").startswith(str(tmp)):
                found.append(process)
        except psutil.Error:
            continue
    return found


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}


def test_tiny_grid_measures_every_stage_and_stops_the_clusters(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--grid", "1x1,2x1", "--events-per-file", "150",
                           "--files", "1"], env=_env(tmp_path), cwd=REPO, capture_output=True, text=True,
                          timeout=840, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not _cluster_processes(tmp_path)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["grid"] == ["1x1", "2x1"]
    rows = result["speedups"]
    assert {r["stage"] for r in rows} == STAGES and len(rows) == 2 * len(STAGES)
    for stage in STAGES:
        shapes = {r["shape"]: r for r in rows if r["stage"] == stage}
        assert shapes.keys() == {"1x1", "2x1"}
        assert shapes["1x1"]["events"] == shapes["2x1"]["events"] > 0  # the same inputs on both shapes
        assert shapes["1x1"]["speedup"] == 1.0
    for m in result["measurements"]:
        spark = m["spark"]
        assert m["wall_seconds"] == pytest.approx(m["driver_seconds"] + m["parallel_seconds"], abs=0.01)
        assert spark["jobs"] >= 1 and spark["tasks"] >= 1 and spark["failed_tasks"] == 0
        assert spark["executor_run_seconds"] > 0  # the work ran in the cluster's executors
        if m["stage"] == "ingestion and features":
            assert m["events"] == 3 * 150  # three samples, one file of 150 events each
            assert m["tasks"] >= m["cores"]
    assert {row["cores"] for row in result["projection"]} == {50, 200, 400, 800}
    assert set(result["models"]) == STAGES


def test_stopped_midway_it_stops_its_cluster(tmp_path):
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--grid", "1x1", "--events-per-file", "150", "--files",
                             "1"], env=_env(tmp_path), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 300
        # Wait for the application's executor: the cluster is up and the stages are running.
        while not any("CoarseGrainedExecutorBackend" in " ".join(p.cmdline()) for p in _cluster_processes(tmp_path)):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no executor started"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 30
    while _cluster_processes(tmp_path) and time.monotonic() < deadline:  # executors exit after their worker
        time.sleep(0.5)
    assert not _cluster_processes(tmp_path)
    assert not list(tmp_path.glob("lhc-scaling-*"))  # its scratch directory is removed too
