"""Trained models under <data root>/models/<asset>/: versioned, published atomically, loaded in safe mode (Keras)
or handed over as a ModelRef to inputs typed so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dagster import (
    AssetIn,
    AssetKey,
    PythonObjectDagsterType,
    asset,
    build_input_context,
    build_output_context,
    materialize,
)

from resources.model_io_manager import (
    HISTORY_FILE,
    SPARK_MODEL_DIR,
    KerasModelIOManager,
    ModelNotTrained,
    TrainedModel,
    TrainedSparkModel,
    model_path,
    model_ref,
    model_scratch,
)
from resources.publisher import CURRENT, STAGING_PREFIX, current_version, publish
from resources.references import ModelRef
from resources.storage import StorageResource


@pytest.fixture(autouse=True)
def _one_version_at_a_time(monkeypatch):
    """Keep no previous version, so that listings show exactly what a write published (retention is tested in
    test_publisher.py)."""
    monkeypatch.setenv("LHC_KEEP_VERSIONS", "0")

RUN_ID = "1a2b3c4d-0000-4000-8000-123456789abc"


@pytest.fixture
def storage(tmp_path) -> StorageResource:
    return StorageResource(root=str(tmp_path / "data"))


def _listing(path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def _files(files: dict[str, bytes]):
    def write(staging: Path) -> None:
        for name, data in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)

    return write


def _store(manager, name, trained, run_id=RUN_ID):
    context = build_output_context(asset_key=AssetKey(name), run_id=run_id)
    manager.handle_output(context, trained)
    return context.get_logged_metadata()


def _in(key, typing_type=None):
    """An input context as Dagster builds it: the input's dagster type from its Python type (None: any object)."""
    dagster_type = PythonObjectDagsterType(object if typing_type is None else typing_type)
    return build_input_context(asset_key=AssetKey(key), dagster_type=dagster_type)


