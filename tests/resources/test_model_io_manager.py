"""Trained Keras models under <data root>/models/<asset>/: versioned, published atomically, loaded in safe mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dagster import AssetKey, build_input_context, build_output_context

from resources.io_manager import CURRENT, current_version, publish_version
from resources.model_io_manager import (
    HISTORY_FILE,
    KerasModelIOManager,
    ModelNotTrained,
    TrainedModel,
    model_path,
    new_model_staging,
)
from resources.storage import StorageResource

RUN_ID = "1a2b3c4d-0000-4000-8000-123456789abc"


@pytest.fixture
def storage(tmp_path) -> StorageResource:
    return StorageResource(root=str(tmp_path / "data"))


# ---- model_path and new_model_staging -------------------------------------------------------------------


def test_model_path_of_a_model_never_trained_raises_model_not_trained(storage):
    with pytest.raises(ModelNotTrained, match="model 'hlf_classifier' has not been trained: materialize it first"):
        model_path(storage, "hlf_classifier")


def test_model_path_of_a_version_without_its_model_file_raises_model_not_trained(storage):
    staging = new_model_staging(storage, "hlf_classifier")
    (staging / HISTORY_FILE).write_text("{}\n")
    publish_version(staging, storage.models / "hlf_classifier", "v-1")  # a version, but no model.keras in it
    with pytest.raises(ModelNotTrained, match="'hlf_classifier'"):
        model_path(storage, "hlf_classifier")


def test_model_path_is_the_model_file_of_the_current_version(storage):
    for version in ("v-1", "v-2"):
        staging = new_model_staging(storage, "inclusive_classifier")
        (staging / "model.keras").write_bytes(version.encode())
        publish_version(staging, storage.models / "inclusive_classifier", version)
    path = model_path(storage, "inclusive_classifier")
    assert path == storage.models / "inclusive_classifier" / "v-2" / "model.keras"
    assert path.read_bytes() == b"v-2"


def test_each_staging_directory_is_new_hidden_and_beside_the_models_versions(storage):
    a = new_model_staging(storage, "hlf_classifier")
    b = new_model_staging(storage, "hlf_classifier")
    assert a != b
    for staging in (a, b):
        assert staging.is_dir() and not any(staging.iterdir())
        assert staging.parent == storage.models / "hlf_classifier"
        assert staging.name.startswith(".staging-") and len(staging.name) == len(".staging-") + 32
    # Staging alone publishes nothing.
    assert current_version(storage.models / "hlf_classifier") is None


# ---- KerasModelIOManager (imports TensorFlow) -----------------------------------------------------------


def _model(seed: int):
    from lhc_assets.ml.contract import keras_model

    return keras_model("hlf_classifier").build(seed=seed)


def _store(manager, name, trained, run_id=RUN_ID):
    context = build_output_context(asset_key=AssetKey(name), run_id=run_id)
    manager.handle_output(context, trained)
    return context.get_logged_metadata()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer:UserWarning")
def test_handle_output_publishes_a_version_with_the_model_and_its_history_and_load_input_reads_it(storage):
    manager = KerasModelIOManager(storage=storage)
    model = _model(seed=1)
    history = {"loss": [1.0, 0.5], "accuracy": [0.4, 0.75], "val_loss": [1.1, 0.6]}
    metadata = _store(manager, "hlf_classifier", TrainedModel(model, history, {"epochs_run": 2}))

    base = storage.models / "hlf_classifier"
    version = current_version(base)
    assert version is not None and version.parent == base
    # The version name is sortable by time and traceable to the run (its first 8 characters).
    assert version.name.startswith("v-") and "-1a2b3c4d-" in version.name
    assert sorted(p.name for p in version.iterdir()) == ["history.json", "model.keras"]
    assert json.loads((version / HISTORY_FILE).read_text()) == history
    assert sorted(p.name for p in base.iterdir()) == [CURRENT, version.name]  # no staging left behind
    assert metadata["epochs_run"].value == 2
    assert metadata["path"].value == str(version / "model.keras") == str(model_path(storage, "hlf_classifier"))

    loaded = manager.load_input(build_input_context(asset_key=AssetKey("hlf_classifier")))
    x = np.random.default_rng(0).uniform(size=(5, 14)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer:UserWarning")
def test_retraining_replaces_the_version_and_removes_the_previous_one(storage):
    manager = KerasModelIOManager(storage=storage)
    _store(manager, "hlf_classifier", TrainedModel(_model(seed=1), {"loss": [1.0]}), run_id="aaaaaaaa-1")
    first = current_version(storage.models / "hlf_classifier")
    second_model = _model(seed=2)
    _store(manager, "hlf_classifier", TrainedModel(second_model, {"loss": [0.5]}), run_id="bbbbbbbb-2")
    second = current_version(storage.models / "hlf_classifier")

    assert second != first and "-bbbbbbbb-" in second.name
    assert not first.exists()
    assert sorted(p.name for p in (storage.models / "hlf_classifier").iterdir()) == [CURRENT, second.name]
    assert json.loads((second / HISTORY_FILE).read_text()) == {"loss": [0.5]}
    loaded = manager.load_input(build_input_context(asset_key=AssetKey(["models", "hlf_classifier"])))
    x = np.ones((2, 14), np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), second_model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer:UserWarning")
def test_a_failed_save_keeps_the_previous_model_and_leaves_no_staging(storage):
    manager = KerasModelIOManager(storage=storage)
    _store(manager, "hlf_classifier", TrainedModel(_model(seed=1), {"loss": [1.0]}))
    good = current_version(storage.models / "hlf_classifier")

    # The model saves, then the history cannot be written as JSON: nothing is published.
    with pytest.raises(TypeError, match="not JSON serializable"):
        _store(manager, "hlf_classifier", TrainedModel(_model(seed=2), {"loss": {0.5}}))
    assert current_version(storage.models / "hlf_classifier") == good
    assert sorted(p.name for p in (storage.models / "hlf_classifier").iterdir()) == [CURRENT, good.name]
    assert json.loads((good / HISTORY_FILE).read_text()) == {"loss": [1.0]}


@pytest.mark.slow
def test_load_input_of_a_model_never_trained_raises_model_not_trained(storage):
    manager = KerasModelIOManager(storage=storage)
    with pytest.raises(ModelNotTrained, match="'particle_sequence_classifier'"):
        manager.load_input(build_input_context(asset_key=AssetKey("particle_sequence_classifier")))
