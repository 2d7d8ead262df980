"""Model evaluation: ROC curves and AUC, trigger-style background rejection, confusion matrix, report plots.

Pure numpy + matplotlib (Agg, no pyplot global state): no Dagster, Spark, TensorFlow or scikit-learn, so
the evaluation assets and the tests can call it on plain arrays of labels and softmax outputs. Class names
are passed in by the caller, so this module does not depend on the physics code either.

Conventions: ROC curves are one-vs-rest with ``probabilities[:, c]`` as the score of class ``c``; a cut
selects events with ``score >= threshold``; everything returned by ``evaluate_model`` is JSON-serialisable.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Fixed size and resolution keep the PNGs small and their pixel size predictable (width x height).
DPI = 100
FIGSIZE = (6.0, 4.5)  # ROC and confusion matrix: 600 x 450 px
TRAINING_FIGSIZE = (9.0, 4.0)  # two panels side by side: 900 x 400 px


# ----------------------------------------------------------------------------------------------- ROC, AUC


def _binary_inputs(is_positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated (bool truth, float64 score) 1-D arrays; ValueError says what is wrong."""
    truth = np.asarray(is_positive)
    score = np.asarray(scores, dtype=np.float64)
    if truth.ndim != 1 or score.ndim != 1:
        raise ValueError(f"is_positive and scores must be 1-D, got shapes {truth.shape} and {score.shape}")
    if truth.shape != score.shape:
        raise ValueError(f"is_positive and scores differ in length: {truth.size} != {score.size}")
    if truth.dtype != np.bool_:
        if not np.isin(truth, (0, 1)).all():
            raise ValueError("is_positive must be boolean or contain only 0 and 1")
        truth = truth.astype(bool)
    if not np.isfinite(score).all():
        raise ValueError(f"scores contain {np.count_nonzero(~np.isfinite(score))} NaN or infinite value(s)")
    n_pos = int(np.count_nonzero(truth))
    if n_pos == 0 or n_pos == truth.size:
        which = "positive" if n_pos == 0 else "negative"
        raise ValueError(f"ROC needs both classes, but there are no {which} events (n={truth.size})")
    return truth, score


