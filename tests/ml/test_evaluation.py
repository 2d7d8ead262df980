"""Evaluation: ROC/AUC against brute force, working points on hand-built samples, the report, the PNG plots."""

from __future__ import annotations

import io
import json

import matplotlib.image
import numpy as np
import pytest

from lhc_assets.ml.evaluation import (
    background_rejection,
    confusion_matrix,
    downsample_curve,
    efficiency_threshold,
    evaluate_model,
    plot_confusion_matrix,
    plot_roc_comparison,
    plot_training_curves,
    roc_auc,
    roc_curve,
)

NAMES = ("QCD", "ttbar", "W+jets")


def _tied_sample(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Random labels and scores drawn from 11 values, so most scores are tied; positives score a bit higher."""
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < 0.4
    scores = np.clip(rng.integers(0, 8, n) + 3 * truth, 0, 10) / 10.0
    return truth, scores


def _brute_force_auc(truth: np.ndarray, scores: np.ndarray) -> float:
    pos, neg = scores[truth][:, None], scores[~truth][None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_pairwise_count_with_ties_and_trapezoid_of_the_roc(seed):
    truth, scores = _tied_sample(seed)
    auc = roc_auc(truth, scores)
    assert 0.6 < auc < 1.0  # the sample is informative but not separable, so the check is not trivial
    assert auc == pytest.approx(_brute_force_auc(truth, scores), abs=1e-12)
    fpr, tpr, _ = roc_curve(truth, scores)
    assert auc == pytest.approx(_trapezoid(fpr, tpr), abs=1e-12)
    # 0/1 integer labels are accepted as well as booleans.
    assert roc_auc(truth.astype(int), scores) == auc


def test_roc_curve_has_one_point_per_distinct_score_from_origin_to_one_one():
    truth, scores = _tied_sample(3)
    fpr, tpr, thresholds = roc_curve(truth, scores)
    distinct = np.unique(scores)
    assert len(thresholds) == len(distinct) + 1
    assert thresholds[0] == np.inf
    np.testing.assert_array_equal(thresholds[1:], distinct[::-1])
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    # Each point is the cut score >= threshold, counted directly.
    for f, t, cut in zip(fpr[1:], tpr[1:], thresholds[1:], strict=True):
        assert t == pytest.approx(np.mean(scores[truth] >= cut))
        assert f == pytest.approx(np.mean(scores[~truth] >= cut))


def test_perfect_and_reversed_separation():
    truth = np.array([0, 0, 0, 1, 1], dtype=bool)
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert roc_auc(truth, scores) == 1.0
    assert roc_auc(truth, -scores) == 0.0
    assert roc_auc(truth, np.full(5, 0.5)) == 0.5  # all tied: the diagonal
    fpr, tpr, _ = roc_curve(truth, scores)
    assert fpr[np.argmax(tpr == 1.0)] == 0.0  # full signal efficiency before any background


def test_single_class_input_raises():
    with pytest.raises(ValueError, match="no negative events"):
        roc_auc(np.ones(4, dtype=bool), np.arange(4.0))
    with pytest.raises(ValueError, match="no positive events"):
        roc_curve(np.zeros(4, dtype=bool), np.arange(4.0))


def test_nan_or_inf_scores_and_length_mismatch_raise():
    truth = np.array([0, 1, 0, 1], dtype=bool)
    with pytest.raises(ValueError, match="NaN or infinite"):
        roc_auc(truth, np.array([0.1, np.nan, 0.3, 0.4]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        roc_curve(truth, np.array([0.1, np.inf, 0.3, 0.4]))
    with pytest.raises(ValueError, match="differ in length"):
        roc_auc(truth, np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        roc_auc(np.array([0, 1, 2, 1]), np.arange(4.0))


def test_downsample_keeps_ends_and_points_of_the_curve():
    truth, scores = _tied_sample(4, n=5000)
    scores = scores + np.random.default_rng(4).normal(0, 0.01, scores.size)  # all distinct: ~5000 points
    fpr, tpr, _ = roc_curve(truth, scores)
    small_fpr, small_tpr = downsample_curve(fpr, tpr, max_points=50)
    assert 40 <= small_fpr.size <= 50
    assert (small_fpr[0], small_tpr[0]) == (0.0, 0.0)
    assert (small_fpr[-1], small_tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(small_fpr) >= 0) and np.all(np.diff(small_tpr) >= 0)
    original = set(zip(fpr.tolist(), tpr.tolist(), strict=True))
    assert all(point in original for point in zip(small_fpr.tolist(), small_tpr.tolist(), strict=True))
    short_fpr, _ = downsample_curve(fpr[:10], tpr[:10], max_points=50)
    np.testing.assert_array_equal(short_fpr, fpr[:10])


def test_efficiency_threshold_is_the_highest_cut_reaching_the_target():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert efficiency_threshold(scores, 0.5) == 0.8
    assert efficiency_threshold(scores, 0.6) == 0.7  # 2/4 is not enough, 3/4 is the least above
    assert efficiency_threshold(scores, 1.0) == 0.6
    # Ties: the cut at 0.5 keeps 3 of 4, and nothing higher keeps half.
    assert efficiency_threshold(np.array([0.5, 0.5, 0.5, 0.1]), 0.5) == 0.5
    # 0.07 * 100 is 7.000000000000001 in floating point; the 7th highest score still reaches 7%.
    assert efficiency_threshold(np.arange(100.0), 0.07) == 93.0
    # ... and a target just above 1/3 rounds 3 * target down to 1.0, yet one event of three is not enough.
    assert efficiency_threshold(np.array([3.0, 2.0, 1.0]), float(np.nextafter(1 / 3, 1.0))) == 2.0
    with pytest.raises(ValueError, match="efficiency must be in"):
        efficiency_threshold(scores, 0.0)


def _probabilities(signal_score: np.ndarray) -> np.ndarray:
    p = np.zeros((signal_score.size, 3))
    p[:, 1] = signal_score
    p[:, 0] = 1.0 - signal_score
    return p


NO_PASS = {"efficiency": 0.0, "rejection": None}


def test_background_rejection_on_a_hand_built_sample():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 2, 2])
    ttbar_score = np.array([0.9, 0.8, 0.7, 0.6, 0.85, 0.65, 0.1, 0.05, 0.2, 0.1])
    result = background_rejection(labels, _probabilities(ttbar_score), 1, (0.25, 0.6, 1.0), class_names=NAMES)
    assert result == [
        {
            "signal_efficiency_target": 0.25,
            "threshold": 0.9,
            "signal_efficiency": 0.25,
            "background": {"QCD": {"efficiency": 0.0, "rejection": None}, "W+jets": NO_PASS},
        },
        {
            "signal_efficiency_target": 0.6,
            "threshold": 0.7,
            "signal_efficiency": 0.75,
            "background": {"QCD": {"efficiency": 0.25, "rejection": 4.0}, "W+jets": NO_PASS},
        },
        {
            "signal_efficiency_target": 1.0,
            "threshold": 0.6,
            "signal_efficiency": 1.0,
            "background": {"QCD": {"efficiency": 0.5, "rejection": 2.0}, "W+jets": NO_PASS},
        },
    ]


def test_background_rejection_validates_inputs():
    labels = np.array([1, 0, 2])
    with pytest.raises(ValueError, match="no events of the signal class 'ttbar'"):
        background_rejection(np.array([0, 0, 2]), _probabilities(np.ones(3) / 2), 1, (0.9,), class_names=NAMES)
    with pytest.raises(ValueError, match="class_names has 2 names"):
        background_rejection(labels, _probabilities(np.ones(3) / 2), 1, (0.9,), class_names=NAMES[:2])
    with pytest.raises(ValueError, match=r"probabilities contains 2 NaN"):  # columns 0 and 1 of event 1
        background_rejection(labels, _probabilities(np.array([0.5, np.nan, 0.5])), 1, (0.9,), class_names=NAMES)


def test_confusion_matrix_rows_are_fractions_and_an_empty_class_is_zeros():
    labels = np.array([0, 0, 0, 0, 1, 1])
    predicted = np.array([0, 0, 1, 2, 1, 0])
    matrix = confusion_matrix(labels, predicted, 3)
    np.testing.assert_array_equal(matrix, [[0.5, 0.25, 0.25], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(matrix.sum(axis=1), [1.0, 1.0, 0.0])
    rng = np.random.default_rng(5)
    random_matrix = confusion_matrix(rng.integers(0, 3, 500), rng.integers(0, 3, 500), 3)
    np.testing.assert_allclose(random_matrix.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match=r"predicted must be in \[0, 3\)"):
        confusion_matrix(labels, predicted + 1, 3)


def test_evaluate_model_report_is_json_and_matches_hand_counts():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.array(
        [
            [0.7, 0.2, 0.1],  # QCD -> QCD
            [0.3, 0.6, 0.1],  # QCD -> ttbar
            [0.1, 0.8, 0.1],  # ttbar -> ttbar
            [0.2, 0.5, 0.3],  # ttbar -> ttbar
            [0.1, 0.1, 0.8],  # W+jets -> W+jets
            [0.5, 0.1, 0.4],  # W+jets -> QCD
        ]
    )
    report = evaluate_model(np.eye(3)[labels], probabilities, NAMES, signal=1, efficiencies=(0.5, 1.0))
    assert json.loads(json.dumps(report)) == report
    assert report["n_events"] == 6
    assert report["class_counts"] == {"QCD": 2, "ttbar": 2, "W+jets": 2}
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["confusion_matrix"] == [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]
    # ttbar scores 0.8, 0.5 vs rest 0.2, 0.6, 0.1, 0.1: 7 of 8 pairs ordered correctly.
    assert report["auc"]["ttbar"] == pytest.approx(7 / 8)
    assert report["auc"]["QCD"] == pytest.approx(_brute_force_auc(labels == 0, probabilities[:, 0]))
    assert report["roc"]["W+jets"]["fpr"][0] == 0.0 and report["roc"]["W+jets"]["tpr"][-1] == 1.0
    assert report["signal"] == "ttbar"
    assert [w["threshold"] for w in report["rejection"]] == [0.8, 0.5]
    assert report["rejection"][1]["background"]["QCD"] == {"efficiency": 0.5, "rejection": 2.0}


def test_evaluate_model_names_the_bad_argument():
    onehot, probabilities = np.eye(3)[[0, 1, 2]], np.full((3, 3), 1 / 3)
    with pytest.raises(ValueError, match="labels_onehot shape"):
        evaluate_model(onehot[:2], probabilities, NAMES)
    bad = probabilities.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="probabilities contains 1 NaN"):
        evaluate_model(onehot, bad, NAMES)
    with pytest.raises(ValueError, match="exactly one 1 per row, row 2"):
        evaluate_model(np.array([[1, 0, 0], [0, 1, 0], [0, 1, 1]]), probabilities, NAMES)
    with pytest.raises(ValueError, match="class_names has 2 names"):
        evaluate_model(onehot, probabilities, NAMES[:2])


def _png_shape(png: bytes) -> tuple[int, ...]:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return matplotlib.image.imread(io.BytesIO(png)).shape


def test_plot_roc_comparison_png():
    truth, scores = _tied_sample(6)
    fpr, tpr, _ = roc_curve(truth, scores)
    png = plot_roc_comparison({"HLF": (fpr, tpr), "GRU": (fpr**2, tpr)}, {"HLF": 0.81, "GRU": 0.9}, "ttbar")
    assert _png_shape(png) == (450, 600, 4)


def test_plot_training_curves_png():
    history = {"loss": [1.0, 0.7, 0.5], "val_loss": [1.1, 0.8, 0.6], "accuracy": [0.5, 0.7, 0.8]}
    assert _png_shape(plot_training_curves(history, "GRU")) == (400, 900, 4)
    assert _png_shape(plot_training_curves({"loss": [1.0]}, "no accuracy")) == (400, 900, 4)


def test_plot_confusion_matrix_png():
    matrix = confusion_matrix(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1]), 3)
    assert _png_shape(plot_confusion_matrix(matrix, NAMES, "HLF classifier")) == (450, 600, 4)
    with pytest.raises(ValueError, match="3 x 3"):
        plot_confusion_matrix(matrix[:2], NAMES, "bad")


def test_compare_models_reports_every_model_and_draws_one_roc_per_class_and_one_matrix_per_model():
    from lhc_assets.ml.evaluation import compare_models, comparison_table

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(3), 50)
    perfect = np.eye(3, dtype=np.float32)[labels]
    noise = rng.dirichlet(np.ones(3), size=len(labels)).astype(np.float32)
    report, figures = compare_models({"perfect": (labels, perfect), "noise": (labels, noise)},
                                     ["QCD", "ttbar", "wjets"], signal=1)
    assert list(report["models"]) == ["perfect", "noise"] and report["classes"] == ["QCD", "ttbar", "wjets"]
    assert report["models"]["perfect"]["auc"] == {"QCD": 1.0, "ttbar": 1.0, "wjets": 1.0}
    assert report["models"]["perfect"]["accuracy"] == 1.0
    assert report["models"]["noise"]["auc"]["ttbar"] == pytest.approx(
        roc_auc(labels == 1, noise[:, 1]))
    assert sorted(figures) == ["confusion_noise.png", "confusion_perfect.png", "roc_QCD.png", "roc_ttbar.png",
                               "roc_wjets.png"]
    assert all(png.startswith(b"\x89PNG") for png in figures.values())
    table = comparison_table(report).splitlines()
    assert table[0] == "| model | AUC QCD | AUC ttbar | AUC wjets | accuracy |"
    assert table[2] == "| perfect | 1.0000 | 1.0000 | 1.0000 | 1.0000 |"
