"""``lhc`` without a daemon, as a new user runs it: a bad file prints one line (no Dagster debug events, no stack
trace) and is listed by ``lhc failures``; an ``lhc backfill --in-process`` killed with SIGKILL mid-run is noticed,
its partitions listed and re-materialized with ``lhc backfill --failed``, its staging removed by that next run,
and ``lhc gc`` reclaims the old versions."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, DagsterRunStatus

from lhc_assets.physics.partition_keys import partition_key
from resources.publisher import STAGING_PREFIX, current_version
from tests.physics import badfiles

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env(base: Path) -> dict[str, str]:
    (base / "home").mkdir(exist_ok=True)
    return {**os.environ, "DAGSTER_HOME": str(base / "home"), "LHC_DATA_ROOT": str(base / "data"),
            "LHC_SPARK_MASTER": "local[2]", "LHC_SPARK_DRIVER_MEMORY": "1g", "PYSPARK_PYTHON": sys.executable}


def _lhc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "lhc"), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=480,
                          check=False)


def _add(base: Path, sample: str, src: Path | None, name: str) -> str:
    dest = base / "data" / "incoming" / sample / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src is None:
        badfiles.not_root(dest)
    else:
        shutil.copyfile(src, dest)
    return partition_key(sample, name)


def _staging(base: Path) -> list[Path]:
    return list((base / "data" / "warehouse").glob(f"*/*/*/{STAGING_PREFIX}*")) + \
        list((base / "data" / "warehouse").glob(f"*/{STAGING_PREFIX}*"))


def test_bad_file_one_line_then_killed_run_noticed_recovered_and_collected(tmp_path, generated_files):
    env = _env(tmp_path)
    good = _add(tmp_path, "ttbar", generated_files["ttbar"], "ttbar_a.root")
    bad = _add(tmp_path, "wjets", None, "garbage.root")

    first = _lhc(env, "backfill", "--all", "--in-process")
    assert first.returncode == 1, first.stdout + first.stderr
    out = first.stdout + first.stderr
    assert f"failed       {bad}: " in first.stdout and "garbage.root" in first.stdout
    assert "Traceback" not in out and "DEBUG" not in out and " - dagster - " not in out, out
    listed = _lhc(env, "failures")
    assert listed.returncode == 0 and bad in listed.stdout and "garbage.root" in listed.stdout, listed.stdout
    assert good not in listed.stdout

    # Re-run the good file and kill the whole process (driver, Spark JVM, Python workers) once it is staging.
    proc = subprocess.Popen([str(BIN / "lhc"), "backfill", "--partitions", good, "--in-process"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not _staging(tmp_path):
        assert proc.poll() is None and time.monotonic() < deadline, "the run never started writing"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    left = _staging(tmp_path)
    assert left
    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        killed = instance.get_runs(limit=1)[0]
        assert killed.status == DagsterRunStatus.STARTED  # Dagster alone never learns that it died

    noticed = _lhc(env, "failures")
    assert f"run {killed.run_id[:8]}" in noticed.stderr and "marked failed" in noticed.stderr, noticed.stderr
    assert good in noticed.stdout and "ended without finishing" in noticed.stdout, noticed.stdout
    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        assert instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.FAILURE

    # The published data was never touched, and the next run cleans up and republishes the partition once.
    retried = _lhc(env, "backfill", "--partitions", good, "--in-process")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert not any(p.exists() for p in left) and not _staging(tmp_path)
    assert good not in _lhc(env, "failures").stdout
    table = tmp_path / "data" / "warehouse" / "hlf_features" / good
    rows = pq.read_table(current_version(table)).num_rows
    assert rows > 0

    # Three runs published the partition: CURRENT plus one previous version kept; gc with --keep 0 drops it.
    assert len(list(table.glob("v-*"))) == 2
    gc = _lhc(env, "gc", "--keep", "0")
    assert gc.returncode == 0 and "reclaimed" in gc.stdout and "of old versions" in gc.stdout, gc.stdout
    assert [p.name for p in table.glob("v-*")] == [current_version(table).name]
    assert pq.read_table(current_version(table)).num_rows == rows
