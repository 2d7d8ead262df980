"""Training inputs from the feature tables (DESIGN.md section 5): scalers, HLF scaling, the GRU input.

Pure numpy/numba, no Spark, no Dagster, no TensorFlow: the Spark tasks that build the training sets
call these on whole batches of events.

GRU input of one event: the 801 x 19 particle list with the padding rows first and exactly zero, then
the real rows sorted by dR to the selected lepton, descending, so the lepton is the last step (nearest
the RNN output). Real rows are standardised per feature with the mean and standard deviation fitted
on the real rows of the train split. (The original standardised each event on its own rows including
the padding, which defeats masking.)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numba
import numpy as np

from lhc_assets.ml.contract import GRU_WIDTH, N_CLASSES, N_HLF
from lhc_assets.physics.schema import HLF_COLUMNS, LLF_COLUMNS, LLF_ROWS, N_LLF

_ETA = LLF_COLUMNS.index("eta")
_PHI = LLF_COLUMNS.index("phi")


@dataclass
class Moments:
    """Count, mean and sum of squared deviations per column, mergeable across tasks (Chan et al.)."""

    count: int = 0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(N_LLF))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(N_LLF))

    @classmethod
    def of(cls, rows: np.ndarray) -> Moments:
        """Moments of the rows (n, N_LLF) of one chunk, in float64."""
        rows = np.asarray(rows, np.float64)
        if rows.shape[0] == 0:
            return cls(0, np.zeros(rows.shape[1]), np.zeros(rows.shape[1]))
        mean = rows.mean(axis=0)
        return cls(rows.shape[0], mean, ((rows - mean) ** 2).sum(axis=0))

    @classmethod
    def of_events(cls, row_offsets: np.ndarray, rows: np.ndarray, events: np.ndarray) -> Moments:
        """Moments of the rows of some events (``rows[row_offsets[e]:row_offsets[e+1]]`` for e in ``events``),
        read in place: no copy of the selected rows."""
        row_offsets = np.asarray(row_offsets, np.int64)
        events = np.asarray(events, np.int64)
        count, mean, m2 = _event_moments(row_offsets[:-1][events], row_offsets[1:][events],
                                         np.asarray(rows).reshape(-1, N_LLF))
        return cls(int(count), mean, m2)

    def merge(self, other: Moments) -> Moments:
        n = self.count + other.count
        if n == 0:
            return Moments(0, self.mean.copy(), self.m2.copy())
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / n)
        return Moments(n, mean, m2)

    def std(self) -> np.ndarray:
        """Population standard deviation per column."""
        return np.sqrt(self.m2 / self.count) if self.count else np.zeros_like(self.m2)


@dataclass(frozen=True)
class FeatureScalers:
    """Scalers fitted on the train split: min-max for the 14 HLF, mean/std for the 19 LLF columns."""

    hlf_min: tuple[float, ...]
    hlf_max: tuple[float, ...]
    llf_mean: tuple[float, ...]
    llf_std: tuple[float, ...]
    train_events: int
    train_particles: int

    def __post_init__(self) -> None:
        for name, size in (("hlf_min", N_HLF), ("hlf_max", N_HLF), ("llf_mean", N_LLF), ("llf_std", N_LLF)):
            values = getattr(self, name)
            if len(values) != size or not all(math.isfinite(v) for v in values):
                raise ValueError(f"feature scalers: {name} must be {size} finite numbers, got {values!r}")

    def hlf_span(self) -> np.ndarray:
        """max - min per HLF column; a constant column gets span 1 so it scales to 0, not NaN."""
        return hlf_span(self.hlf_min, self.hlf_max)

    def llf_inv_std(self) -> np.ndarray:
        """1/std per LLF column; a constant column gets 1 (it standardises to 0)."""
        std = np.asarray(self.llf_std, np.float64)
        return np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 1.0)

    def to_dict(self) -> dict:
        return {
            "hlf": {"columns": list(HLF_COLUMNS), "min": list(self.hlf_min), "max": list(self.hlf_max)},
            "llf": {"columns": list(LLF_COLUMNS), "mean": list(self.llf_mean), "std": list(self.llf_std)},
            "fitted_on": {"split": "train", "events": self.train_events, "particles": self.train_particles},
        }

    @classmethod
    def from_dict(cls, data: dict) -> FeatureScalers:
        if data["hlf"]["columns"] != list(HLF_COLUMNS) or data["llf"]["columns"] != list(LLF_COLUMNS):
            raise ValueError("feature scalers were fitted for other feature columns; re-materialize feature_scalers")
        return cls(
            hlf_min=tuple(data["hlf"]["min"]), hlf_max=tuple(data["hlf"]["max"]),
            llf_mean=tuple(data["llf"]["mean"]), llf_std=tuple(data["llf"]["std"]),
            train_events=int(data["fitted_on"]["events"]), train_particles=int(data["fitted_on"]["particles"]),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> FeatureScalers:
        return cls.from_dict(json.loads(text))


def hlf_span(hlf_min, hlf_max) -> np.ndarray:
    """max - min per HLF column; a constant column gets span 1 so it scales to 0, not NaN."""
    span = np.asarray(hlf_max, np.float64) - np.asarray(hlf_min, np.float64)
    return np.where(span > 0, span, 1.0)


def scale_hlf(values: np.ndarray, hlf_min, hlf_max) -> np.ndarray:
    """Min-max scale (n, 14) HLF values with the train-fitted range; train values land in [0, 1] exactly."""
    x = np.asarray(values, np.float64)
    return ((x - np.asarray(hlf_min, np.float64)) / hlf_span(hlf_min, hlf_max)).astype(np.float32)


def one_hot(labels: np.ndarray) -> np.ndarray:
    """(n,) class indices -> (n, 3) float32 one-hot rows."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise ValueError(f"class labels must be in [0, {N_CLASSES}), got {sorted(set(labels.tolist()))}")
    return np.eye(N_CLASSES, dtype=np.float32)[labels]


