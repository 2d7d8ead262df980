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
                            r"random_forest_baseline)\s+([\d. ]+)$", out, re.M))
    assert len(table) == 4 and all(len(v.split()) == 4 for v in table.values()), out
    assert all(0.0 <= float(x) <= 1.0 for v in table.values() for x in v.split())
    reports = list((tmp_path / "data" / "reports" / "model_evaluation").glob("v-*/report.json"))
    assert reports and f"model comparison on the test split (model_evaluation: {reports[0]})" in out
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
