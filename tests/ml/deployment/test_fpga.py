"""hls4ml fixed-point emulation: conversion and C simulation of small dense models, the precision scan, the
choice rule and the missing-compiler error.

The compiling tests build three C simulations with g++ (about 6 s each, two at once) and import TensorFlow:
they are slow. The rule, the type parser and the compiler check import neither and run in the fast tier.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from lhc_assets.ml.deployment import fpga
from lhc_assets.ml.deployment.fpga import ChoiceRule, FixedPoint, PrecisionResult, choose_precision

CLASSES = ("QCD", "ttbar", "W+jets")
FINE, COARSE = "ap_fixed<16,6>", "ap_fixed<6,2>"


# ---- pure: types, the rule, the compiler check ------------------------------------------------------------


def test_precision_strings_parse_and_get_rounding_and_saturation_by_default():
    fixed = FixedPoint.parse("ap_fixed<16,6>")
    assert (fixed.width, fixed.integer, fixed.signed, fixed.fraction) == (16, 6, True, 10)
    assert str(fixed) == "ap_fixed<16,6>"
    assert str(fixed.with_default_modes(fpga.DEFAULT_MODES)) == "ap_fixed<16,6,AP_RND,AP_SAT>"
    explicit = FixedPoint.parse(" ap_ufixed<8, 3, AP_TRN, AP_WRAP> ")
    assert not explicit.signed and explicit.with_default_modes(fpga.DEFAULT_MODES) == explicit
    assert str(FixedPoint.parse("fixed<12,4>")) == "ap_fixed<12,4>"  # hls4ml's short form
    for bad in ("ap_int<8>", "float", "ap_fixed<16>", "ap_fixed<0,0>", "ap_fixed<8,3,AP_SAT>",
                "ap_fixed<8,3,AP_RND,AP_RND>"):
        with pytest.raises(ValueError):
            FixedPoint.parse(bad)


def test_quantize_follows_the_rounding_and_overflow_modes():
    values = np.array([0.3, -0.3, 5.0, -5.0])
    rnd_sat = FixedPoint.parse("ap_fixed<8,3,AP_RND,AP_SAT>")  # step 1/32, range [-4, 4)
    np.testing.assert_allclose(rnd_sat.quantize(values), [10 / 32, -10 / 32, 4 - 1 / 32, -4])
    trn_wrap = FixedPoint.parse("ap_fixed<8,3>")
    np.testing.assert_allclose(trn_wrap.quantize(values), [9 / 32, -10 / 32, -3, 3])  # 5 wraps to -3


def _result(precision: str, rejection_95: dict[str, float | None]) -> PrecisionResult:
    """A hand-made scan result with rejections at 95 % signal efficiency only."""
    fixed = None if precision == "float" else FixedPoint.parse(precision)
    return PrecisionResult(
        precision=precision, hls_type=None if fixed is None else str(fixed),
        total_bits=None if fixed is None else fixed.width,
        integer_bits=None if fixed is None else fixed.integer, auc={c: 0.99 for c in CLASSES}, accuracy=0.9,
        rejection=[{"signal_efficiency_target": 0.95, "threshold": 0.5, "signal_efficiency": 0.95,
                    "background": {name: {"efficiency": None if r is None else 1 / r, "rejection": r}
                                   for name, r in rejection_95.items()}}],
        events_per_second=1.0, throughput="test")


FLOAT = _result("float", {"QCD": 100.0, "W+jets": 20.0})


def test_the_rule_chooses_the_smallest_width_within_two_percent_at_95_percent():
    results = [
        _result("ap_fixed<16,6>", {"QCD": 100.5, "W+jets": 20.1}),
        _result("ap_fixed<12,4>", {"QCD": 98.1, "W+jets": 19.7}),  # -1.9 %, -1.5 %: passes
        _result("ap_fixed<10,4>", {"QCD": 99.0, "W+jets": 19.5}),  # W+jets -2.5 %: fails
        _result("ap_fixed<8,3>", {"QCD": 70.0, "W+jets": 15.0}),
    ]
    choice = choose_precision(FLOAT, results)
    assert choice.precision == "ap_fixed<12,4>"
    assert choice.passing == ["ap_fixed<16,6>", "ap_fixed<12,4>"]
    assert "12 bits" in choice.reason and "95%" in choice.rule and "2%" in choice.rule
    # The order of the scan does not matter; the rule's numbers are configurable.
    assert choose_precision(FLOAT, results[::-1]).precision == "ap_fixed<12,4>"
    assert choose_precision(FLOAT, results, ChoiceRule(tolerance=0.03)).precision == "ap_fixed<10,4>"
    assert choose_precision(FLOAT, results, ChoiceRule(tolerance=0.001)).precision == "ap_fixed<16,6>"


def test_the_rule_is_one_sided_unless_asked_and_handles_infinite_rejection():
    better = _result("ap_fixed<10,4>", {"QCD": 110.0, "W+jets": 21.0})  # +10 %: better than float
    assert choose_precision(FLOAT, [better]).precision == "ap_fixed<10,4>"
    assert choose_precision(FLOAT, [better], ChoiceRule(two_sided=True)).precision is None
    # None = no background event passes the cut (infinite rejection).
    infinite_fixed = _result("ap_fixed<10,4>", {"QCD": None, "W+jets": 20.0})
    assert choose_precision(FLOAT, [infinite_fixed]).precision == "ap_fixed<10,4>"
    infinite_float = _result("float", {"QCD": None, "W+jets": 20.0})
    finite = _result("ap_fixed<10,4>", {"QCD": 500.0, "W+jets": 20.0})
    assert choose_precision(infinite_float, [finite]).precision is None
    assert choose_precision(infinite_float, [infinite_fixed]).precision == "ap_fixed<10,4>"


def test_the_rule_says_so_when_nothing_passes():
    results = [_result("ap_fixed<8,3>", {"QCD": 70.0, "W+jets": 15.0}),
               _result("ap_fixed<6,2>", {"QCD": 40.0, "W+jets": 19.9})]
    choice = choose_precision(FLOAT, results)
    assert choice.precision is None and choice.passing == []
    assert "none of the scanned precisions passes" in choice.reason
    assert "ap_fixed<8,3>: QCD -30.0%, W+jets -25.0%" in choice.reason
    assert choose_precision(FLOAT, []).precision is None
    with pytest.raises(ValueError, match="not scanned"):
        choose_precision(FLOAT, results, ChoiceRule(efficiency=0.9))
    with pytest.raises(ValueError):
        ChoiceRule(tolerance=-0.01)


def test_a_missing_compiler_is_a_clear_error_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no g++, no anything
    with pytest.raises(fpga.CompilerNotFoundError, match=r"apt-get install -y g\+\+"):
        fpga.require_compiler()
    # The model is never looked at: the check comes first.
    with pytest.raises(fpga.CompilerNotFoundError):
        fpga.convert(object(), FINE, tmp_path / "out")  # type: ignore[arg-type]
    with pytest.raises(fpga.CompilerNotFoundError):
        fpga.scan_precisions(object(), np.zeros((2, 14)), np.eye(3)[[0, 1]], work_dir=tmp_path)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


# ---- compiled: a tiny dense model in hls4ml's C simulation -----------------------------------------------


def _events(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Three overlapping classes in 14 features scaled to [0, 1], like the min-max scaled HLF."""
    centres = np.random.default_rng(42).uniform(0.2, 0.8, size=(3, 14))
    labels = rng.integers(0, 3, n)
    x = np.clip(centres[labels] + rng.normal(0.0, 0.35, size=(n, 14)), 0.0, 1.0).astype(np.float32)
    return x, np.eye(3, dtype=np.float32)[labels]


