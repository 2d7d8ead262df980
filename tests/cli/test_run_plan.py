"""``lhc-run``'s choices without running Spark: the sample each source generates, the models' settings, which
stages a run redoes (Dagster's stale status on stand-ins of the asset graph) and the summary's counts."""

from __future__ import annotations

import pytest
from dagster import (
    AssetMaterialization,
    Definitions,
    DynamicPartitionsDefinition,
    MaterializeResult,
    Permissive,
    asset,
    define_asset_job,
    instance_for_test,
    materialize,
)

from lhc_assets.cli import run


def test_toy_sample_gives_qcd_three_times_the_files():
    args = run.build_parser().parse_args([])
    assert args.source == "toy"
    assert run.sample_plan(args) == [("ttbar,wjets", 3, 3000), ("qcd", 9, 3000)]


def test_pythia_sample_has_its_own_defaults_and_honours_overrides(monkeypatch):
    monkeypatch.delenv("LHC_SAMPLE_FILES", raising=False)
    args = run.build_parser().parse_args(["--source", "pythia"])
    assert run.sample_plan(args) == [("ttbar,wjets", 3, 2000), ("qcd", 15, 2000)]
    monkeypatch.setenv("LHC_SAMPLE_FILES", "2")
    args = run.build_parser().parse_args(["--source", "pythia", "--events-per-file", "100"])
    assert run.sample_plan(args) == [("ttbar,wjets", 2, 100), ("qcd", 10, 100)]
    monkeypatch.setenv("LHC_SOURCE", "pythia")
    assert run.build_parser().parse_args([]).source == "pythia"


def test_models_settings():
    parse = run.build_parser().parse_args
    assert run.models_run_config(parse([])) is run.MODELS_RUN_CONFIG
    assert run.models_run_config(parse(["--quick", "--models", "design"])) is run.QUICK_MODELS_RUN_CONFIG
    design = run.models_run_config(parse(["--models", "design"]))
    # DESIGN.md's settings are the assets' defaults: only the search grid is set.
    assert set(design["ops"]) == {"hlf_hyperparameter_search"}


def test_pythia_source_generates_the_planned_files(tmp_path):
    from resources.storage import StorageResource

    storage = StorageResource(root=str(tmp_path / "data"))
    storage.ensure_layout()
    args = run.build_parser().parse_args(["--source", "pythia", "--files-per-sample", "1", "--events-per-file", "4",
                                          "--seed", "2", "--jobs", "1"])
    assert run.generate_sample(storage, args) == 0
    names = sorted(p.relative_to(storage.incoming).as_posix() for p in storage.incoming.rglob("*.root"))
    assert names == ["qcd/qcd_pythia_seed2_0000.root", *[f"qcd/qcd_pythia_seed2_000{k}.root" for k in range(1, 5)],
                     "ttbar/ttbar_pythia_seed2_0000.root", "wjets/wjets_pythia_seed2_0000.root"]
    # A second run keeps what is there.
    before = {p: p.stat().st_mtime_ns for p in storage.incoming.rglob("*.root")}
    assert run.generate_sample(storage, args) == 0
    assert before == {p: p.stat().st_mtime_ns for p in storage.incoming.rglob("*.root")}


# ---- which stages a run redoes, decided by Dagster's stale status, on stand-ins of the real asset graph

STAGE_JOBS = ("ingestion_job", "training_data_job", "models_job", "file_scores_job")


def _stand_in_defs():
    """The assets of lhc-run's jobs with the real keys, dependencies, partitions and job names, computing
    nothing (no Spark): what the staleness decisions read is the graph and the instance's event log. Every
    stand-in accepts any config, so the real runs' configs apply."""
    from lhc_assets.definitions import defs as real

    graph = real.resolve_asset_graph()
    jobs = {name: real.resolve_job_def(name).asset_layer.selected_asset_keys for name in STAGE_JOBS}

    def stand_in(key):
        node = graph.get(key)

        @asset(key=key, deps=node.parent_keys, partitions_def=node.partitions_def, config_schema=Permissive())
        def compute() -> None:
            """Computes nothing: the materialization it records is what matters here."""

        return compute

    return Definitions(assets=[stand_in(k) for k in set().union(*jobs.values())],
                       jobs=[define_asset_job(name, sorted(keys)) for name, keys in jobs.items()])


@pytest.fixture(scope="module")
def stand_in_defs():
    return _stand_in_defs()


