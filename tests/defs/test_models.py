"""The model assets materialized for real on generated files: search, classifiers, forest, scores, evaluation."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey

from tests.defs.conftest import failure_messages

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[2]
KERAS_MODELS = ("hlf_classifier", "particle_sequence_classifier", "inclusive_classifier", "image_classifier")
# Small everything: the test checks the plumbing and the artifacts, not the physics performance.
TINY = {"ops": {
    "hlf_hyperparameter_search": {"config": {"batch_sizes": [32], "epochs": [1], "hidden_units": [[8, 16], [4], [4]],
                                             "sample_fraction": 1.0, "folds": 2, "parallelism": 2}},
    "hlf_classifier": {"config": {"epochs": 2, "batch_size": 32}},
    "particle_sequence_classifier": {"config": {"epochs": 1, "batch_size": 32}},
    # The particle-sequence model reads whole lists bucketed by length (the default), the inclusive one the 128
    # particles nearest the lepton.
    "inclusive_classifier": {"config": {"epochs": 1, "batch_size": 32, "sequence_steps": 128}},
    "image_classifier": {"config": {"epochs": 1, "batch_size": 32, "eta_bins": 16, "phi_bins": 12,
                                    "filters": [4, 8], "dense_units": 8}},
    "random_forest_baseline": {"config": {"num_trees": 5, "max_depth": 3}},
    "onnx_models": {"config": {"timing_events": 32, "timing_seconds": 0.05}},
}}


def _models_run(platform, selection: list[str] | None = None):
    job = platform.defs.resolve_job_def("models_job")
    ops = {k: v for k, v in TINY["ops"].items() if selection is None or k in selection}
    return job.execute_in_process(instance=platform.instance, raise_on_error=False, run_config={"ops": ops},
                                  asset_selection=[AssetKey(a) for a in selection] if selection else None)


def _metadata(platform, asset: str) -> dict:
    event = platform.instance.get_latest_materialization_event(AssetKey(asset))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_models_graph_trains_saves_scores_and_evaluates(platform, generated_files, capsys):
    import keras

    from lhc_assets.ml.inference import predict_arrays
    from lhc_assets.ml.models import load
    from lhc_assets.ml.readers import load_arrays
    from resources.io_manager import materialized_path

    keys = [platform.add_file(s, p) for s, p in generated_files.items()]
    assert platform.materialize(keys).success
    # Small dataset files (one HLF row group each), so that two training workers each get a shard of the
    # tiny HLF train set.
    data = platform.defs.resolve_job_def("training_data_job").execute_in_process(
        instance=platform.instance, run_config={"ops": {"training_datasets": {"config": {"events_per_file": 64}}}})
    assert data.success
    result = _models_run(platform)
    assert result.success, failure_messages(result)
    storage = platform.defs.resources["storage"]
    models_root = platform.root / "models"

    # The search ran every trial of the grid on Spark and kept the best.
    search = json.loads((models_root / "hlf_hyperparameter_search.json").read_text())
    assert [t["hidden"] for t in sorted(search["trials"], key=lambda t: t["hidden"])] == [[8, 4, 4], [16, 4, 4]]
    assert search["best"] in search["trials"] and all(0 <= t["mean_val_accuracy"] <= 1 for t in search["trials"])

    # Native .keras files (no pickle) with their history; they load in safe mode and give the Spark scores.
    scores = pq.read_table(materialized_path(storage, "event_scores")).to_pandas()
    test = pq.read_table(materialized_path(storage, "test_set"), columns=["sample", "file", "entry"]).to_pandas()
    assert len(scores) == len(test) > 0
    scores = scores.set_index(["sample", "file", "entry"]).loc[list(test.itertuples(index=False, name=None))]
    x, labels = load_arrays(materialized_path(storage, "test_set"), "inclusive")
    np.testing.assert_array_equal(scores["label"].to_numpy(), np.argmax(labels, axis=1))
    for name in KERAS_MODELS:
        version = next(p for p in (models_root / name).iterdir() if p.name.startswith("v-"))
        assert sorted(p.name for p in version.iterdir()) == ["history.json", "model.keras"]
        history = json.loads((version / "history.json").read_text())
        assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
        model = load(version / "model.keras")
        expected = predict_arrays(model, x["hlf_input"], x["gru_input"])
        np.testing.assert_allclose(np.stack(scores[name].to_numpy()), expected, atol=1e-5)
        meta = _metadata(platform, name)
        assert meta["parameters"] == model.count_params() and meta["samples_per_s"] > 0
        assert meta["training_curves"].startswith("![") and "data:image/png;base64," in meta["training_curves"]
    assert _metadata(platform, "hlf_classifier")["parameters"] == 2013
    assert _metadata(platform, "inclusive_classifier")["parameters"] == 12353
    # The image classifier shows what it sees: the average image per class, on its configured grid.
    image_meta = _metadata(platform, "image_classifier")
    assert image_meta["image_shape"] == [16, 12, 5] and "data:image/png;base64," in image_meta["event_images"]

    # Spark ML persistence for the forest.
    forest = next(p for p in (models_root / "random_forest_baseline").iterdir() if p.name.startswith("v-"))
    assert (forest / "model" / "metadata").is_dir() and (forest / "model" / "stages").is_dir()

    # The report covers every model and class, with figures; the trigger summary has every target.
    report_dir = next(p for p in (platform.root / "reports" / "model_evaluation").iterdir() if p.name.startswith("v-"))
    report = json.loads((report_dir / "report.json").read_text())
    assert set(report["models"]) == {*KERAS_MODELS, "random_forest_baseline"}
    for name, r in report["models"].items():
        assert r["n_events"] == len(test), name
        assert set(r["auc"]) == {"QCD", "ttbar", "W+jets"} and all(0 <= a <= 1 for a in r["auc"].values())
        matrix = np.asarray(r["confusion_matrix"])
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-9)
    assert {p.name for p in report_dir.glob("*.png")} >= {"roc_QCD.png", "roc_ttbar.png", "roc_W+jets.png"}
    # The report is also an asset value, loadable through Dagster (the notebook does this).
    assert platform.defs.load_asset_value("model_evaluation", instance=platform.instance) == report
    trigger = _metadata(platform, "event_scores")["trigger"]
    assert sorted((r["model"], r["signal_efficiency_target"]) for r in trigger) == sorted(
        (m, e) for m in KERAS_MODELS for e in (0.99, 0.95, 0.90))
    assert all(r["signal_efficiency"] >= r["signal_efficiency_target"] - 0.05 for r in trigger)
    checks = {e.event_specific_data.check_name for e in result.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks == {"models_beat_chance", "inclusive_not_worse_than_hlf", "onnx_matches_keras"}
    assert all(e.event_specific_data.passed for e in result.all_events
               if e.event_type_value == "ASSET_CHECK_EVALUATION"
               and e.event_specific_data.check_name == "onnx_matches_keras")

    # Every Keras classifier exported to ONNX in one version; ONNX Runtime's test-split probabilities are the ones
    # Spark computed with Keras (same events, same order), and the manifest times both runtimes.
    onnx_dir = models_root / "onnx_models" / _current_name(models_root, "onnx_models")
    assert sorted(p.name for p in onnx_dir.iterdir()) == sorted(
        ["manifest.json", *(f"{m}.onnx" for m in KERAS_MODELS), *(f"{m}.scores.parquet" for m in KERAS_MODELS)])
    manifest = platform.defs.load_asset_value("onnx_models", instance=platform.instance)
    for name in KERAS_MODELS:
        entry = manifest["models"][name]
        assert entry["max_abs_difference"] < 1e-5 and entry["onnx"]["latency_ms_batch1"] > 0, name
        onnx_scores = pq.read_table(onnx_dir / entry["scores"]).column("probabilities").to_pylist()
        if name != "hlf_classifier":  # reads hlf_test_set, not test_set
            assert entry["events"] == len(test)
            np.testing.assert_allclose(np.asarray(onnx_scores), np.stack(scores[name].to_numpy()), atol=1e-5)
    assert _metadata(platform, "onnx_models")["max_abs_difference"] < 1e-5

    # The HLF classifier in hls4ml's fixed-point C simulation (on demand: deployment_job), two precisions; the
    # trigger menu reads the exported scores of both assets.
    fpga = platform.defs.resolve_job_def("deployment_job").execute_in_process(
        instance=platform.instance, raise_on_error=False, asset_selection=[AssetKey("fpga_hlf_classifier")],
        run_config={"ops": {"fpga_hlf_classifier": {"config": {"precisions": ["ap_fixed<16,6>", "ap_fixed<6,2>"]}}}})
    assert fpga.success, failure_messages(fpga)
    fpga_dir = models_root / "fpga_hlf_classifier" / _current_name(models_root, "fpga_hlf_classifier")
    emulated = platform.defs.load_asset_value("fpga_hlf_classifier", instance=platform.instance)
    scan = emulated["scan"]
    assert [r["precision"] for r in scan["fixed"]] == ["ap_fixed<16,6>", "ap_fixed<6,2>"]
    assert scan["n_events"] == sum(pq.read_metadata(f).num_rows
                                   for f in materialized_path(storage, "hlf_test_set").glob("*.parquet"))
    wide, narrow = scan["fixed"]
    assert wide["max_abs_diff"] < 0.02 < narrow["max_abs_diff"]  # 16 bits follow float, 6 bits do not
    for name, entry in emulated["models"].items():
        assert (fpga_dir / entry["scores"]).is_file(), name
    if emulated["chosen_precision"] is not None:
        assert (fpga_dir / "hls_project").is_dir() and list((fpga_dir / "hls_project").rglob("*.cpp"))
    assert _metadata(platform, "fpga_hlf_classifier")["chosen_precision"] == (emulated["chosen_precision"] or "none")
    from lhc_assets.cli.lhc import main as lhc

    for source, models in (("onnx", set(KERAS_MODELS)),
                           ("fpga", {f"hlf_classifier@{p}" for p in ("float", "ap_fixed<16,6>", "ap_fixed<6,2>")})):
        assert lhc(["trigger-menu", "--source", source, "--efficiency", "0.9", "--json"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        assert {r["model"] for r in rows} == models and all(r["efficiency"]["ttbar"] >= 0.9 for r in rows), rows

    # benchmarks/deployment.py on these trained models (its own process): ONNX and Keras timed, the C simulation.
    bench = subprocess.run([sys.executable, "benchmarks/deployment.py", "--quick", "--data-root", str(platform.root)],
                           cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                           timeout=600, check=False)
    assert bench.returncode == 0, bench.stderr[-3000:]
    figures = json.loads(bench.stdout.strip().splitlines()[-1])
    assert set(figures["onnx"]) == set(KERAS_MODELS)
    for name, m in figures["onnx"].items():
        assert m["max_abs_difference"] < 1e-5 and m["speedup_batch1"] > 0, name
        assert m["onnx"]["events_per_s_batch1024"] > 0 and m["keras"]["latency_ms_batch1"] > 0, name
    assert figures["fpga"]["precisions"]["ap_fixed<16,6>"]["c_simulation_events_per_s"] > 0
    # The model says how many rows it reads; scoring above fed it exactly those.
    assert _metadata(platform, "particle_sequence_classifier")["sequence_steps"] == 801
    assert _metadata(platform, "inclusive_classifier")["sequence_steps"] == 128

    # Same seed, same data: the retrained HLF classifier gives the same predictions (CPU, small tolerance).
    before = keras.saving.load_model(models_root / "hlf_classifier" / _current_name(models_root, "hlf_classifier")
                                     / "model.keras", safe_mode=True)
    again = _models_run(platform, ["hlf_classifier"])
    assert again.success, failure_messages(again)
    after = keras.saving.load_model(models_root / "hlf_classifier" / _current_name(models_root, "hlf_classifier")
                                    / "model.keras", safe_mode=True)
    np.testing.assert_allclose(after.predict(x["hlf_input"], verbose=0), before.predict(x["hlf_input"], verbose=0),
                               atol=1e-4)


    # Any feature partition can be scored, not only the test split: one file's events get the same
    # probabilities as the same events in event_scores (the inputs are built the same way).
    key = keys[0]
    scored = platform.defs.resolve_job_def("file_scores_job").execute_in_process(
        instance=platform.instance, partition_key=key, raise_on_error=False)
    assert scored.success, failure_messages(scored)
    per_file = pq.read_table(materialized_path(storage, "file_event_scores", key)).to_pandas()
    selected = pq.read_table(materialized_path(storage, "hlf_features", key), columns=["entry"]).num_rows
    assert len(per_file) == selected > 0 and _metadata(platform, "file_event_scores")["events_scored"] == selected
    common = per_file.set_index(["sample", "file", "entry"]).join(scores, how="inner", rsuffix="_test")
    assert len(common) > 0  # the file's events that are also in the test split
    for name in KERAS_MODELS:
        np.testing.assert_allclose(np.stack(common[name].to_numpy()), np.stack(common[f"{name}_test"].to_numpy()),
                                   atol=1e-5)
    np.testing.assert_array_equal(common["label"], common["label_test"])

    # The same asset trained data-parallel by two worker processes (MultiWorkerMirroredStrategy), by config only.
    job = platform.defs.resolve_job_def("models_job")
    distributed = job.execute_in_process(
        instance=platform.instance, raise_on_error=False, asset_selection=[AssetKey("hlf_classifier")],
        run_config={"ops": {"hlf_classifier": {"config": {"epochs": 2, "batch_size": 16,
                                                          "distribution": "multi_worker", "workers": 2}}}})
    assert distributed.success, failure_messages(distributed)
    meta = _metadata(platform, "hlf_classifier")
    assert meta["distribution"] == "multi_worker" and meta["workers"] == 2
    assert set(meta["worker_samples"]) == {"0", "1"} and all(n > 0 for n in meta["worker_samples"].values())
    keras.saving.load_model(meta["path"], safe_mode=True)


def _current_name(models_root, name: str) -> str:
    return (models_root / name / "CURRENT").read_text().strip()


def test_training_without_training_data_fails_with_a_clear_message(platform):
    result = _models_run(platform, ["hlf_classifier"])
    assert not result.success
    # Whichever of its two datasets is loaded first is named.
    assert re.search(r"asset 'hlf_t(rain|est)_set' has not been materialized: materialize it first",
                     failure_messages(result))
    assert not (platform.root / "models" / "hlf_classifier").exists() or not any(
        p.name.startswith("v-") for p in (platform.root / "models" / "hlf_classifier").iterdir())