class _FakeKerasModel:
    """What the IO manager asks of a Keras model: ``save(path)`` writes one file (or fails half-way)."""

    def __init__(self, weights: bytes, fail: Exception | None = None):
        self.weights, self.fail = weights, fail

    def save(self, path) -> None:
        Path(path).write_bytes(self.weights[: len(self.weights) // 2] if self.fail else self.weights)
        if self.fail:
            raise self.fail


class _FakeSparkModel:
    """What the IO manager asks of a Spark ML model: ``write().save(path)`` with a str path, creating that directory
    (Spark's default save mode refuses an existing one) and its metadata/stages (or failing half-way)."""

    def __init__(self, uid: str, fail: Exception | None = None):
        self.uid, self.fail = uid, fail

    def write(self):
        return self

    def save(self, path) -> None:
        assert isinstance(path, str), "Spark ML's save takes a str path"
        if Path(path).exists():
            raise FileExistsError(f"path {path} already exists")
        (Path(path) / "metadata").mkdir(parents=True)
        (Path(path) / "metadata" / "part-00000").write_text(json.dumps({"uid": self.uid}))
        if self.fail:
            raise self.fail
        (Path(path) / "stages").mkdir()


# ---- model_ref, model_path ------------------------------------------------------------------------------


def test_a_model_never_trained_raises_model_not_trained(storage):
    with pytest.raises(ModelNotTrained, match="model 'hlf_classifier' has not been trained: materialize it first"):
        model_path(storage, "hlf_classifier")
    with pytest.raises(ModelNotTrained, match="'hlf_classifier'"):
        model_ref(storage, "hlf_classifier")


def test_a_version_without_a_model_in_it_raises_model_not_trained(storage):
    publish(storage.models / "hlf_classifier", "v-1", _files({HISTORY_FILE: b"{}\n"}))
    with pytest.raises(ModelNotTrained, match="'hlf_classifier'"):
        model_path(storage, "hlf_classifier")


def test_model_path_is_the_model_file_of_the_current_version(storage):
    for version in ("v-1", "v-2"):
        publish(storage.models / "inclusive_classifier", version, _files({
            "model.keras": version.encode()}))
    path = model_path(storage, "inclusive_classifier")
    assert path == storage.models / "inclusive_classifier" / "v-2" / "model.keras"
    assert path.read_bytes() == b"v-2"
    assert model_ref(storage, "inclusive_classifier") == ModelRef("inclusive_classifier", path)


def test_the_model_of_a_spark_ml_version_is_its_model_directory(storage):
    publish(storage.models / "random_forest_baseline", "v-1", _files({
        f"{SPARK_MODEL_DIR}/metadata/part-00000": b"{}"}))
    ref = model_ref(storage, "random_forest_baseline")
    assert ref == ModelRef("random_forest_baseline", storage.models / "random_forest_baseline" / "v-1" / "model")
    assert model_path(storage, "random_forest_baseline") == ref.path


# ---- model_scratch --------------------------------------------------------------------------------------


def test_model_scratch_is_a_fresh_hidden_directory_beside_the_versions_removed_afterwards(storage):
    base = storage.models / "hlf_classifier"
    publish(base, "v-1", _files({"model.keras": b"good"}))
    with model_scratch(storage, "hlf_classifier") as a, model_scratch(storage, "hlf_classifier") as b:
        assert a != b
        for scratch in (a, b):
            assert scratch.is_dir() and not any(scratch.iterdir())
            assert scratch.parent == base and scratch.name.startswith(STAGING_PREFIX)
        (a / "sample.npz").write_bytes(b"x")
        (b / "checkpoints").mkdir()
    assert not a.exists() and not b.exists()
    # Scratch space publishes nothing and leaves the current model alone.
    assert _listing(base) == [CURRENT, "v-1"]
    assert model_path(storage, "hlf_classifier").read_bytes() == b"good"


def test_model_scratch_is_removed_when_the_training_fails(storage):
    with pytest.raises(RuntimeError, match="worker lost"), model_scratch(storage, "hlf_classifier") as scratch:
        (scratch / "checkpoint.weights.h5").write_bytes(b"x")
        raise RuntimeError("worker lost")
    assert not scratch.exists()
    assert _listing(storage.models / "hlf_classifier") == []
    with pytest.raises(ModelNotTrained):
        model_path(storage, "hlf_classifier")


# ---- KerasModelIOManager: publishing (what the manager does with any model's save) ------------------------


def test_a_trained_model_is_published_as_a_version_with_its_history(storage):
    manager = KerasModelIOManager(storage=storage)
    history = {"loss": [1.0, 0.5], "accuracy": [0.4, 0.75]}
    metadata = _store(manager, "hlf_classifier", TrainedModel(_FakeKerasModel(b"weights"), history, {"epochs": 2}))

    base = storage.models / "hlf_classifier"
    version = current_version(base)
    assert version is not None and version.name.startswith("v-") and "-1a2b3c4d-" in version.name
    assert _listing(version) == [HISTORY_FILE, "model.keras"]
    assert (version / "model.keras").read_bytes() == b"weights"
    assert (version / HISTORY_FILE).read_text() == json.dumps(history, indent=2) + "\n"
    assert _listing(base) == [CURRENT, version.name]  # no staging left behind
    assert metadata["epochs"].value == 2
    assert metadata["path"].value == str(version / "model.keras") == str(model_path(storage, "hlf_classifier"))


def test_a_failing_model_save_keeps_the_previous_model_and_leaves_no_staging(storage):
    manager = KerasModelIOManager(storage=storage)
    _store(manager, "hlf_classifier", TrainedModel(_FakeKerasModel(b"good weights"), {"loss": [1.0]}))
    good = current_version(storage.models / "hlf_classifier")

    # model.save writes half a file, then fails: nothing is published, the half file is gone.
    with pytest.raises(OSError, match="No space left"):
        _store(manager, "hlf_classifier", TrainedModel(_FakeKerasModel(b"new weights", OSError("No space left")),
                                                       {"loss": [0.5]}))
    assert current_version(storage.models / "hlf_classifier") == good
    assert _listing(storage.models / "hlf_classifier") == [CURRENT, good.name]
    assert (good / "model.keras").read_bytes() == b"good weights"
    assert json.loads((good / HISTORY_FILE).read_text()) == {"loss": [1.0]}


def test_a_first_training_that_fails_to_save_publishes_nothing(storage):
    manager = KerasModelIOManager(storage=storage)
    with pytest.raises(OSError):
        _store(manager, "hlf_classifier", TrainedModel(_FakeKerasModel(b"w", OSError("disk")), {}))
    assert _listing(storage.models / "hlf_classifier") == []
    with pytest.raises(ModelNotTrained):
        manager.load_input(_in("hlf_classifier", ModelRef))


def test_a_spark_ml_model_is_published_as_its_model_directory(storage):
    manager = KerasModelIOManager(storage=storage)
    metadata = _store(manager, "random_forest_baseline", TrainedSparkModel(_FakeSparkModel("rf_1"), {"trees": 20}))

    base = storage.models / "random_forest_baseline"
    version = current_version(base)
    assert _listing(version) == [SPARK_MODEL_DIR]
    assert _listing(version / SPARK_MODEL_DIR) == ["metadata", "stages"]
    assert _listing(base) == [CURRENT, version.name]
    assert metadata["trees"].value == 20
    assert metadata["path"].value == str(version / SPARK_MODEL_DIR)
    assert manager.load_input(_in("random_forest_baseline", ModelRef)) == ModelRef(
        "random_forest_baseline", version / SPARK_MODEL_DIR)


def test_retraining_a_spark_ml_model_replaces_it_and_a_failed_save_keeps_it(storage):
    manager = KerasModelIOManager(storage=storage)
    _store(manager, "random_forest_baseline", TrainedSparkModel(_FakeSparkModel("rf_1")), run_id="aaaaaaaa-1")
    first = current_version(storage.models / "random_forest_baseline")
    _store(manager, "random_forest_baseline", TrainedSparkModel(_FakeSparkModel("rf_2")), run_id="bbbbbbbb-2")
    second = current_version(storage.models / "random_forest_baseline")
    assert second != first and not first.exists() and "-bbbbbbbb-" in second.name

    with pytest.raises(RuntimeError, match="executor lost"):
        _store(manager, "random_forest_baseline", TrainedSparkModel(_FakeSparkModel("rf_3", RuntimeError(
            "executor lost"))))
    assert current_version(storage.models / "random_forest_baseline") == second
    assert _listing(storage.models / "random_forest_baseline") == [CURRENT, second.name]
    ref = manager.load_input(_in("random_forest_baseline", ModelRef))
    assert json.loads((ref.path / "metadata" / "part-00000").read_text()) == {"uid": "rf_2"}


def test_the_model_directory_is_named_after_the_last_part_of_the_asset_key(storage):
    manager = KerasModelIOManager(storage=storage)
    manager.handle_output(build_output_context(asset_key=AssetKey(["models", "hlf_classifier"])),
                          TrainedModel(_FakeKerasModel(b"w"), {}))
    assert model_path(storage, "hlf_classifier").read_bytes() == b"w"
    assert manager.load_input(_in(["other", "hlf_classifier"], ModelRef)).asset == "hlf_classifier"


# ---- KerasModelIOManager: loading -----------------------------------------------------------------------


def test_an_input_typed_model_ref_gets_the_current_version_without_loading_it(storage):
    manager = KerasModelIOManager(storage=storage)
    _store(manager, "hlf_classifier", TrainedModel(_FakeKerasModel(b"not a keras file"), {}))
    # Not a loadable .keras file: a ModelRef input never opens it.
    assert manager.load_input(_in("hlf_classifier", ModelRef)) == ModelRef(
        "hlf_classifier", current_version(storage.models / "hlf_classifier") / "model.keras")


@pytest.mark.parametrize("typing_type", [None, ModelRef])
def test_loading_a_model_never_trained_raises_model_not_trained(storage, typing_type):
    manager = KerasModelIOManager(storage=storage)
    with pytest.raises(ModelNotTrained, match="'particle_sequence_classifier'"):
        manager.load_input(_in("particle_sequence_classifier", typing_type))


@pytest.mark.filterwarnings("ignore:InitResourceContext.dagster_run is deprecated:DeprecationWarning")
def test_assets_asking_for_a_model_ref_get_one_through_dagster(storage):
    """Both ways an asset asks for a reference: the parameter's annotation and AssetIn(dagster_type=ModelRef)."""
    seen = {}

    @asset(io_manager_key="model_io_manager")
    def hlf_classifier() -> TrainedModel:
        return TrainedModel(_FakeKerasModel(b"weights"), {"loss": [1.0]}, {"epochs": 1})

    @asset
    def by_annotation(hlf_classifier: ModelRef) -> None:
        seen["annotation"] = hlf_classifier

    @asset(ins={"model": AssetIn("hlf_classifier", dagster_type=ModelRef)})
    def by_asset_in(model) -> None:
        seen["asset_in"] = model

    result = materialize([hlf_classifier, by_annotation, by_asset_in],
                         resources={"model_io_manager": KerasModelIOManager(storage=storage)})
    assert result.success
    path = model_path(storage, "hlf_classifier")
    assert seen == {"annotation": ModelRef("hlf_classifier", path), "asset_in": ModelRef("hlf_classifier", path)}
    assert result.asset_materializations_for_node("hlf_classifier")[0].metadata["path"].value == str(path)
    assert path.parent.name.startswith("v-") and f"-{result.run_id[:8]}-" in path.parent.name


# ---- KerasModelIOManager with real Keras models (imports TensorFlow) --------------------------------------


def _model(seed: int):
    from lhc_assets.ml.contract import keras_model

    return keras_model("hlf_classifier").build(seed=seed)


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer:UserWarning")
def test_a_keras_model_round_trips_and_loads_in_safe_mode(storage):
    manager = KerasModelIOManager(storage=storage)
    model = _model(seed=1)
    history = {"loss": [1.0, 0.5], "accuracy": [0.4, 0.75], "val_loss": [1.1, 0.6]}
    metadata = _store(manager, "hlf_classifier", TrainedModel(model, history, {"epochs_run": 2}))

    base = storage.models / "hlf_classifier"
    version = current_version(base)
    assert _listing(version) == [HISTORY_FILE, "model.keras"]
    assert json.loads((version / HISTORY_FILE).read_text()) == history
    assert _listing(base) == [CURRENT, version.name]
    assert metadata["path"].value == str(version / "model.keras")

    loaded = manager.load_input(_in("hlf_classifier"))
    x = np.random.default_rng(0).uniform(size=(5, 14)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer:UserWarning")
def test_retraining_a_keras_model_replaces_the_version_and_removes_the_previous_one(storage):
    manager = KerasModelIOManager(storage=storage)
    _store(manager, "hlf_classifier", TrainedModel(_model(seed=1), {"loss": [1.0]}), run_id="aaaaaaaa-1")
    first = current_version(storage.models / "hlf_classifier")
    second_model = _model(seed=2)
    _store(manager, "hlf_classifier", TrainedModel(second_model, {"loss": [0.5]}), run_id="bbbbbbbb-2")
    second = current_version(storage.models / "hlf_classifier")

    assert second != first and "-bbbbbbbb-" in second.name
    assert not first.exists()
    assert _listing(storage.models / "hlf_classifier") == [CURRENT, second.name]
    loaded = manager.load_input(_in(["models", "hlf_classifier"]))
    x = np.ones((2, 14), np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), second_model.predict(x, verbose=0), atol=1e-6)


def test_a_keras_model_saved_but_its_history_not_keeps_the_previous_model(storage):
    manager = KerasModelIOManager(storage=storage)
    _store(manager, "hlf_classifier", TrainedModel(_model(seed=1), {"loss": [1.0]}))
    good = current_version(storage.models / "hlf_classifier")
    good_model = (good / "model.keras").read_bytes()

    # The model saves, then the history cannot be written as JSON: nothing is published.
    with pytest.raises(TypeError, match="not JSON serializable"):
        _store(manager, "hlf_classifier", TrainedModel(_model(seed=2), {"loss": {0.5}}))
    assert current_version(storage.models / "hlf_classifier") == good
    assert _listing(storage.models / "hlf_classifier") == [CURRENT, good.name]
    assert (good / "model.keras").read_bytes() == good_model
    assert json.loads((good / HISTORY_FILE).read_text()) == {"loss": [1.0]}


# ---- ExportedModels: files an export asset wrote, published as one version with a manifest ---------------------


def test_exported_files_become_one_version_with_their_manifest_and_the_staging_goes(storage):
    from resources.model_io_manager import MANIFEST_FILE, ExportedModels, export_staging

    manager = KerasModelIOManager(storage=storage)
    out = export_staging(storage, "onnx_models")
    assert out.parent == storage.models / "onnx_models" and out.name.startswith(STAGING_PREFIX)
    (out / "hlf_classifier.onnx").write_bytes(b"onnx")
    (out / "hls_project" / "firmware").mkdir(parents=True)
    (out / "hls_project" / "firmware" / "net.cpp").write_text("// c++")
    manifest = {"models": {"hlf_classifier": {"max_abs_difference": 1e-7}}}
    metadata = _store(manager, "onnx_models", ExportedModels(out, manifest, {"opset": 17}))

    version = current_version(storage.models / "onnx_models")
    assert _listing(version) == ["hlf_classifier.onnx", "hls_project", MANIFEST_FILE]
    assert (version / "hls_project" / "firmware" / "net.cpp").read_text() == "// c++"
    assert _listing(storage.models / "onnx_models") == [CURRENT, version.name]  # the asset's staging is gone too
    assert metadata["opset"].value == 17 and metadata["path"].value == str(version / MANIFEST_FILE)
    # Loaded back as the manifest, or as a reference to it.
    assert manager.load_input(_in("onnx_models")) == manifest
    assert manager.load_input(_in("onnx_models", ModelRef)) == ModelRef("onnx_models", version / MANIFEST_FILE)


def test_an_export_that_fails_to_publish_keeps_the_previous_version_and_leaves_nothing(storage):
    from resources.model_io_manager import MANIFEST_FILE, ExportedModels, export_staging

    manager = KerasModelIOManager(storage=storage)
    first = export_staging(storage, "onnx_models")
    (first / "a.onnx").write_bytes(b"1")
    _store(manager, "onnx_models", ExportedModels(first, {"n": 1}))
    good = current_version(storage.models / "onnx_models")

    bad = export_staging(storage, "onnx_models")
    (bad / MANIFEST_FILE).write_text("{}")  # a file the manager must write itself
    with pytest.raises(ValueError, match="written from the manifest"):
        _store(manager, "onnx_models", ExportedModels(bad, {"n": 2}))
    assert current_version(storage.models / "onnx_models") == good
    assert _listing(storage.models / "onnx_models") == [CURRENT, good.name]
    assert manager.load_input(_in("onnx_models")) == {"n": 1}
