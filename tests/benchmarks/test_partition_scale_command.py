"""The partition-scale benchmark's code path on a few partitions: registration and submission through `lhc`, a
sensor tick, and the webserver answering the asset page's partition query with every partition counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]


def test_small_partition_counts_are_measured(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "partition_scale.py"), "--partitions", "30,90"],
                          cwd=REPO, capture_output=True, text=True, timeout=540, check=False,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["partitions"] for r in result["results"]] == [30, 90]
    for r in result["results"]:
        assert r["lhc_backfill_all_no_wait_seconds"] > 0 and r["sensor_tick_seconds"] > 0
        assert len(r["asset_page_query_all_seconds"]) == 3
    assert result["growth"]["partitions"] == 3.0
    assert not list(tmp_path.iterdir())  # its scratch directories are removed
