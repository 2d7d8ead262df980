"""``lhc-run`` (what ``make run`` does): generate, ingest, build the training data, train and evaluate the
models, print a summary; re-runs skip finished work."""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1700)]


def test_make_run_goes_from_nothing_to_model_evaluation_and_reruns_cheaply(quick_run):
    tmp_path = quick_run.data_root.parent
    first = quick_run.first
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    out = first.stdout
    assert "training data: undersampling, scalers and the Petastorm datasets" in out
    rows = {m[0]: (int(m[1]), int(m[2]), int(m[3]))
            for m in re.findall(r"^\s+(qcd|ttbar|wjets)\s+(\d+)\s+(\d+)\s+(\d+)", out, re.M)}
    # QCD, the rarest class after the selection, gets three times the files.
    assert {s: r[:2] for s, r in rows.items()} == {"qcd": (3, 4500), "ttbar": (1, 1500), "wjets": (1, 1500)}
    rows = {s: r[1:] for s, r in rows.items()}
    train, test = map(int, re.search(r"training data: (\d+) train / (\d+) test events", out).groups())
    balanced = 3 * min(selected for _, selected in rows.values())
    assert train + test == balanced and train == 3 * round(0.8 * balanced / 3)
    assert "DEBUG" not in out and "[Stage" not in first.stderr  # quiet console
    assert (tmp_path / "data" / "models" / "feature_scalers.json").is_file()
    assert "models: hyperparameter search" in out and "FAILED" not in out.replace("CHECK FAILED", "")
    table = dict(re.findall(r"^\s+(hlf_classifier|particle_sequence_classifier|inclusive_classifier|"
                            r"image_classifier|random_forest_baseline)\s+([\d. ]+)$", out, re.M))
    assert len(table) == 5 and all(len(v.split()) == 4 for v in table.values()), out
    assert all(0.0 <= float(x) <= 1.0 for v in table.values() for x in v.split())
    reports = list((tmp_path / "data" / "reports" / "model_evaluation").glob("v-*/report.json"))
    assert reports and f"model comparison on the test split (model_evaluation: {reports[0]})" in out
    # The Keras classifiers exported to ONNX with their parity, and the trigger menu's headline per model.
    onnx = dict(re.findall(r"^\s+(hlf_classifier|particle_sequence_classifier|inclusive_classifier|image_classifier)"
                           r"\s+(\d\.\de-\d\d)\s", out, re.M))
    assert len(onnx) == 4 and all(float(v) < 1e-5 for v in onnx.values()), out
    assert len(re.findall(r"keep (?:99|100)\.\d % of ttbar at [\d.]+ Hz instead of 1000 Hz", out)) == 4, out
    # Every input file's selected events are scored too (the whole graph).
    assert "file scores: the Keras classifiers over every selected event of the 5 input files" in out
    scored = list((tmp_path / "data" / "warehouse" / "file_event_scores").glob("*/*/v-*/*.parquet"))
    assert len({p.parent.parent for p in scored}) == 5, scored

    again = quick_run.run()
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert "ingestion: all 5 partitions already materialized" in again.stdout
    assert "training data: up to date with the feature tables" in again.stdout
    assert f"training data: {train} train / {test} test events" in again.stdout
    assert "models: up to date with the training data" in again.stdout
    assert "file scores: up to date with the models" in again.stdout


def test_pipeline_performance_after_make_run_holds_every_stage_as_its_runs_recorded_it(quick_run):
    import json
    from pathlib import Path

    from dagster import AssetKey, DagsterInstance

    from lhc_assets.operations.performance import STAGES
    from lhc_assets.spark import metering as M

    assert "performance per stage (pipeline_performance)" in quick_run.first.stdout
    with DagsterInstance.from_config(str(quick_run.dagster_home)) as instance:
        event = instance.get_latest_materialization_event(AssetKey("pipeline_performance"))
        report = json.loads(Path(event.asset_materialization.metadata["report"].value).read_text())
        assert [stage for stage, _ in STAGES] == list(report["stages"])  # every stage of the study measured
        for stage, asset in STAGES:
            records = instance.fetch_materializations(AssetKey(asset), limit=50).records
            recorded = next(r.asset_materialization.metadata for r in records
                            if M.EVENTS in r.asset_materialization.metadata)
            latest = report["stages"][stage]["latest"]
            assert latest["events"] == recorded[M.EVENTS].value > 0, stage
            assert latest["wall_seconds"] == recorded[M.WALL].value > 0, stage
            assert latest["cpu_seconds"] == recorded[M.CPU].value, stage
            assert latest["events_per_s_per_core"] == pytest.approx(
                latest["events"] / latest["wall_seconds"] / latest["cores"], rel=1e-3), stage
        # The ingestion's events are the events read from the files, partition by partition.
        read = sum(r.asset_materialization.metadata["events_read"].value
                   for r in instance.fetch_materializations(AssetKey("raw_events"), limit=50).records)
        assert report["stages"]["ingestion and features"]["latest"]["events"] == read == 7500
        # It wrote three tables to disk; its process tree's storage writes say so.
        assert report["stages"]["ingestion and features"]["latest"]["bytes_written"] > 0
