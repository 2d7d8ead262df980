"""The partition-scale benchmark's code path on a few partitions: registration and submission through `lhc`, a
sensor tick, the webserver answering the asset page's partition query, headless Chromium loading the asset page,
and the real daemon evaluating the backfill (both ways of writing planned events); nothing is left running or on
disk. Plus the pure helpers: the status ranges and the daemon log's reading."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "partition_scale.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("partition_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def _left_running(tmp: Path) -> list[str]:
    """Live processes started with ``TMPDIR=tmp`` (the daemon, its code servers, the webserver, the browser)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("TMPDIR") == str(tmp):
                found.append(" ".join(process.cmdline())[:200])
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_small_partition_count_is_measured_end_to_end(tmp_path):
    bench = _benchmark()
    # As tests/ui: Debian's chromium is required (`make test` and .ci/run install it), never downloaded.
    if not bench.chromium():
        pytest.fail(f"Chromium not found at {os.environ.get(bench.CHROMIUM_ENV, bench.DEFAULT_CHROMIUM)!r} "
                    f"(${bench.CHROMIUM_ENV}): install it with `sudo apt-get install -y chromium` (or `make browser`), "
                    f"or point ${bench.CHROMIUM_ENV} at a Chromium binary.")
    n = 30
    proc = subprocess.run([sys.executable, str(SCRIPT), "--partitions", str(n), "--browser-loads", "1",
                           "--daemon-iterations", "1"], cwd=REPO, capture_output=True, text=True, timeout=540,
                          check=False, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["notes"] == []
    [r] = out["results"]
    assert r["partitions"] == n
    for key in ("lhc_backfill_all_no_wait_seconds", "sensor_tick_seconds", "asset_page_query_seconds",
                "asset_page_query_with_statuses_seconds"):
        assert r[key] > 0, key
    assert len(r["asset_page_query_all_seconds"]) == 3
    materialized, failed_ranges = bench.status_plan([f"k{i:03d}" for i in range(n)])
    assert (r["materialized_partitions"], r["failed_partitions"]) == (
        len(materialized), sum(len(k) for k in failed_ranges))

    # The browser saw the page with those counts (it waits for them), and the page's figures are read.
    assert "browser_error" not in r, r["browser_error"]
    assert r["browser_load_seconds"] > 0 and len(r["browser_load_all_seconds"]) == 1
    assert r["browser_js_heap_mb"] > 0 and r["browser_script_seconds"] > 0 and r["browser_dom_nodes"] > 0

    # The daemon evaluated the backfill: one run over the whole range (fewer than 1,000 files), left queued.
    for prefix, planned in (("daemon_", 3 * n), ("daemon_subset_", 3)):
        assert r[f"{prefix}finished"] is True, r
        assert r[f"{prefix}backfill_seconds"] > 0 and r[f"{prefix}ready_seconds"] > 0
        assert r[f"{prefix}run_created_seconds"] > 0
        assert r[f"{prefix}runs_created"] == 1 and r[f"{prefix}run_statuses"] == ["QUEUED"]
        assert r[f"{prefix}run_failures"] == []
        assert r[f"{prefix}planned_events"] == planned  # one per asset and partition, or one per asset
        assert r[f"{prefix}backfill_status"] == "REQUESTED"
        assert r[f"{prefix}peak_rss_mb"] > 0 and r[f"{prefix}code_server_peak_rss_mb"] > 0
        assert r[f"{prefix}sensor_ticks"] > 0  # the sensor ran in the same daemon
        assert len(r[f"{prefix}iteration_all_seconds"]) == 1
        assert r[f"{prefix}errors"] == []

    assert out["growth"]["partitions"] == 1.0
    assert {"browser_load_seconds", "daemon_backfill_seconds", "daemon_peak_rss_mb"} <= set(out["growth"])
    assert not _left_running(tmp_path)
    assert not list(tmp_path.iterdir())  # its scratch directories are removed


def test_status_ranges_are_the_same_at_every_count():
    bench = _benchmark()
    for n in (1_000, 10_000, 50_000):
        keys = [f"k{i:06d}" for i in range(n)]
        materialized, failed_ranges = bench.status_plan(keys)
        index = {k: i for i, k in enumerate(keys)}
        done = {index[k] for k in materialized}
        assert len([i for i in done if i - 1 not in done]) == 50 and len(failed_ranges) == 4, n
        assert len(materialized) == 0.1 * n and sum(map(len, failed_ranges)) == 0.04 * n
        assert not set(materialized) & {k for r in failed_ranges for k in r}


def test_the_daemon_log_gives_evaluations_and_sensor_ticks():
    bench = _benchmark()
    log = bench.DaemonLog("abcd")
    line = "\x1b[32m2026-12-04 21:07:{:02d} +0000\x1b[0m - dagster.daemon.{} - \x1b[34mINFO\x1b[0m - {}"
    log.read([line.format(0, "SensorDaemon", "Checking for new runs for sensor: new_delphes_files_sensor"),
              line.format(4, "BackfillDaemon", "Evaluating asset backfill abcd"),
              line.format(5, "BackfillDaemon", "Evaluating asset backfill other"),
              line.format(9, "SensorDaemon", "Checking for new runs for sensor: new_delphes_files_sensor"),
              "**Assets materialized since last iteration:**",
              line.format(20, "BackfillDaemon", "Asset backfill abcd completed iteration with status REQUESTED."),
              line.format(30, "SensorDaemon", "Checking for new runs for sensor: new_delphes_files_sensor")])
    assert log.iteration_seconds() == [16.0]
    # One tick inside [4, 20]; the longest gap spans 9 -> 30.
    assert log.ticks_during(log.started[0], log.finished[0]) == (1, 21.0)


def test_the_browser_matches_counts_as_the_page_writes_them():
    bench = _benchmark()
    assert bench._shows("{} Partitions Selected", 10_000).match("10,000 Partitions Selected")
    assert bench._shows("Materialized ({})", 1_000).match("Materialized (1000)")
    assert bench._shows("Materialized ({})", 1_000).match("Materialized (1,000)")
    assert not bench._shows("Materialized ({})", 1_000).match("Materialized (10000)")
    assert bench._shows("qcd/qcd_seed7_000000").match("qcd/qcd_seed7_000000")
    assert not bench._shows("Failed ({})", 4).match("Failed (40)")