def _ingest(defs, instance, keys: list[str]) -> None:
    instance.add_dynamic_partitions("delphes_files", keys)
    assert defs.resolve_job_def("ingestion_job").execute_in_process(instance=instance, tags={
        "dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}).success


def _stages(defs, instance, capsys) -> str:
    """What lhc-run's stages after the ingestion print, run as lhc-run runs them."""
    assert run.materialize_training_data(defs, instance)
    assert run.materialize_models(run.QUICK_MODELS_RUN_CONFIG, defs, instance)
    assert run.materialize_file_scores(defs, instance)
    return capsys.readouterr().out


def test_a_rerun_with_nothing_new_skips_every_stage_and_new_files_redo_them(stand_in_defs, capsys):
    with instance_for_test() as instance:
        _ingest(stand_in_defs, instance, ["qcd/q0", "ttbar/t0", "wjets/w0"])
        out = _stages(stand_in_defs, instance, capsys)
        assert "training data: undersampling, scalers and the Petastorm datasets (" in out
        assert "models: hyperparameter search" in out
        assert "file scores: the Keras classifiers over every selected event of the 3 input files" in out
        assert run.out_of_date(stand_in_defs, instance, "models_job") == {}

        assert _stages(stand_in_defs, instance, capsys).splitlines() == [
            "training data: up to date with the feature tables", "models: up to date with the training data",
            "file scores: up to date with the models"]

        # A new input file: the training data is stale through the new feature partition, the models only
        # once the training data is rebuilt, every file's scores once the models are.
        _ingest(stand_in_defs, instance, ["qcd/q1"])
        stale = run.out_of_date(stand_in_defs, instance, "training_data_job")
        assert stale["undersampled_dataset"].causes == ("has a new dependency materialization (hlf_features qcd/q1)",
                                                        "has a new dependency materialization (llf_features qcd/q1)")
        # The readers of llf_features, upstream first.
        assert list(stale) == ["undersampled_dataset", "feature_scalers", "test_set", "train_set"]
        assert run.out_of_date(stand_in_defs, instance, "models_job") == {}
        assert run.out_of_date_partitions(stand_in_defs, instance, "file_scores_job") == ["qcd/q1"]
        out = _stages(stand_in_defs, instance, capsys)
        assert ("training data: undersampling, scalers and the Petastorm datasets (undersampled_dataset: has a new "
                "dependency materialization (hlf_features qcd/q1), and 3 more)") in out
        assert "models: hyperparameter search, 4 Keras classifiers, random forest, Spark scoring" in out
        assert "file scores: the Keras classifiers over every selected event of the 4 input files" in out
        assert "up to date" not in out
        assert "up to date" in _stages(stand_in_defs, instance, capsys)


def test_rescoring_is_limited_to_the_files_whose_features_changed(stand_in_defs, capsys):
    with instance_for_test() as instance:
        keys = ["qcd/q0", "qcd/q1", "ttbar/t0", "wjets/w0"]
        _ingest(stand_in_defs, instance, keys)
        _stages(stand_in_defs, instance, capsys)
        # Recomputed feature tables of one file (e.g. `lhc backfill`) and the models not retrained yet.
        _ingest(stand_in_defs, instance, ["qcd/q1"])
        assert run.out_of_date_partitions(stand_in_defs, instance, "file_scores_job") == ["qcd/q1"]
        assert run.materialize_file_scores(stand_in_defs, instance)
        assert "selected event of 1 of the 4 input files" in capsys.readouterr().out
        assert run.out_of_date_partitions(stand_in_defs, instance, "file_scores_job") == []
        assert set(run.out_of_date(stand_in_defs, instance, "training_data_job")) >= {"undersampled_dataset"}


def test_the_summary_counts_events_per_sample_from_the_materialization_metadata(tmp_path, capsys):
    from lhc_assets.defs.ingestion.metadata import table_metadata
    from lhc_assets.physics.features import SELECTED
    from resources.storage import StorageResource

    read = {"qcd/qcd_a": 1000, "qcd/qcd_b": 900, "ttbar/ttbar_a": 800, "wjets/wjets_a": 700}
    selected = {"qcd/qcd_a": 80, "qcd/qcd_b": 70, "ttbar/ttbar_a": 400, "wjets/wjets_a": 350}

    # The ingestion's own metadata: a run over several partitions records its totals on the output and each
    # partition's counts on that partition's materialization.
    @asset(name="hlf_features", partitions_def=DynamicPartitionsDefinition(name="delphes_files"))
    def hlf_features(context) -> MaterializeResult:
        return MaterializeResult(metadata=table_metadata(context, "hlf_features", [], {
            k: {"events_read": read[k], "reasons": {SELECTED: selected[k]}} for k in context.partition_keys}))

    storage = StorageResource(root=str(tmp_path / "data"))
    storage.ensure_layout()
    for key in [*read, "qcd/qcd_c"]:  # qcd_c: an input file not ingested yet
        (storage.incoming / f"{key}.root").touch()
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("delphes_files", list(read))

        def ingest(first: str, last: str) -> None:
            assert materialize([hlf_features], instance=instance, tags={
                "dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}).success

        ingest("qcd/qcd_a", "ttbar/ttbar_a")
        ingest("wjets/wjets_a", "wjets/wjets_a")
        read["qcd/qcd_a"], selected["qcd/qcd_a"] = 1100, 90
        ingest("qcd/qcd_a", "qcd/qcd_a")  # the latest materialization counts
        assert run.partition_event_counts(instance, [*read, "qcd/qcd_c"]) == {k: (read[k], selected[k]) for k in read}
        assert run.dataset_sizes(instance) is None
        for name, events in (("train_set", 432), ("test_set", 108)):
            instance.report_runless_asset_event(AssetMaterialization(name, metadata={"events": events}))
        run.print_summary(storage, instance)
    assert capsys.readouterr().out.splitlines() == [
        "  sample   files   events  selected efficiency",
        "  qcd          3     2000       160      0.080",
        "  ttbar        1      800       400      0.500",
        "  wjets        1      700       350      0.500",
        "  training data: 432 train / 108 test events, balanced over 3 classes "
        "(Petastorm datasets: train_set, test_set, hlf_train_set, hlf_test_set)",
        f"  warehouse: {storage.warehouse}",
    ]
