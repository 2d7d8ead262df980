"""The Dagster instance directory (``$DAGSTER_HOME``) that ``make run``, ``make ui`` and ``lhc`` create when missing."""

from __future__ import annotations

import os
from pathlib import Path

# Every run starts its own Spark JVM using all local cores: the sensor or a per-partition backfill queueing
# dozens of runs must not start dozens of JVMs at once. Raise the limit on a bigger machine.
MAX_CONCURRENT_RUNS = 2
# How often the daemon's run monitoring looks for runs whose process died (lhc_assets.operations.dagster_internals).
MONITORING_INTERVAL_S = 30


def dagster_yaml(monitoring_interval_s: int = MONITORING_INTERVAL_S) -> str:
    """The instance configuration ``make run``, ``make ui`` and ``lhc`` write into a new ``$DAGSTER_HOME``."""
    return f"""\
telemetry:
  enabled: false
# Each run is a process with its own Spark JVM; the daemon starts at most this many at once, the rest wait queued.
concurrency:
  runs:
    max_concurrent_runs: {MAX_CONCURRENT_RUNS}
# Runs whose process died (SIGKILL, out of memory, a restart) are marked failed by the daemon: the launcher checks
# the process each run records in its tags; runs stuck starting fail after start_timeout_seconds.
run_launcher:
  module: lhc_assets.operations.dagster_internals
  class: LocalRunLauncher
run_monitoring:
  enabled: true
  poll_interval_seconds: {monitoring_interval_s}
  start_timeout_seconds: 300
  max_resume_run_attempts: 0
# Failed runs are retried only when asked: set the tag dagster/max_retries on a job or run (writes are atomic, so a
# retry republishes whole partitions). Retries need the daemon.
run_retries:
  enabled: true
  max_retries: 0
"""


DAGSTER_YAML = dagster_yaml()


def create_storage(home: Path) -> None:
    """Create the instance's run, event-log and schedule storage once, from this process.

    The daemon starts several threads (sensors, backfills, run monitoring, the run queue) that would otherwise
    create SQLite storage concurrently on first use, and Alembic can then stamp the schema version twice
    ("alembic_version has more than one head"), which breaks every later command."""
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
        instance.get_asset_keys()
        instance.all_instigator_state()
        instance.get_daemon_heartbeats()


def ensure_dagster_home() -> Path:
    """``$DAGSTER_HOME`` (default ``./.dagster_home``, exported here), with a dagster.yaml and its storage if it
    has none."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path.cwd() / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
        create_storage(home)
    return home


if __name__ == "__main__":
    print(ensure_dagster_home() / "dagster.yaml")