def roc_curve(is_positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds) for the cuts ``score >= threshold``.

    One point per distinct score (tied events enter together), preceded by (0, 0) at threshold +inf;
    the last point is (1, 1) at the lowest score. Thresholds are decreasing.
    """
    truth, score = _binary_inputs(is_positive, scores)
    order = np.argsort(-score, kind="stable")
    score, truth = score[order], truth[order]
    # Last index of each run of equal scores: the cut at that score keeps the whole run.
    ends = np.flatnonzero(np.diff(score) != 0)
    ends = np.append(ends, score.size - 1)
    tps = np.cumsum(truth)[ends]
    fps = (ends + 1) - tps
    tpr = np.concatenate(([0.0], tps / tps[-1]))
    fpr = np.concatenate(([0.0], fps / fps[-1]))
    thresholds = np.concatenate(([np.inf], score[ends]))
    return fpr, tpr, thresholds


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given the mean of the ranks they span, in O(n log n)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_values[1:] != sorted_values[:-1])))
    ends = np.append(starts[1:], values.size)  # exclusive
    group_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def roc_auc(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve from the Mann-Whitney U statistic (ties count 1/2).

    Equals the probability that a random positive scores above a random negative, and equals the
    trapezoidal area under ``roc_curve`` exactly (up to rounding), since that curve joins tied events linearly.
    """
    truth, score = _binary_inputs(is_positive, scores)
    n_pos = int(np.count_nonzero(truth))
    n_neg = truth.size - n_pos
    u = _average_ranks(score)[truth].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def downsample_curve(fpr: np.ndarray, tpr: np.ndarray, max_points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points of a ROC curve, always including the first and the last.

    Points are spaced evenly along the curve length (fpr + tpr, both non-decreasing) rather than by index,
    so the steep low-fpr region of a good classifier keeps its share of points.
    """
    fpr, tpr = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    if fpr.ndim != 1 or fpr.shape != tpr.shape:
        raise ValueError(f"fpr and tpr must be 1-D of equal length, got shapes {fpr.shape} and {tpr.shape}")
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2 (first and last point), got {max_points}")
    if fpr.size <= max_points:
        return fpr.copy(), tpr.copy()
    length = fpr + tpr
    targets = np.linspace(length[0], length[-1], max_points)
    # Interior targets only; first and last indices are added explicitly. Duplicates collapse.
    inner = np.clip(np.searchsorted(length, targets[1:-1], side="left"), 1, fpr.size - 2)
    keep = np.unique(np.concatenate(([0], inner, [fpr.size - 1])))
    return fpr[keep], tpr[keep]


# ------------------------------------------------------------------------------- cuts, background rejection


def efficiency_threshold(signal_scores: np.ndarray, efficiency: float) -> float:
    """Highest threshold t such that the fraction of signal with ``score >= t`` is at least ``efficiency``."""
    scores = np.asarray(signal_scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"signal_scores must be a non-empty 1-D array, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("signal_scores contain NaN or infinite values")
    if not 0.0 < efficiency <= 1.0:
        raise ValueError(f"efficiency must be in (0, 1], got {efficiency}")
    n = scores.size
    # Smallest k with k/n >= efficiency, computed with the same division the achieved efficiency uses, so
    # 0.07 * 100 = 7.000000000000001 does not round k up to 8.
    k = min(max(math.ceil(efficiency * n), 1), n)
    if k > 1 and (k - 1) / n >= efficiency:
        k -= 1
    elif k < n and k / n < efficiency:
        k += 1
    # The k-th highest score keeps at least k events (more if tied); any higher cut keeps fewer than k.
    return float(np.partition(scores, n - k)[n - k])


def _class_labels(labels: np.ndarray, n_classes: int, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D class indices, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be integer class indices, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"{name} must be in [0, {n_classes}), got values from {labels.min()} to {labels.max()}")
    return labels.astype(np.int64, copy=False)


def _finite_matrix(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"{name} must be 2-D (events, classes), got shape {values.shape}")
    bad = np.count_nonzero(~np.isfinite(values))
    if bad:
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    return values


def background_rejection(
    labels: np.ndarray,
    probabilities: np.ndarray,
    signal: int,
    efficiencies: Sequence[float],
    *,
    class_names: Sequence[str],
) -> list[dict[str, Any]]:
    """Trigger-style working points: cut ``probabilities[:, signal] >= threshold`` at each target efficiency.

    Returns one dict per target: ``signal_efficiency_target``, ``threshold``, ``signal_efficiency``
    (achieved, >= target) and ``background`` {class name: {"efficiency", "rejection"}} for every other class.
    ``rejection`` is 1 / efficiency, or None when no background event passes; both are None for a
    background class with no events.
    """
    probabilities = _finite_matrix(probabilities, "probabilities")
    n_events, n_classes = probabilities.shape
    labels = _class_labels(labels, n_classes, "labels")
    if labels.size != n_events:
        raise ValueError(f"labels has {labels.size} events but probabilities has {n_events}")
    if len(class_names) != n_classes:
        raise ValueError(f"class_names has {len(class_names)} names but probabilities has {n_classes} classes")
    if not 0 <= signal < n_classes:
        raise ValueError(f"signal must be a class index in [0, {n_classes}), got {signal}")
    score = probabilities[:, signal]
    signal_scores = score[labels == signal]
    if signal_scores.size == 0:
        raise ValueError(f"no events of the signal class {class_names[signal]!r} (index {signal})")

    results = []
    for target in efficiencies:
        threshold = efficiency_threshold(signal_scores, float(target))
        background: dict[str, dict[str, float | None]] = {}
        for c in range(n_classes):
            if c == signal:
                continue
            class_scores = score[labels == c]
            if class_scores.size == 0:
                background[class_names[c]] = {"efficiency": None, "rejection": None}
                continue
            eff_b = float(np.mean(class_scores >= threshold))
            background[class_names[c]] = {"efficiency": eff_b, "rejection": 1.0 / eff_b if eff_b > 0 else None}
        results.append(
            {
                "signal_efficiency_target": float(target),
                "threshold": threshold,
                "signal_efficiency": float(np.mean(signal_scores >= threshold)),
                "background": background,
            }
        )
    return results


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Row-normalised confusion matrix (rows = true class, columns = predicted); an empty row stays all zeros."""
    labels = _class_labels(labels, n_classes, "labels")
    predicted = _class_labels(predicted, n_classes, "predicted")
    if labels.size != predicted.size:
        raise ValueError(f"labels and predicted differ in length: {labels.size} != {predicted.size}")
    counts = np.bincount(labels * n_classes + predicted, minlength=n_classes * n_classes)
    counts = counts.reshape(n_classes, n_classes).astype(np.float64)
    row_sums = counts.sum(axis=1, keepdims=True)
    # Divide only non-empty rows so a class absent from the sample gives zeros rather than NaN.
    return np.divide(counts, row_sums, out=np.zeros_like(counts), where=row_sums > 0)


# ----------------------------------------------------------------------------------------------- report


def evaluate_model(
    labels_onehot: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    signal: int = 1,
    efficiencies: Sequence[float] = (0.99, 0.95, 0.90),
) -> dict[str, Any]:
    """JSON-serialisable evaluation report of one model on one labelled sample.

    Keys: ``n_events``, ``class_counts``, ``accuracy``, ``auc`` and ``roc`` (one-vs-rest per class,
    ROC downsampled), ``confusion_matrix`` (row-normalised, rows = true class), ``signal`` (name) and
    ``rejection`` (``background_rejection`` for that signal). A class with no events (or only that class)
    has None for its AUC and ROC, since one-vs-rest is undefined; ``rejection`` is None if the signal is absent.
    """
    onehot = _finite_matrix(labels_onehot, "labels_onehot")
    probabilities = _finite_matrix(probabilities, "probabilities")
    if onehot.shape != probabilities.shape:
        raise ValueError(f"labels_onehot shape {onehot.shape} differs from probabilities shape {probabilities.shape}")
    n_events, n_classes = probabilities.shape
    if n_events == 0:
        raise ValueError("labels_onehot and probabilities have no events")
    if len(class_names) != n_classes:
        raise ValueError(f"class_names has {len(class_names)} names but probabilities has {n_classes} columns")
    if len(set(class_names)) != n_classes:
        raise ValueError(f"class_names must be distinct (they key the report), got {list(class_names)}")
    if not np.isin(onehot, (0.0, 1.0)).all() or not (onehot.sum(axis=1) == 1).all():
        bad = int(np.flatnonzero(~(np.isin(onehot, (0.0, 1.0)).all(axis=1) & (onehot.sum(axis=1) == 1)))[0])
        raise ValueError(f"labels_onehot must have exactly one 1 per row, row {bad} is {onehot[bad].tolist()}")
    if not 0 <= signal < n_classes:
        raise ValueError(f"signal must be a class index in [0, {n_classes}), got {signal}")

    labels = onehot.argmax(axis=1)
    predicted = probabilities.argmax(axis=1)
    counts = np.bincount(labels, minlength=n_classes)

    auc: dict[str, float | None] = {}
    roc: dict[str, dict[str, list[float]] | None] = {}
    for c, name in enumerate(class_names):
        if counts[c] in (0, n_events):
            auc[name], roc[name] = None, None
            continue
        is_c = labels == c
        auc[name] = roc_auc(is_c, probabilities[:, c])
        fpr, tpr, _ = roc_curve(is_c, probabilities[:, c])
        fpr, tpr = downsample_curve(fpr, tpr)
        roc[name] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}

    rejection = None
    if counts[signal] > 0:
        rejection = background_rejection(labels, probabilities, signal, efficiencies, class_names=class_names)

    return {
        "n_events": int(n_events),
        "class_counts": {name: int(counts[c]) for c, name in enumerate(class_names)},
        "accuracy": float(np.mean(predicted == labels)),
        "auc": auc,
        "confusion_matrix": confusion_matrix(labels, predicted, n_classes).tolist(),
        "roc": roc,
        "signal": class_names[signal],
        "rejection": rejection,
    }


