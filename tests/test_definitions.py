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


def test_ingestion_graph_is_defined_with_per_file_partitions():
    from dagster import AssetKey

    from lhc_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    for name, group in (("raw_events", "ingestion"), ("hlf_features", "features"), ("llf_features", "features")):
        node = graph.get(AssetKey(name))
        assert node.group_name == group
        assert node.partitions_def.name == "delphes_files"
    assert graph.get(AssetKey("hlf_features")).parent_keys == {AssetKey("raw_events")}
    for job in ("raw_events_job", "features_job", "ingestion_job"):
        assert defs.resolve_job_def(job).partitions_def.name == "delphes_files"


def test_contiguous_partition_ranges_cover_exactly_the_missing_keys():
    from lhc_assets.operations.backfill import contiguous_ranges

    order = ["a", "b", "c", "d", "e"]
    assert contiguous_ranges(order, {"a", "b", "d"}) == [("a", "b"), ("d", "d")]
    assert contiguous_ranges(order, set(order)) == [("a", "e")]
    assert contiguous_ranges(order, set()) == []
    # Cut to at most max_size partitions per range (the backfill policy's runs).
    assert contiguous_ranges(order, set(order), max_size=2) == [("a", "b"), ("c", "d"), ("e", "e")]
    assert contiguous_ranges(order, {"a", "b", "c", "e"}, max_size=2) == [("a", "b"), ("c", "c"), ("e", "e")]


def test_every_asset_reads_like_the_pipeline_figure():
    """Description, group, owner, stage tag and a code reference (the UI's "open source") on every asset."""
    from lhc_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    groups = set()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        spec = defs.get_assets_def(key).specs_by_key[key]
        groups.add(node.group_name)
        assert spec.description and len(spec.description) > 40, key
        assert spec.owners, key
        assert spec.tags.get("stage"), key  # the study's stage, filterable in the UI
        references = node.metadata["dagster/code_references"].code_references
        assert references and all(Path(r.file_path).is_file() and r.file_path.startswith(str(REPO / "lhc_assets"))
                                  for r in references), key
    assert groups == {"ingestion", "features", "datasets", "models", "evaluation", "deployment", "physics",
                      "operations"}