@numba.njit(cache=True, nogil=True)
def _sort_by_dr(starts, stops, rows, out):
    two_pi = 2.0 * np.pi
    d = 0
    for e in range(starts.shape[0]):
        lo = starts[e]
        k = stops[e] - lo
        key = np.empty(k)
        key[0] = 1.0  # the lepton (dR 0) sorts last even if another particle sits exactly on it
        eta0 = rows[lo, _ETA]
        phi0 = rows[lo, _PHI]
        for i in range(1, k):
            deta = rows[lo + i, _ETA] - eta0
            dphi = (rows[lo + i, _PHI] - phi0 + np.pi) % two_pi - np.pi
            key[i] = -np.sqrt(deta * deta + dphi * dphi)
        order = np.argsort(key, kind="mergesort")  # stable: equal dR keep the stored order
        for j in range(k):
            out[d + j] = rows[lo + order[j]]
        d += k


def sort_particles(row_offsets: np.ndarray, rows: np.ndarray,
                   events: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The real particle rows of each event sorted by dR to the lepton, descending (the lepton last).

    ``rows`` is (R, 19) with each event's lepton first (the LLF table's stored order); event e's rows are
    ``rows[row_offsets[e]:row_offsets[e+1]]``. ``events``: only these events, in this order. Returns the
    offsets (n + 1,) and the sorted rows (unscaled), the compact form of the GRU inputs: ``pad_standardise``
    turns it into the padded 801 x 19 layout.
    """
    row_offsets = np.asarray(row_offsets, np.int64)
    rows = np.ascontiguousarray(rows, np.float32).reshape(-1, N_LLF)
    starts, stops = row_offsets[:-1], row_offsets[1:]
    if events is not None:
        starts, stops = starts[events], stops[events]
    counts = stops - starts
    if counts.size and (counts.min() < 1 or counts.max() > LLF_ROWS):
        raise ValueError(f"every event needs 1..{LLF_ROWS} particle rows, got {counts.min()}..{counts.max()}")
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    out = np.empty((offsets[-1], N_LLF), np.float32)
    _sort_by_dr(starts, stops, rows, out)
    return offsets, out


@numba.njit(cache=True, nogil=True)
def _pad_standardise(offsets, rows, mean, inv_std, out, out_rows):
    for i in range(offsets.shape[0] - 1):
        d = out_rows[i]
        lo = offsets[i]
        k = offsets[i + 1] - lo
        base = (LLF_ROWS - k) * N_LLF
        out[d, :base] = 0.0
        for j in range(k):
            for c in range(N_LLF):
                out[d, base + j * N_LLF + c] = (rows[lo + j, c] - mean[c]) * inv_std[c]


def pad_standardise(offsets: np.ndarray, rows: np.ndarray, scalers: FeatureScalers | None = None,
                    out: np.ndarray | None = None, out_rows: np.ndarray | None = None) -> np.ndarray:
    """GRU inputs (n, 801*19) float32 from sorted particle rows (``sort_particles``): the padding rows first
    and exactly zero, then event i's rows standardised with the train mean/std (float64 arithmetic; without
    ``scalers`` they keep their values).

    With ``out`` and ``out_rows``, event i is written to ``out[out_rows[i]]``: reordering, padding and
    scaling are then one copy (the training-data reduce sorts each shard this way).
    """
    offsets = np.asarray(offsets, np.int64)
    rows = np.ascontiguousarray(rows, np.float32).reshape(-1, N_LLF)
    n = len(offsets) - 1
    counts = np.diff(offsets)
    if n and (counts.min() < 1 or counts.max() > LLF_ROWS or offsets[-1] > len(rows)):
        raise ValueError(f"every event needs 1..{LLF_ROWS} particle rows within the {len(rows)} rows given")
    if out is None:
        out = np.empty((n, GRU_WIDTH), np.float32)
    out_rows = np.arange(n) if out_rows is None else np.asarray(out_rows, np.int64)
    if len(out_rows) != n or (n and (out_rows.min() < 0 or out_rows.max() >= len(out))):
        raise ValueError(f"out_rows must give each of the {n} events a row of out ({len(out)} rows)")
    mean = np.asarray(scalers.llf_mean, np.float64) if scalers else np.zeros(N_LLF)
    _pad_standardise(offsets, rows, mean, scalers.llf_inv_std() if scalers else np.ones(N_LLF), out, out_rows)
    return out


def gru_input(row_offsets: np.ndarray, rows: np.ndarray, scalers: FeatureScalers | None = None,
              events: np.ndarray | None = None) -> np.ndarray:
    """GRU inputs (n, 801*19) float32 of n events whose real LLF rows are ``rows[row_offsets[e]:row_offsets[e+1]]``.

    ``rows`` is (R, 19) with each event's lepton first (the LLF table's stored order). Without ``scalers``
    the real rows keep their values. ``events``: build only these events, in this order (row k of the result
    is event ``events[k]``), without reordering ``rows``.
    """
    return pad_standardise(*sort_particles(row_offsets, rows, events), scalers)


@numba.njit(cache=True, nogil=True)
def _event_moments(starts, stops, rows):
    n_cols = rows.shape[1]
    count = 0
    total = np.zeros(n_cols)
    for e in range(starts.shape[0]):
        for r in range(starts[e], stops[e]):
            count += 1
            for c in range(n_cols):
                total[c] += rows[r, c]
    mean = total / max(count, 1)
    m2 = np.zeros(n_cols)
    for e in range(starts.shape[0]):
        for r in range(starts[e], stops[e]):
            for c in range(n_cols):
                d = rows[r, c] - mean[c]
                m2[c] += d * d
    return count, mean, m2


@numba.njit(cache=True, nogil=True)
def _finite_range(values):
    bad = 0
    lo = np.inf
    hi = -np.inf
    for v in values:
        if np.isfinite(v):
            lo = min(lo, v)
            hi = max(hi, v)
        else:
            bad += 1
    return bad, lo, hi


def finite_range(values: np.ndarray) -> tuple[int, float, float]:
    """(number of NaN/inf values, min and max of the finite ones) in one pass without temporaries; the range
    is (inf, -inf) when no value is finite."""
    bad, lo, hi = _finite_range(np.ravel(values))
    return int(bad), float(lo), float(hi)


def shard_of(shuffle_key: np.ndarray, shards: int) -> np.ndarray:
    """Shard of each row for a split written as ``shards`` files: contiguous ranges of the int64 shuffle key,
    so that files taken in order and sorted inside are the whole split sorted by the key."""
    u = (np.asarray(shuffle_key, np.int64).astype(np.float64) + 2.0**63) / 2.0**64
    return np.minimum((u * shards).astype(np.int64), shards - 1)