# ----------------------------------------------------------------------------------------------- plots


def png_bytes(fig: Figure) -> bytes:
    """PNG bytes of a figure, rendered with Agg (thread-safe, no pyplot figure registry to leak into)."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def plot_roc_comparison(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], aucs: Mapping[str, float], class_name: str
) -> bytes:
    """PNG comparing the one-vs-rest ROC curves of several models for one class; AUC in the legend.

    ``curves`` maps model name -> (fpr, tpr); standard orientation, fpr on x and tpr on y, linear axes.
    """
    if not curves:
        raise ValueError("curves is empty: nothing to plot")
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    for model, (fpr, tpr) in curves.items():
        label = f"{model} (AUC = {aucs[model]:.4f})" if model in aucs else model
        ax.plot(np.asarray(fpr), np.asarray(tpr), label=label, linewidth=1.5)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="random")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("False positive rate (background efficiency)")
    ax.set_ylabel("True positive rate (signal efficiency)")
    ax.set_title(f"ROC: {class_name} vs rest")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return png_bytes(fig)


def plot_training_curves(history: Mapping[str, Sequence[float]], title: str) -> bytes:
    """PNG of a Keras-style history: loss (and val_loss) left, accuracy (and val_accuracy) right, per epoch."""
    fig = Figure(figsize=TRAINING_FIGSIZE, dpi=DPI, layout="constrained")
    fig.suptitle(title)
    for ax, metric, ylabel in zip(fig.subplots(1, 2), ("loss", "accuracy"), ("Loss", "Accuracy"), strict=True):
        plotted = False
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            values = history.get(key)
            if values is None or len(values) == 0:
                continue
            ax.plot(np.arange(1, len(values) + 1), np.asarray(values, dtype=np.float64), marker="o",
                    markersize=3, label=label)
            plotted = True
        if plotted:
            ax.legend()
        else:
            # Keep the panel so every report has the same layout; say why it is empty.
            ax.text(0.5, 0.5, f"no {metric} recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    return png_bytes(fig)


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], title: str) -> bytes:
    """PNG heatmap of a (normally row-normalised) confusion matrix with each cell's value written in it."""
    matrix = np.asarray(matrix, dtype=np.float64)
    n = len(class_names)
    if matrix.shape != (n, n):
        raise ValueError(f"matrix must be {n} x {n} to match class_names, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("matrix contains NaN or infinite values")
    # Fractions share a fixed 0..1 colour scale across models; raw counts scale to their maximum.
    normalised = matrix.max(initial=0.0) <= 1.0
    vmax = 1.0 if normalised else matrix.max()
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=vmax)
    fig.colorbar(image, ax=ax, label="fraction of true class" if normalised else "events")
    for i in range(n):
        for j in range(n):
            value = matrix[i, j]
            text = f"{value:.3f}" if normalised else f"{value:.0f}"
            ax.text(j, i, text, ha="center", va="center", color="white" if value > 0.5 * vmax else "black")
    ax.set_xticks(range(n), labels=list(class_names))
    ax.set_yticks(range(n), labels=list(class_names))
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title)
    return png_bytes(fig)


