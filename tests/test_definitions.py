"""The code location loads and validates the way `dagster dev` and the CLI load it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_definitions_import_with_resources():
    from lhc_assets.definitions import defs

    resources = defs.resources or {}
    assert {"spark", "storage"} <= set(resources)


@pytest.mark.slow
def test_dagster_definitions_validate_passes(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful for code location lhc_assets" in proc.stdout + proc.stderr
