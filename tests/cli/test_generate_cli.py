"""``lhc-generate``: outputs, idempotence, clear errors, no half-written files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import uproot

from lhc_assets.cli.generate import main
from lhc_assets.physics.generators.rootio import write_delphes_file
from lhc_assets.physics.generators.toy import generate_file_batches


def _all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_writes_one_file_per_sample_and_index(tmp_path, capsys):
    rc = main(["--out", str(tmp_path), "--events-per-file", "40", "--files-per-sample", "2",
               "--seed", "3", "--samples", "ttbar,wjets", "--quiet"])
    assert rc == 0
    names = [p.relative_to(tmp_path).as_posix() for p in _all_files(tmp_path)]
    assert names == ["ttbar/ttbar_seed3_0000.root", "ttbar/ttbar_seed3_0001.root",
                     "wjets/wjets_seed3_0000.root", "wjets/wjets_seed3_0001.root"]
    for p in _all_files(tmp_path):
        assert uproot.open(p)["Delphes"].num_entries == 40
        assert p.stat().st_mode & 0o044  # readable by others, unlike mkstemp's 0600


def test_skip_existing_keeps_finished_files(tmp_path):
    args = ["--out", str(tmp_path), "--events-per-file", "20", "--files-per-sample", "1", "--seed", "1",
            "--samples", "qcd", "--quiet"]
    assert main(args) == 0
    f = tmp_path / "qcd" / "qcd_seed1_0000.root"
    before = f.stat().st_mtime_ns
    assert main([*args, "--skip-existing", "--files-per-sample", "2"]) == 0
    assert f.stat().st_mtime_ns == before
    assert (tmp_path / "qcd" / "qcd_seed1_0001.root").exists()


def test_parallel_jobs_write_the_same_events_as_serial(tmp_path):
    common = ["--events-per-file", "30", "--files-per-sample", "2", "--seed", "9", "--samples", "wjets", "--quiet"]
    assert main(["--out", str(tmp_path / "a"), *common]) == 0
    assert main(["--out", str(tmp_path / "b"), "--jobs", "2", *common]) == 0
    for name in ("wjets_seed9_0000.root", "wjets_seed9_0001.root"):
        a = uproot.open(tmp_path / "a" / "wjets" / name)["Delphes"]["EFlowTrack.PT"].array(library="np")
        b = uproot.open(tmp_path / "b" / "wjets" / name)["Delphes"]["EFlowTrack.PT"].array(library="np")
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--events-per-file", "-5", "--events-per-file: must be at least 1, got -5"),
        ("--files-per-sample", "0", "--files-per-sample: must be at least 1, got 0"),
        ("--seed", "-1", "--seed: must not be negative"),
        ("--events-per-file", "ten", "expected a whole number"),
        ("--samples", "qcd,zjets", "unknown sample"),
        ("--engine", "herwig", "invalid choice: 'herwig'"),
        ("--pileup-mu", "20", "--pileup-mu applies to --engine pythia only"),
        ("--pileup-pool", "0", "--pileup-pool: must be at least 1, got 0"),
    ],
)
def test_bad_options_exit_2_with_a_clear_message(tmp_path, option, value, message):
    args = {"--out": str(tmp_path / "out"), "--events-per-file": "10", "--files-per-sample": "1", "--seed": "1"}
    args[option] = value
    proc = subprocess.run(
        [sys.executable, "-m", "lhc_assets.cli.generate", *[x for kv in args.items() for x in kv]],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "out").exists() or not _all_files(tmp_path / "out")


def test_unwritable_output_directory_is_reported(tmp_path, capsys):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    rc = main(["--out", str(blocker / "data"), "--events-per-file", "5", "--files-per-sample", "1", "--seed", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "cannot write to" in err and str(blocker / "data") in err


def test_failed_write_leaves_no_file_behind(tmp_path):
    target = tmp_path / "qcd_seed1_0000.root"

    def batches():
        yield from generate_file_batches("qcd", 10, 1, 0)
        raise RuntimeError("disk full (simulated)")

    with pytest.raises(RuntimeError, match="disk full"):
        write_delphes_file(target, batches())
    assert _all_files(tmp_path) == []


def test_failed_rewrite_keeps_the_previous_good_file(tmp_path):
    target = tmp_path / "wjets_seed1_0000.root"
    write_delphes_file(target, generate_file_batches("wjets", 10, 1, 0))
    good = target.read_bytes()

    def batches():
        yield from generate_file_batches("wjets", 10, 2, 0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_delphes_file(target, batches())
    assert target.read_bytes() == good
    assert _all_files(tmp_path) == [target]


def test_pythia_engine_writes_named_files_serial_and_parallel_alike(tmp_path, capsys):
    common = ["--engine", "pythia", "--events-per-file", "8", "--files-per-sample", "2", "--seed", "4",
              "--samples", "ttbar", "--pileup-mu", "3", "--pileup-pool", "10"]
    assert main(["--out", str(tmp_path / "a"), *common]) == 0
    assert "wrote 2 file(s), 16 events" in capsys.readouterr().out
    assert main(["--out", str(tmp_path / "b"), "--jobs", "2", "--quiet", *common]) == 0
    names = [p.relative_to(tmp_path / "a").as_posix() for p in _all_files(tmp_path / "a")]
    assert names == ["ttbar/ttbar_pythia_seed4_0000.root", "ttbar/ttbar_pythia_seed4_0001.root"]
    for name in names:
        a = uproot.open(tmp_path / "a" / name)["Delphes"]
        b = uproot.open(tmp_path / "b" / name)["Delphes"]
        assert a.num_entries == b.num_entries == 8
        pa, pb = (t["EFlowTrack.PT"].array(library="np") for t in (a, b))
        assert all(np.array_equal(x, y) for x, y in zip(pa, pb, strict=True))


def test_pythia_engine_failure_is_reported(tmp_path, monkeypatch, capsys):
    from lhc_assets.physics.generators import pythia

    monkeypatch.setitem(pythia.PROCESSES, "wjets", pythia.Process(("NoSuchSetting:foo = on",)))
    rc = main(["--out", str(tmp_path / "out"), "--engine", "pythia", "--events-per-file", "5",
               "--files-per-sample", "1", "--seed", "1", "--samples", "wjets"])
    assert rc == 1
    assert "Pythia rejected the setting 'NoSuchSetting:foo = on'" in capsys.readouterr().err
    assert not [p for p in _all_files(tmp_path / "out") if p.suffix == ".root"]