def compare_models(predictions: Mapping[str, tuple[np.ndarray, np.ndarray]], class_names: Sequence[str],
                   signal: int) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Every model's (labels, class probabilities) on the same test events -> the comparison report (per model:
    ``evaluate_model``) and its figures: ``roc_<class>.png`` comparing the models, ``confusion_<model>.png``."""
    n = len(class_names)
    report: dict[str, Any] = {"classes": list(class_names), "models": {}}
    for name, (y, p) in predictions.items():
        onehot = np.eye(n, dtype=np.float32)[y]
        report["models"][name] = evaluate_model(onehot, np.asarray(p, dtype=np.float32), class_names, signal=signal)
    figures: dict[str, bytes] = {}
    for c, class_name in enumerate(class_names):
        curves = {}
        for name, (y, p) in predictions.items():
            fpr, tpr, _ = roc_curve(y == c, p[:, c])
            curves[name] = (fpr, tpr)
        aucs = {name: report["models"][name]["auc"][class_name] for name in predictions}
        figures[f"roc_{class_name}.png"] = plot_roc_comparison(curves, aucs, class_name)
    for name in predictions:
        matrix = np.asarray(report["models"][name]["confusion_matrix"])
        figures[f"confusion_{name}.png"] = plot_confusion_matrix(matrix, class_names, name)
    return report, figures


def comparison_table(report: Mapping[str, Any]) -> str:
    """The report's AUC per class and accuracy per model, as a markdown table."""
    classes = report["classes"]
    lines = ["| model | " + " | ".join(f"AUC {c}" for c in classes) + " | accuracy |",
             "|---|" + "---:|" * (len(classes) + 1)]
    for name, r in report["models"].items():
        lines.append(f"| {name} | " + " | ".join(f"{r['auc'][c]:.4f}" for c in classes) + f" | {r['accuracy']:.4f} |")
    return "\n".join(lines)