@pytest.fixture(scope="module")
def tiny():
    """Dense 14 -> 8 ReLU -> 3 softmax, trained for a few epochs, and its test events."""
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = _events(4000, rng)
    model = keras.Sequential([keras.Input((14,), name="hlf_input"), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, activation="softmax", name="output")], name="tiny")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy")
    model.fit(x, y, epochs=5, batch_size=128, verbose=0)
    return model, *_events(3000, rng)


@pytest.fixture(scope="module")
def scan(tiny, tmp_path_factory):
    model, x, y = tiny
    return fpga.scan_precisions(model, x, y, [FINE, COARSE], work_dir=tmp_path_factory.mktemp("fpga"), jobs=2)


@pytest.mark.slow
def test_the_c_simulation_agrees_with_keras_at_16_6(scan):
    fine = scan.result(FINE)
    # 10 fractional bits on the data path, the softmax's 1/128 logit grid: below 1 % everywhere.
    assert fine.max_abs_diff < 0.01
    assert fine.argmax_agreement > 0.995
    for name in CLASSES:
        assert fine.auc[name] == pytest.approx(scan.float_model.auc[name], abs=2e-3)
    assert fine.hls_type == "ap_fixed<16,6,AP_RND,AP_SAT>" and fine.total_bits == 16 and fine.integer_bits == 6


