"""The Dagster instance directory (``$DAGSTER_HOME``) that ``make run``, ``make ui`` and ``lhc`` create when missing."""

from __future__ import annotations

import os
from pathlib import Path

# Every run starts its own Spark JVM using all local cores: the sensor or a per-partition backfill queueing
# dozens of runs must not start dozens of JVMs at once. Raise the limit on a bigger machine.
MAX_CONCURRENT_RUNS = 2
DAGSTER_YAML = f"""\
telemetry:
  enabled: false
# Each run is a process with its own Spark JVM; the daemon starts at most this many at once, the rest wait queued.
concurrency:
  runs:
    max_concurrent_runs: {MAX_CONCURRENT_RUNS}
"""


def ensure_dagster_home() -> Path:
    """``$DAGSTER_HOME`` (default ``./.dagster_home``, exported here), with a dagster.yaml if it has none."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path.cwd() / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    return home


if __name__ == "__main__":
    print(ensure_dagster_home() / "dagster.yaml")
