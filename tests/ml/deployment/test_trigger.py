"""The trigger decision: the ttbar cut for a target efficiency and the rates it lets through, on hand-made scores."""

from __future__ import annotations

import numpy as np
import pytest

from lhc_assets.ml.deployment.trigger import (
    STUDY_COMPOSITION,
    InputStream,
    headline,
    menu_table,
    parse_composition,
    trigger_menu,
)

CLASSES = ["QCD", "ttbar", "W+jets"]


def _probabilities(ttbar_scores: list[float]) -> np.ndarray:
    """(N, 3) rows whose ttbar column is the given score (the rest shared by the other two classes)."""
    s = np.asarray(ttbar_scores)
    return np.stack([(1 - s) / 2, s, (1 - s) / 2], axis=1)


def test_the_cut_keeps_the_target_fraction_of_ttbar_and_the_rates_follow_the_stream():
    # 10 ttbar events scored 0.91..1.00, 10 QCD 0.05..0.95 step 0.1, 4 W+jets.
    ttbar = [0.91 + 0.01 * i for i in range(10)]
    qcd = [0.05 + 0.1 * i for i in range(10)]
    wjets = [0.1, 0.2, 0.93, 0.99]
    labels = np.array([1] * 10 + [0] * 10 + [2] * 4)
    probs = _probabilities(ttbar + qcd + wjets)
    stream = InputStream(rate_hz=200.0, composition={"QCD": 30, "ttbar": 10, "W+jets": 60})  # weights, normalised

    menu = trigger_menu(labels, {"m": probs}, CLASSES, efficiencies=(0.9, 0.5), stream=stream)
    p90, p50 = menu
    # 90 %: the 9 highest of 10 ttbar scores pass, so the cut is the 9th highest, 0.92.
    assert p90.threshold == pytest.approx(0.92)
    assert p90.efficiency == pytest.approx({"ttbar": 0.9, "QCD": 0.1, "W+jets": 0.5})  # QCD 0.95; W 0.93, 0.99
    assert p90.input_hz == pytest.approx({"QCD": 60.0, "ttbar": 20.0, "W+jets": 120.0})
    assert p90.output_hz == pytest.approx({"QCD": 6.0, "ttbar": 18.0, "W+jets": 60.0})
    assert p90.total_input_hz == pytest.approx(200.0) and p90.total_output_hz == pytest.approx(84.0)
    assert p90.as_dict()["rate_reduction"] == pytest.approx(200 / 84)
    # 50 %: cut 0.96; nothing of QCD passes, one W+jets (0.99).
    assert p50.threshold == pytest.approx(0.96)
    assert p50.output_hz == pytest.approx({"QCD": 0.0, "ttbar": 10.0, "W+jets": 30.0})
    # No QCD event of the 10 passes: the sample resolves no rate below one event's, 60 Hz / 10.
    assert p50.rate_limit_hz("QCD") == pytest.approx(6.0) and p50.rate_limit_hz("W+jets") is None
    assert p50.as_dict()["events"] == {"QCD": 10, "ttbar": 10, "W+jets": 4}
    assert "keep 90.0 % of ttbar at 84 Hz instead of 200 Hz" in headline(p90)
    table = menu_table(menu, CLASSES)
    assert table.count("\n") == 3 and "| m | 0.90 | 0.92 |" in table and "| < 6 | 10 | 30 |" in table


def test_default_stream_is_the_studys_composition_and_bad_input_is_named():
    stream = InputStream()
    assert stream.composition == pytest.approx(STUDY_COMPOSITION) and sum(stream.class_rates().values()) == 1000.0
    assert parse_composition("qcd=36.2, ttbar=0.4,wjets=63.4", {"qcd": "QCD", "wjets": "W+jets"}) == {
        "QCD": 36.2, "ttbar": 0.4, "W+jets": 63.4}
    with pytest.raises(ValueError, match="class=weight, got 'ttbar'"):
        parse_composition("qcd=1,ttbar")
    with pytest.raises(ValueError, match="non-negative"):
        InputStream(composition={"qcd": -1.0, "ttbar": 1.0})
    with pytest.raises(ValueError, match="positive"):
        InputStream(rate_hz=0)
    labels = np.array([1, 1, 0])
    probs = _probabilities([0.9, 0.8, 0.1])
    with pytest.raises(ValueError, match=r"no events of \['W\+jets'\]"):
        trigger_menu(labels, {"m": probs}, CLASSES)
    with pytest.raises(ValueError, match="unknown classes"):
        trigger_menu(labels, {"m": probs}, CLASSES, stream=InputStream(composition={"tau": 1.0}))
    with pytest.raises(ValueError, match="shape"):
        trigger_menu(labels, {"m": probs[:2]}, CLASSES, stream=InputStream(composition={"ttbar": 1.0}))
