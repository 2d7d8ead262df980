"""The soak benchmark's code path on a few files (``benchmarks/soak.py --quick``), which is also the end-to-end test of
the production deployment on PostgreSQL (deploy/): a private PostgreSQL server from Debian's ``postgresql`` package,
the instance made by ``deploy/instance.py``, the real ``dagster-daemon`` with the new-file sensor, a per-file backfill
with retries whose runs are SIGKILLed (one during its Parquet writes, one while the daemon is down), the daemon
SIGKILLed and restarted, a corrupt file dropped for the sensor.

About 3 minutes on 2 cores: 4 backfill files, a file and a corrupt one for the sensor, three kills."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]


def test_quick_soak_on_postgres_ends_complete_with_every_check(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "soak.py"), "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=840, check=False,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    out = proc.stdout.strip()
    assert out.startswith("{"), proc.stderr[-4000:]
    result = json.loads(out)
    assert "error" not in result, result["error"]
    failed = {name: check for name, check in result["checks"].items() if not check["ok"]}
    assert proc.returncode == 0 and result["ok"] and not failed, (failed, proc.stderr[-4000:])
    assert set(result["checks"]) == {
        "materialized_once", "killed_runs_published_whole", "rows_equal_clean_run", "sensor_requested_once",
        "failures_listed", "no_staging_left", "no_process_left", "backfill_completed", "no_manual_rerun"}

    # The soak did what it says: kills of each kind, the daemon's outage, Dagster's retries, nothing by hand.
    kinds = {k["kind"] for k in result["kills"]}
    assert kinds == {"write", "running", "daemon_down"} and result["runs_killed_during_writes"] >= 1
    assert result["daemon_restarts"] == 1 and result["retries"] >= result["runs_killed"] >= 3
    assert result["backfill_status"] == "COMPLETED_SUCCESS" and result["manual_reruns"] == []
    assert result["backfill_runs"] >= result["backfill_partitions"] + result["runs_killed"]
    # A killed worker's Spark JVM and Python workers end by themselves (the JVM exits when its driver's pipe closes).
    assert all(k["children"] and k["children_exit_s"] is not None for k in result["kills"])
    assert result["killed_at_stop"] == [] and result["postgres_stopped"]

    # Everything went through Postgres, on the instance deploy/instance.py makes.
    deployment = result["deployment"]
    assert deployment["instance_yaml_from_template"]
    assert deployment["storage"] == {"run_storage": "PostgresRunStorage",
                                     "event_log_storage": "PostgresEventLogStorage",
                                     "schedule_storage": "PostgresScheduleStorage"}
    assert deployment["postgres_run_rows"] == deployment["instance_runs"] == result["runs_launched"] >= 9
    assert deployment["sqlite_files"] == []

    # The corrupt file: requested once by the sensor, failed, named by `lhc failures` with the problem.
    assert [row["partition"] for row in result["failures_listed"]] == ["qcd/broken_0"]
    assert "broken_0.root" in result["failures_listed"][0]["problem"]
    assert "cannot read" in result["failures_listed"][0]["problem"]
    assert not list(tmp_path.iterdir())  # its scratch directories are removed
