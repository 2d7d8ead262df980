"""Small JSON artifacts under <data root>/models/<asset>.json, and reports loaded from <data root>/reports/<asset>/."""

from __future__ import annotations

import json

import pytest
from dagster import AssetKey, build_input_context, build_output_context

from resources.io_manager import current_version, publish_version
from resources.json_io_manager import JsonIOManager, ReportIOManager
from resources.storage import StorageResource


@pytest.fixture
def storage(tmp_path) -> StorageResource:
    return StorageResource(root=str(tmp_path / "data"))


def _out(name):
    return build_output_context(asset_key=AssetKey(name))


def _in(name):
    return build_input_context(asset_key=AssetKey(name))


# ---- JsonIOManager --------------------------------------------------------------------------------------


def test_json_value_round_trips_through_one_file_per_asset(storage):
    manager = JsonIOManager(storage=storage)
    value = {"hlf": {"min": [0.0, -1.5], "max": [2.0, 3.25]}, "fitted_on": {"events": 42}, "ok": True, "none": None}
    context = _out("feature_scalers")
    manager.handle_output(context, value)

    path = storage.models / "feature_scalers.json"
    assert context.get_logged_metadata()["path"].value == str(path)
    assert manager.load_input(_in("feature_scalers")) == value
    # Stable, readable text: sorted keys, two-space indent, a final newline.
    assert path.read_text() == json.dumps(value, indent=2, sort_keys=True) + "\n"
    assert path.read_text().index('"fitted_on"') < path.read_text().index('"hlf"') < path.read_text().index('"none"')


def test_json_keeps_only_what_json_can_say(storage):
    manager = JsonIOManager(storage=storage)
    manager.handle_output(_out("search"), {"hidden": (50, 20), "per_class": {2: 5, 0: 7}})
    # A tuple comes back as a list, int keys as strings.
    assert manager.load_input(_in("search")) == {"hidden": [50, 20], "per_class": {"0": 7, "2": 5}}


def test_a_new_value_replaces_the_file_and_leaves_no_temporary_file(storage):
    manager = JsonIOManager(storage=storage)
    manager.handle_output(_out("hlf_hyperparameter_search"), {"best": "a"})
    manager.handle_output(_out("hlf_hyperparameter_search"), [1, 2, 3])
    assert manager.load_input(_in("hlf_hyperparameter_search")) == [1, 2, 3]
    assert [p.name for p in storage.models.iterdir()] == ["hlf_hyperparameter_search.json"]


def test_a_value_json_cannot_hold_keeps_the_previous_file_whole(storage):
    manager = JsonIOManager(storage=storage)
    manager.handle_output(_out("feature_scalers"), {"version": 1})
    with pytest.raises(TypeError, match="not JSON serializable"):
        manager.handle_output(_out("feature_scalers"), {"version": {2}})
    assert manager.load_input(_in("feature_scalers")) == {"version": 1}
    assert [p.name for p in storage.models.iterdir()] == ["feature_scalers.json"]


def test_loading_an_asset_never_materialized_names_it(storage):
    manager = JsonIOManager(storage=storage)
    with pytest.raises(FileNotFoundError, match=r"feature_scalers\.json does not exist: materialize feature_scalers"):
        manager.load_input(_in("feature_scalers"))


def test_the_file_is_named_after_the_last_part_of_the_asset_key(storage):
    manager = JsonIOManager(storage=storage)
    manager.handle_output(build_output_context(asset_key=AssetKey(["prefix", "scalers"])), {"a": 1})
    assert (storage.models / "scalers.json").is_file()
    assert manager.load_input(build_input_context(asset_key=AssetKey(["other", "scalers"]))) == {"a": 1}


@pytest.mark.parametrize("name", ["", ".hidden", "a/b"])
def test_names_that_are_not_a_plain_file_name_are_refused(storage, name):
    with pytest.raises(ValueError, match="invalid asset name for a path"):
        JsonIOManager(storage=storage).path(name)


# ---- ReportIOManager ------------------------------------------------------------------------------------


def _publish_report(storage, name, report, version="v-1"):
    staging = storage.reports / name / f".staging-{version}"
    staging.mkdir(parents=True)
    if report is not None:
        (staging / "report.json").write_text(json.dumps(report))
    (staging / "roc_QCD.png").write_bytes(b"png")
    return publish_version(staging, storage.reports / name, version)


def test_report_of_the_current_version_is_loaded(storage):
    manager = ReportIOManager(storage=storage)
    _publish_report(storage, "model_evaluation", {"models": {"a": {"accuracy": 0.5}}}, "v-1")
    _publish_report(storage, "model_evaluation", {"models": {"a": {"accuracy": 0.75}}}, "v-2")
    assert manager.load_input(_in("model_evaluation")) == {"models": {"a": {"accuracy": 0.75}}}


def test_handle_output_accepts_a_published_report_and_writes_nothing(storage):
    manager = ReportIOManager(storage=storage)
    version = _publish_report(storage, "model_evaluation", {"classes": ["QCD"]})
    before = sorted(p.relative_to(storage.root_path) for p in storage.root_path.rglob("*"))
    manager.handle_output(_out("model_evaluation"), {"a value": "the asset also returned"})
    assert sorted(p.relative_to(storage.root_path) for p in storage.root_path.rglob("*")) == before
    assert current_version(storage.reports / "model_evaluation") == version
    assert json.loads((version / "report.json").read_text()) == {"classes": ["QCD"]}


def test_handle_output_without_a_published_report_is_an_error(storage):
    manager = ReportIOManager(storage=storage)
    with pytest.raises(RuntimeError, match=r"model_evaluation did not publish its report\.json"):
        manager.handle_output(_out("model_evaluation"), {})
    _publish_report(storage, "model_evaluation", None)  # a version with figures but no report.json
    with pytest.raises(RuntimeError, match=r"did not publish its report\.json"):
        manager.handle_output(_out("model_evaluation"), {})


def test_loading_a_report_never_materialized_names_the_asset(storage):
    manager = ReportIOManager(storage=storage)
    with pytest.raises(FileNotFoundError, match=r"no report under .*/reports/model_evaluation: materialize "
                                                r"model_evaluation first"):
        manager.load_input(_in("model_evaluation"))
    _publish_report(storage, "model_evaluation", None)
    with pytest.raises(FileNotFoundError, match="materialize model_evaluation first"):
        manager.load_input(_in("model_evaluation"))


@pytest.mark.parametrize("name", ["", ".staging-x", "a/b"])
def test_report_names_that_are_not_a_plain_directory_name_are_refused(storage, name):
    with pytest.raises(ValueError, match="invalid asset name for a path"):
        ReportIOManager(storage=storage)._report(name)
