"""The trigger decision as a product: the ttbar score threshold for a target efficiency, and the rate per class it
lets through for a given input stream, so a physicist reads off "keep 99 % of ttbar at X Hz instead of Y Hz".

The input stream is the single-lepton stream the classifier would filter: a total rate and its composition by
class. The default composition is the study's (Nguyen et al., arXiv:1807.00083, section 2: W+jets 63.4 %, QCD
36.2 %, ttbar 0.4 % of the events with one isolated lepton); the default total is an illustrative 1 kHz, since the
rates scale with it. Efficiencies per class are measured on a labelled, class-balanced sample (the test split),
so the classes' weights in the stream come from the composition, not from the sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from lhc_assets.ml.evaluation import efficiency_threshold

STUDY_COMPOSITION: Mapping[str, float] = {"QCD": 0.362, "ttbar": 0.004, "W+jets": 0.634}
DEFAULT_INPUT_RATE_HZ = 1000.0


@dataclass(frozen=True)
class InputStream:
    """The stream before the classifier: total rate (Hz) and each class's fraction of it (normalised to 1)."""

    rate_hz: float = DEFAULT_INPUT_RATE_HZ
    composition: Mapping[str, float] = field(default_factory=lambda: dict(STUDY_COMPOSITION))

    def __post_init__(self) -> None:
        if not self.rate_hz > 0:
            raise ValueError(f"the input rate must be positive, got {self.rate_hz} Hz")
        bad = {k: v for k, v in self.composition.items() if not v >= 0}
        total = sum(self.composition.values())
        if bad or not total > 0:
            raise ValueError(f"the composition needs non-negative fractions with a positive sum, got "
                             f"{dict(self.composition)}")
        object.__setattr__(self, "composition", {k: v / total for k, v in self.composition.items()})

    def class_rates(self) -> dict[str, float]:
        return {name: self.rate_hz * fraction for name, fraction in self.composition.items()}


