"""The generator comparison: distances, the pipeline's selection and features per source, the report and figure."""

from __future__ import annotations

import numpy as np
import pytest

from lhc_assets.physics.delphes_reader import read_batches
from lhc_assets.physics.features import REASON_SELECTED, select
from lhc_assets.physics.generators import comparison as C


def test_ks_distance():
    rng = np.random.default_rng(1)
    a = rng.normal(size=4000)
    assert C.ks_distance(a, a) == 0.0
    assert C.ks_distance(a, rng.normal(size=4000)) < 0.05
    assert C.ks_distance(a, a + 100.0) == 1.0
    # N(0,1) against N(1,1): the largest CDF gap is 2 Phi(0.5) - 1 = 0.383.
    assert C.ks_distance(rng.normal(size=20000), rng.normal(1.0, size=20000)) == pytest.approx(0.383, abs=0.02)
    assert C.ks_distance(a, np.zeros(0)) is None


def test_features_of_files_are_the_pipelines(generated_files):
    path = generated_files["ttbar"]
    f = C.read_features([path], "ttbar")
    batches = read_batches(str(path), "ttbar", "t", 0, 800)
    selected = sum(int((select(b).reason == REASON_SELECTED).sum()) for b in batches)
    assert (f.events, f.selected) == (800, selected)
    assert set(f.values) == set(C.FEATURES)
    assert all(v.shape == (selected,) for v in f.values.values())
    assert f.values["n_tracks"].min() > 0 and f.values["nJets"].max() >= 2
    capped = C.read_features([path], "ttbar", max_events=300)
    assert capped.events == 300 and capped.selected < selected


def test_report_and_figure(generated_files):
    a = {s: C.read_features([p], s, 400) for s, p in generated_files.items()}
    b = {s: C.read_features([p], s) for s, p in generated_files.items()}
    report = C.compare({"first": a, "all": b}, "first", "all")
    assert set(report["classes"]) == {"qcd", "ttbar", "wjets"}
    for r in report["classes"].values():
        assert r["events"] == {"first": 400, "all": 800}
        assert all(0.0 <= d <= 1.0 for d in r["ks_distance"].values())
    # Half of one sample against all of it: every feature close.
    assert max(d for r in report["classes"].values() for d in r["ks_distance"].values()) < 0.2
    assert "| lepPt |" in C.distance_table(report) and "| ttbar |" in C.efficiency_table(report)
    png = C.plot_features({"first": a, "all": b})
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