@pytest.mark.slow
def test_the_scan_reports_every_precision_against_the_float_model(scan, tiny):
    _, x, _ = tiny
    assert [r.precision for r in scan.fixed] == [FINE, COARSE]
    assert scan.signal == "ttbar" and scan.n_events == len(x) and scan.hls4ml_version == "1.3.0"
    for result in (scan.float_model, *scan.fixed):
        assert set(result.auc) == set(CLASSES)
        assert all(0.8 < auc <= 1.0 for auc in result.auc.values())
        assert [p["signal_efficiency_target"] for p in result.rejection] == [0.99, 0.95, 0.90]
        assert all(set(p["background"]) == {"QCD", "W+jets"} for p in result.rejection)
        assert result.events_per_second > 0
    for result in scan.fixed:
        assert result.compile_seconds > 0 and result.max_abs_diff is not None
        assert result.resources.multiplications == 14 * 8 + 8 * 3
        assert "not a synthesis estimate" in result.resources.source
        assert Path(result.project_dir).is_relative_to(Path(scan.fixed[0].project_dir).parent)
    assert scan.hls4ml_resource_estimate is None and "no resource estimate" in scan.hls4ml_resource_note
    # Fewer bits, fewer weight bits; 6-bit weights go to LUTs, 16-bit ones to DSPs.
    fine, coarse = scan.result(FINE).resources, scan.result(COARSE).resources
    assert coarse.weight_bits < fine.weight_bits and coarse.dsp_multiplications == 0 < fine.dsp_multiplications
    json.dumps(scan.to_dict())  # metadata-ready
    assert "designs" not in scan.to_dict()


@pytest.mark.slow
def test_a_coarse_precision_measurably_degrades_and_the_rule_sees_it(scan):
    fine, coarse = scan.result(FINE), scan.result(COARSE)
    assert coarse.max_abs_diff > 10 * fine.max_abs_diff and coarse.max_abs_diff > 0.05
    assert sum(coarse.auc.values()) < sum(scan.float_model.auc.values()) - 0.005
    float_95 = scan.float_model.rejection_at(0.95)
    assert any(coarse.rejection_at(0.95)[b] < 0.98 * float_95[b] for b in float_95)
    assert scan.choice.precision == FINE and scan.choice.passing == [FINE]


@pytest.mark.slow
def test_designs_coexist_and_a_large_logit_gap_does_not_wrap(scan, tiny, tmp_path, monkeypatch):
    """A third design in the same process, built in a given directory (not the cwd): a softmax whose logits
    (3, -2, 0) differ by more than half of <8,3>'s range, which hls4ml's default softmax wraps around."""
    import keras

    model, x, _ = tiny
    before = {p: design.predict(x[:200]) for p, design in scan.designs.items()}
    gap = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="softmax")], name="gap")
    gap.layers[-1].set_weights([np.zeros((2, 3), np.float32), np.array([3.0, -2.0, 0.0], np.float32)])
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    design = fpga.convert(gap, "ap_fixed<8,3>", tmp_path / "gap")
    inputs = np.zeros((1, 2), np.float32)
    np.testing.assert_allclose(design.predict(inputs), gap.predict(inputs, verbose=0)[0], atol=5e-3)
    assert os.listdir(cwd) == []
    assert list((tmp_path / "gap" / "firmware").glob("gap-*.so"))  # the project is named after the model
    for p, d in scan.designs.items():  # the libraries loaded later did not replace the earlier ones
        np.testing.assert_array_equal(d.predict(x[:200]), before[p])
    np.testing.assert_allclose(scan.designs[FINE].predict(x[:200]), model.predict(x[:200], verbose=0), atol=0.01)
