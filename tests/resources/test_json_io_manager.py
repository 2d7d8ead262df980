"""Small JSON artifacts under <data root>/models/<asset>.json, and reports with their figures published as versions
of <data root>/reports/<asset>/."""

from __future__ import annotations

import json

import pytest
from dagster import AssetKey, build_input_context, build_output_context

from resources.json_io_manager import REPORT_FILE, JsonIOManager, Report, ReportIOManager
from resources.publisher import CURRENT, STAGING_PREFIX, current_version, publish
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


def _out(name, run_id=RUN_ID):
    return build_output_context(asset_key=AssetKey(name), run_id=run_id)


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

PNG = b"\x89PNG\r\n\x1a\n"


def _listing(path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def _report(accuracy: float, figures=("roc_QCD.png", "roc_W.png")) -> Report:
    return Report({"models": {"hlf_classifier": {"accuracy": accuracy, "auc": {"QCD": 0.9}}}, "classes": ["QCD"]},
                  {name: PNG + name.encode() for name in figures}, {"test_events": 42})


def test_a_report_and_its_figures_are_published_as_one_version(storage):
    manager = ReportIOManager(storage=storage)
    report = _report(0.75)
    context = _out("model_evaluation")
    manager.handle_output(context, report)

    base = storage.reports / "model_evaluation"
    version = current_version(base)
    assert version is not None and version.parent == base
    assert version.name.startswith("v-") and "-1a2b3c4d-" in version.name  # sortable, traceable to the run
    assert _listing(version) == [REPORT_FILE, "roc_QCD.png", "roc_W.png"]
    assert (version / REPORT_FILE).read_text() == json.dumps(report.data, indent=2) + "\n"
    assert (version / "roc_W.png").read_bytes() == PNG + b"roc_W.png"
    assert _listing(base) == [CURRENT, version.name]  # no staging left behind

    metadata = context.get_logged_metadata()
    assert metadata["report"].value == str(version / REPORT_FILE)
    assert metadata["test_events"].value == 42
    assert manager.load_input(_in("model_evaluation")) == report.data


def test_a_report_without_figures_is_its_json_alone(storage):
    manager = ReportIOManager(storage=storage)
    manager.handle_output(_out("generator_comparison"), Report({"sources": ["toy", "pythia"]}))
    assert _listing(current_version(storage.reports / "generator_comparison")) == [REPORT_FILE]
    assert manager.load_input(_in("generator_comparison")) == {"sources": ["toy", "pythia"]}


def test_a_new_report_replaces_the_previous_version_and_its_figures(storage):
    manager = ReportIOManager(storage=storage)
    manager.handle_output(_out("model_evaluation", run_id="aaaaaaaa-1"), _report(0.5))
    first = current_version(storage.reports / "model_evaluation")
    manager.handle_output(_out("model_evaluation", run_id="bbbbbbbb-2"), _report(0.75, figures=["roc_QCD.png"]))
    second = current_version(storage.reports / "model_evaluation")

    assert second != first and "-bbbbbbbb-" in second.name
    assert not first.exists()
    assert _listing(storage.reports / "model_evaluation") == [CURRENT, second.name]
    assert _listing(second) == [REPORT_FILE, "roc_QCD.png"]  # no figure of the previous report lingers
    assert manager.load_input(_in("model_evaluation"))["models"]["hlf_classifier"]["accuracy"] == 0.75


def test_a_failing_figure_write_keeps_the_previous_report_and_leaves_no_staging(storage):
    manager = ReportIOManager(storage=storage)
    manager.handle_output(_out("model_evaluation"), _report(0.5))
    good = current_version(storage.reports / "model_evaluation")
    before = {p.name: p.read_bytes() for p in good.iterdir()}

    # report.json and the first figure are written, then a figure that is not bytes fails: nothing is published.
    broken = Report({"models": {}}, {"roc_QCD.png": PNG, "roc_W.png": "not PNG bytes"})
    with pytest.raises(TypeError):
        manager.handle_output(_out("model_evaluation"), broken)
    assert current_version(storage.reports / "model_evaluation") == good
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert _listing(storage.reports / "model_evaluation") == [CURRENT, good.name]
    assert manager.load_input(_in("model_evaluation")) == _report(0.5).data


def test_a_report_json_cannot_hold_keeps_the_previous_report(storage):
    manager = ReportIOManager(storage=storage)
    manager.handle_output(_out("model_evaluation"), _report(0.5))
    good = current_version(storage.reports / "model_evaluation")
    with pytest.raises(TypeError, match="not JSON serializable"):
        manager.handle_output(_out("model_evaluation"), Report({"auc": {0.5}}, {"roc_QCD.png": PNG}))
    assert current_version(storage.reports / "model_evaluation") == good
    assert _listing(storage.reports / "model_evaluation") == [CURRENT, good.name]
    assert manager.load_input(_in("model_evaluation")) == _report(0.5).data


def test_a_failing_first_report_publishes_nothing(storage):
    manager = ReportIOManager(storage=storage)
    with pytest.raises(TypeError):
        manager.handle_output(_out("model_evaluation"), Report({"models": {}}, {"roc_QCD.png": None}))
    base = storage.reports / "model_evaluation"
    assert current_version(base) is None
    assert not [p for p in base.iterdir() if p.name.startswith(STAGING_PREFIX)]
    with pytest.raises(FileNotFoundError, match="materialize model_evaluation first"):
        manager.load_input(_in("model_evaluation"))


def test_loading_a_report_never_materialized_names_the_asset(storage):
    manager = ReportIOManager(storage=storage)
    with pytest.raises(FileNotFoundError, match=r"no report under .*/reports/model_evaluation: materialize "
                                                r"model_evaluation first"):
        manager.load_input(_in("model_evaluation"))
    with pytest.raises(FileNotFoundError, match="materialize evaluation/model_evaluation first"):
        manager.load_input(build_input_context(asset_key=AssetKey(["evaluation", "model_evaluation"])))


def test_loading_a_version_without_its_report_json_names_the_asset(storage):
    def figures_only(directory):
        (directory / "roc_QCD.png").write_bytes(PNG)

    publish(storage.reports / "model_evaluation", "v-1", figures_only)
    with pytest.raises(FileNotFoundError, match="materialize model_evaluation first"):
        ReportIOManager(storage=storage).load_input(_in("model_evaluation"))


def test_the_report_directory_is_named_after_the_last_part_of_the_asset_key(storage):
    manager = ReportIOManager(storage=storage)
    manager.handle_output(build_output_context(asset_key=AssetKey(["physics", "feature_report"])), Report({"a": 1}))
    assert (current_version(storage.reports / "feature_report") / REPORT_FILE).is_file()
    assert manager.load_input(build_input_context(asset_key=AssetKey(["other", "feature_report"]))) == {"a": 1}


@pytest.mark.parametrize("name", ["", ".staging-x", ".", "..", "a/b"])
def test_report_names_that_are_not_a_plain_directory_name_are_refused(storage, name):
    with pytest.raises(ValueError, match="invalid asset name for a path"):
        ReportIOManager(storage=storage)._base(name)


@pytest.mark.parametrize("name", [".staging-x", "a/b"])
def test_storing_or_loading_a_report_under_such_a_name_is_refused_and_writes_nothing(storage, name):
    manager = ReportIOManager(storage=storage)
    with pytest.raises(ValueError, match="invalid asset name for a path"):
        manager.handle_output(_out(name), _report(0.5))
    with pytest.raises(ValueError, match="invalid asset name for a path"):
        manager.load_input(_in(name))
    assert not storage.root_path.exists()


@pytest.mark.parametrize("figure", ["../escape.png", "ABSOLUTE", REPORT_FILE])
def test_figure_names_that_are_not_a_plain_file_name_beside_the_report_are_refused(storage, tmp_path, figure):
    """A figure must land inside the version it is published with, and not replace the report itself."""
    manager = ReportIOManager(storage=storage)
    manager.handle_output(_out("model_evaluation"), _report(0.5))
    good = current_version(storage.reports / "model_evaluation")
    figure = str(tmp_path / "outside.png") if figure == "ABSOLUTE" else figure

    with pytest.raises(ValueError):
        manager.handle_output(_out("model_evaluation"), Report({"models": {}}, {figure: PNG}))
    assert current_version(storage.reports / "model_evaluation") == good
    assert _listing(storage.reports / "model_evaluation") == [CURRENT, good.name]
    assert not (tmp_path / "outside.png").exists()
