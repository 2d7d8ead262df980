"""generator_comparison materialized through Dagster: both engines, the report, the figure in the metadata."""

from __future__ import annotations

import json

from dagster import materialize

from lhc_assets.defs.physics.assets import generator_comparison
from resources.json_io_manager import ReportIOManager
from resources.storage import StorageResource


def test_generator_comparison_publishes_a_report_with_both_sources(tmp_path):
    storage = StorageResource(root=str(tmp_path / "data"))
    config = {"toy_events": 300, "pythia_events": 25, "seed": 3, "pileup_mu": 5.0}
    result = materialize([generator_comparison], resources={
        "storage": storage, "report_io_manager": ReportIOManager(storage=storage),
    }, run_config={"ops": {"generator_comparison": {"config": config}}})
    assert result.success
    published = tmp_path / "data" / "reports" / "generator_comparison"
    report = json.loads(next(published.glob("v-*/report.json")).read_text())
    assert report["sources"] == ["toy", "pythia"]
    for sample, r in report["classes"].items():
        assert r["events"] == {"toy": 300, "pythia": 25}, sample
        assert 0.0 < r["selection_efficiency"]["toy"] <= 1.0
    assert report["config"]["pythia_events"] == 25
    assert list(published.glob("v-*/features.png"))
    # The working samples are gone; only the published version remains.
    assert not list(published.glob(".staging-*"))
    metadata = result.asset_materializations_for_node("generator_comparison")[0].metadata
    assert "data:image/png;base64," in metadata["features"].value
    assert "| n_photons |" in metadata["ks_distance"].value


def test_generator_comparison_reads_an_existing_pythia_sample(tmp_path, generated_files):
    # Any Delphes files laid out like incoming/ can stand for the Pythia sample (here the toy's own).
    incoming = generated_files["qcd"].parent.parent
    storage = StorageResource(root=str(tmp_path / "data"))
    config = {"toy_events": 200, "pythia_files": str(incoming), "max_events": 500}
    result = materialize([generator_comparison], resources={
        "storage": storage, "report_io_manager": ReportIOManager(storage=storage),
    }, run_config={"ops": {"generator_comparison": {"config": config}}})
    assert result.success
    report = result.output_for_node("generator_comparison").data
    assert {r["events"]["pythia"] for r in report["classes"].values()} == {500}