def parse_composition(text: str, aliases: Mapping[str, str] | None = None) -> dict[str, float]:
    """``"qcd=36.2,ttbar=0.4,wjets=63.4"`` (any positive scale) -> {class: weight}, names mapped through ``aliases``
    (e.g. sample name -> class name); ValueError naming the bad part."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[(aliases or {}).get(name.strip(), name.strip())] = float(value)
        except ValueError:
            raise ValueError(f"composition entries are class=weight, got {part!r} in {text!r}") from None
    if not out:
        raise ValueError(f"empty composition {text!r}: give class=weight pairs, e.g. qcd=36.2,ttbar=0.4,wjets=63.4")
    return out


@dataclass(frozen=True)
class WorkingPoint:
    """One target ttbar efficiency of one model: the cut and what passes it."""

    model: str
    target_efficiency: float
    threshold: float  # keep events whose ttbar probability is >= threshold
    efficiency: dict[str, float]  # per class, measured on the labelled sample
    input_hz: dict[str, float]  # per class, before the cut
    output_hz: dict[str, float]  # per class, after it
    events: dict[str, int] = field(default_factory=dict)  # per class, in the labelled sample the efficiencies are from

    def rate_limit_hz(self, name: str) -> float | None:
        """For a class none of whose sample events pass: the rate one passing event would mean (an upper bound of
        the order of the true rate, which the sample cannot resolve); None otherwise."""
        if self.output_hz[name] > 0 or not self.events.get(name):
            return None
        return self.input_hz[name] / self.events[name]

    @property
    def total_input_hz(self) -> float:
        return sum(self.input_hz.values())

    @property
    def total_output_hz(self) -> float:
        return sum(self.output_hz.values())

    def as_dict(self) -> dict:
        return {"model": self.model, "target_efficiency": self.target_efficiency, "threshold": self.threshold,
                "efficiency": self.efficiency, "input_hz": self.input_hz, "output_hz": self.output_hz,
                "events": self.events, "total_input_hz": self.total_input_hz,
                "total_output_hz": self.total_output_hz,
                "rate_reduction": self.total_input_hz / self.total_output_hz if self.total_output_hz else None}


def trigger_menu(labels: np.ndarray, probabilities: Mapping[str, np.ndarray], class_names: Sequence[str],
                 signal: str = "ttbar", efficiencies: Sequence[float] = (0.99, 0.95, 0.90),
                 stream: InputStream | None = None) -> list[WorkingPoint]:
    """For each model (name -> (N, classes) probabilities) and target signal efficiency: the lowest-rate cut on the
    signal probability that keeps at least that fraction of the signal events, and the rates per class after it.

    ``labels`` are class indices into ``class_names``; every class of the stream's composition must be a class
    name, and every class with a non-zero fraction needs events in the sample.
    """
    stream = stream or InputStream()
    labels = np.asarray(labels)
    names = list(class_names)
    unknown = sorted(set(stream.composition) - set(names))
    if unknown:
        raise ValueError(f"composition names unknown classes {unknown}; the classes are {names}")
    if signal not in names:
        raise ValueError(f"signal class {signal!r} is not one of {names}")
    s = names.index(signal)
    counts = {name: int(np.sum(labels == c)) for c, name in enumerate(names)}
    empty = [name for name, fraction in stream.composition.items() if fraction > 0 and counts[name] == 0]
    if empty:
        raise ValueError(f"no events of {empty} in the sample: their efficiency, and so their rate, is unknown")
    input_hz = {name: stream.class_rates().get(name, 0.0) for name in names}
    menu = []
    for model, probs in probabilities.items():
        probs = np.asarray(probs)
        if probs.ndim != 2 or probs.shape != (len(labels), len(names)):
            raise ValueError(f"{model}: probabilities of shape {probs.shape}, expected ({len(labels)}, {len(names)})")
        score = probs[:, s]
        for target in efficiencies:
            cut = efficiency_threshold(score[labels == s], float(target))
            eff = {name: float(np.mean(score[labels == c] >= cut)) if counts[name] else 0.0
                   for c, name in enumerate(names)}
            menu.append(WorkingPoint(model, float(target), cut, eff, input_hz,
                                     {name: input_hz[name] * eff[name] for name in names}, counts))
    return menu


def menu_table(menu: Sequence[WorkingPoint], class_names: Sequence[str]) -> str:
    """A markdown table: one row per model and target efficiency, rates in Hz per class and in total; a class none of
    whose events pass shows "< r", r the rate of one passing event (the sample does not resolve less)."""
    names = list(class_names)
    head = ("| model | ttbar eff. target | cut | " + " | ".join(f"{n} eff." for n in names) + " | "
            + " | ".join(f"{n} Hz" for n in names) + " | total Hz | reduction |")
    lines = [head, "|---|---:|---:|" + "---:|" * (2 * len(names) + 2)]
    for p in menu:
        reduction = p.as_dict()["rate_reduction"]
        lines.append(
            f"| {p.model} | {p.target_efficiency:.2f} | {p.threshold:.4g} | "
            + " | ".join(f"{p.efficiency[n]:.4f}" for n in names) + " | "
            + " | ".join(_rate(p, n) for n in names)
            + f" | {p.total_output_hz:.4g} | {'-' if reduction is None else f'{reduction:.3g}x'} |")
    return "\n".join(lines)


def headline(point: WorkingPoint, signal: str = "ttbar") -> str:
    """One sentence a physicist quotes."""
    return (f"{point.model}: keep {100 * point.efficiency[signal]:.1f} % of {signal} at {point.total_output_hz:.4g} "
            f"Hz instead of {point.total_input_hz:.4g} Hz (cut {point.threshold:.4g} on the {signal} probability)")


def _rate(point: WorkingPoint, name: str) -> str:
    limit = point.rate_limit_hz(name)
    return f"< {limit:.2g}" if limit is not None else f"{point.output_hz[name]:.3g}"
