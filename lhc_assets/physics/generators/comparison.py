"""The toy generator against the Pythia engine: the pipeline's own view of each sample, side by side.

For every source and class: the fraction of events passing the selection, the 14 HLF of the selected
events and their particle multiplicities (tracks above 0.5 GeV, the lepton's own included; photons and
neutral hadrons above 1 GeV: the candidates of the particle list, before its caps). Each feature gets a
distance between the two sources per class: the Kolmogorov-Smirnov statistic (the largest gap between the
two cumulative distributions, 0 = identical, 1 = disjoint). Pure numpy/matplotlib on the project's own
selection and feature kernels; no Dagster.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lhc_assets.physics import features as K
from lhc_assets.physics.delphes_reader import inspect_file, read_batches
from lhc_assets.physics.schema import HLF_COLUMNS, LABEL_NAMES, NEUTRAL_MIN_ET, PHOTON_MIN_ET, SAMPLES, TRACK_MIN_PT

# Per selected event: the particle-list candidates of each kind (DESIGN.md section 4's thresholds).
MULTIPLICITIES = {
    "n_tracks": ("EFlowTrack", "PT", TRACK_MIN_PT),
    "n_photons": ("EFlowPhoton", "ET", PHOTON_MIN_ET),
    "n_neutral_hadrons": ("EFlowNeutralHadron", "ET", NEUTRAL_MIN_ET),
}
FEATURES = (*HLF_COLUMNS, *MULTIPLICITIES)
_COUNTS = {"nJets", "nBjets", "lepCharge", "lepIsEle", *MULTIPLICITIES}  # integer-valued: unit-width bins


@dataclass
class SampleFeatures:
    """What the pipeline sees of one class of one source."""

    events: int
    selected: int
    values: dict[str, np.ndarray]  # feature -> one value per selected event

    @property
    def efficiency(self) -> float:
        return self.selected / self.events if self.events else 0.0


def _count_above(selection: K.Selection, collection: str, field: str, threshold: float) -> np.ndarray:
    col = selection.cols[collection]
    above = np.concatenate([[0], np.cumsum(col.fields[field] > threshold)])
    sel = selection.selected
    return above[col.offsets[sel + 1]] - above[col.offsets[sel]]


def read_features(paths: Iterable[str | Path], sample: str, max_events: int | None = None) -> SampleFeatures:
    """Selection and features of the events of some Delphes files of one class (at most ``max_events``)."""
    events, selected, parts = 0, 0, {f: [] for f in FEATURES}
    for path in paths:
        info = inspect_file(str(path))
        stop = info.num_entries if max_events is None else min(info.num_entries, max_events - events)
        for batch in read_batches(str(path), sample, f"{sample}/compare", 0, stop, collections=info.collections):
            selection = K.select(batch)
            hlf = K.hlf_batch(batch, selection)
            for name in HLF_COLUMNS:
                parts[name].append(hlf.column(name).to_numpy())
            for name, (collection, field, threshold) in MULTIPLICITIES.items():
                parts[name].append(_count_above(selection, collection, field, threshold))
            events += batch.num_rows
            selected += selection.selected.shape[0]
        if max_events is not None and events >= max_events:
            break
    return SampleFeatures(events, selected, {f: np.concatenate(v) if v else np.zeros(0) for f, v in parts.items()})


def ks_distance(a: np.ndarray, b: np.ndarray) -> float | None:
    """Two-sample Kolmogorov-Smirnov statistic: the largest difference of the empirical CDFs (None when a
    sample is empty)."""
    if a.size == 0 or b.size == 0:
        return None
    grid = np.union1d(a, b)
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / a.size
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


def compare(sources: Mapping[str, Mapping[str, SampleFeatures]], reference: str, other: str) -> dict:
    """The report: per class the events, selection efficiency and feature means of each source, and the
    KS distance of every feature between ``reference`` and ``other``."""
    report: dict = {"sources": list(sources), "reference": reference, "other": other, "classes": {}}
    for sample in SAMPLES:
        if sample not in sources[reference] or sample not in sources[other]:
            continue
        a, b = sources[reference][sample], sources[other][sample]
        report["classes"][sample] = {
            "selection_efficiency": {reference: a.efficiency, other: b.efficiency},
            "events": {reference: a.events, other: b.events},
            "selected": {reference: a.selected, other: b.selected},
            "mean": {f: {reference: _mean(a.values[f]), other: _mean(b.values[f])} for f in FEATURES},
            "ks_distance": {f: ks_distance(a.values[f], b.values[f]) for f in FEATURES},
        }
    return report


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def distance_table(report: dict) -> str:
    """The KS distances as a markdown table, one row per feature, one column per class."""
    classes = list(report["classes"])
    lines = ["| feature | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for f in FEATURES:
        cells = (report["classes"][c]["ks_distance"][f] for c in classes)
        lines.append(f"| {f} | " + " | ".join("-" if d is None else f"{d:.3f}" for d in cells) + " |")
    return "\n".join(lines)


def efficiency_table(report: dict) -> str:
    """Selection efficiency per class and source, as a markdown table."""
    reference, other = report["reference"], report["other"]
    lines = [f"| class | {reference} | {other} | events ({reference} / {other}) |", "|---|---:|---:|---:|"]
    for c, r in report["classes"].items():
        e, n = r["selection_efficiency"], r["events"]
        lines.append(f"| {c} | {e[reference]:.3f} | {e[other]:.3f} | {n[reference]} / {n[other]} |")
    return "\n".join(lines)


_STYLE = {0: "-", 1: "--"}


def plot_features(sources: Mapping[str, Mapping[str, SampleFeatures]], features: tuple[str, ...] = FEATURES,
                  columns: int = 4) -> bytes:
    """Normalised histograms of each feature, every class in its colour, one line style per source (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(features) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    colours = {s: f"C{i}" for i, s in enumerate(SAMPLES)}
    for ax, feature in zip(axes.flat, features, strict=False):
        pooled = np.concatenate([f.values[feature] for by_class in sources.values() for f in by_class.values()])
        bins = _bins(pooled, feature)
        for k, (source, by_class) in enumerate(sources.items()):
            for sample, f in by_class.items():
                if f.values[feature].size:
                    ax.hist(np.clip(f.values[feature], bins[0], bins[-1]), bins=bins, density=True,
                            histtype="step", linestyle=_STYLE.get(k, ":"), color=colours[sample],
                            label=f"{LABEL_NAMES[SAMPLES[sample]]} ({source})")
        ax.set_title(feature, fontsize=10)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(features):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower right", fontsize=9, ncol=2)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def _bins(values: np.ndarray, feature: str) -> np.ndarray:
    if values.size == 0:
        return np.linspace(0.0, 1.0, 41)
    if feature in _COUNTS:
        hi = np.percentile(values, 99.5)
        step = max(1.0, np.ceil((hi - values.min() + 1) / 40))
        return np.arange(values.min() - 0.5, hi + step, step)
    lo, hi = np.percentile(values, [0.5, 99.5])
    return np.linspace(lo, hi if hi > lo else lo + 1.0, 41)
