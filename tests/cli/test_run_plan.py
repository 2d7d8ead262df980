"""``lhc-run``'s choices without running it: the sample each source generates and the models' settings."""

from __future__ import annotations

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
