"""Grid search for the HLF classifier (DESIGN section 6): trials of k-fold cross-validation, one task each.

A trial is pure (numpy in, a dict of scores out) so that Spark can run trials in parallel on its
executors; the sample it cross-validates on is read from a ``.npz`` file on storage every executor sees,
once per Python worker.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

# DESIGN section 6.
DEFAULT_BATCH_SIZES = (64, 100, 200)
DEFAULT_EPOCHS = (10, 30, 50)
DEFAULT_HIDDEN = ((50, 100, 150), (20, 50, 100), (10, 20, 50))


@dataclass(frozen=True)
class Trial:
    batch_size: int
    epochs: int
    hidden: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"batch{self.batch_size}-epochs{self.epochs}-hidden{'x'.join(map(str, self.hidden))}"


def grid(
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    epochs: Sequence[int] = DEFAULT_EPOCHS,
    hidden: Sequence[Sequence[int]] = DEFAULT_HIDDEN,
) -> list[Trial]:
    """Every combination: batch size x epochs x one unit count per hidden layer (243 trials by default)."""
    if not batch_sizes or not epochs or not hidden or any(not layer for layer in hidden):
        raise ValueError("every grid dimension needs at least one value")
    if min(batch_sizes) < 1 or min(epochs) < 1 or min(min(layer) for layer in hidden) < 1:
        raise ValueError("batch sizes, epochs and hidden units must be positive")
    return [
        Trial(int(b), int(e), tuple(int(u) for u in units))
        for b, e, units in itertools.product(batch_sizes, epochs, itertools.product(*hidden))
    ]


def sample_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded, class-stratified sample (sorted row indices) of about ``fraction`` of the rows."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"sample fraction must be in (0, 1], got {fraction}")
    classes = np.argmax(labels, axis=1)
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(classes):
        rows = np.flatnonzero(classes == c)
        picked.append(rng.choice(rows, size=max(1, round(fraction * len(rows))), replace=False))
    return np.sort(np.concatenate(picked))


def kfold(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded (train, validation) index pairs; every row is validated exactly once."""
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    if n < folds:
        raise ValueError(f"{n} events cannot be split into {folds} folds")
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, folds)
    return [(np.sort(np.concatenate(parts[:k] + parts[k + 1:])), np.sort(parts[k])) for k in range(folds)]


@functools.lru_cache(maxsize=2)
def _load_sample(path: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as data:
        return data["hlf_input"], data["label"]


def save_sample(path: Path, hlf_input: np.ndarray, label: np.ndarray) -> None:
    np.savez(path, hlf_input=hlf_input.astype(np.float32), label=label.astype(np.float32))


def run_trial(trial: Trial, sample_path: str, folds: int, seed: int, learning_rate: float = 1e-3) -> dict[str, Any]:
    """Cross-validate one trial: mean and spread of the validation accuracy and loss over the folds."""
    import keras
    import tensorflow as tf

    from lhc_assets.ml.models import hlf_classifier

    _single_threaded(tf)
    x, y = _load_sample(sample_path)
    start = time.perf_counter()
    accuracy, loss = [], []
    for k, (train, validation) in enumerate(kfold(len(x), folds, seed)):
        keras.utils.set_random_seed(seed + k)
        model = hlf_classifier(hidden=trial.hidden, learning_rate=learning_rate, seed=seed + k)
        model.fit(x[train], y[train], batch_size=trial.batch_size, epochs=trial.epochs, verbose=0, shuffle=True)
        val_loss, val_accuracy = model.evaluate(x[validation], y[validation], batch_size=1024, verbose=0)
        accuracy.append(float(val_accuracy))
        loss.append(float(val_loss))
        keras.backend.clear_session()
    return {
        **asdict(trial), "hidden": list(trial.hidden), "trial": trial.name, "folds": folds,
        "mean_val_accuracy": float(np.mean(accuracy)), "std_val_accuracy": float(np.std(accuracy)),
        "mean_val_loss": float(np.mean(loss)), "seconds": time.perf_counter() - start,
    }


def _single_threaded(tf: Any) -> None:
    """One TensorFlow thread per trial: Spark already runs one trial per core."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # the worker's TensorFlow runtime is already initialised (a reused Python worker)


def best_trial(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Highest mean validation accuracy; ties go to the lower loss, then the smaller model, then the name."""
    if not results:
        raise ValueError("no trial results")
    return min(results, key=lambda r: (-r["mean_val_accuracy"], r["mean_val_loss"], sum(r["hidden"]), r["trial"]))


def run_trial_unit(unit: tuple[list[Trial], str, int, int]) -> list[dict[str, Any]]:
    """One Spark task's share of the grid: ``(trials, sample path, folds, seed)`` -> their results."""
    trials, sample_path, folds, seed = unit
    return [run_trial(t, sample_path, folds, seed) for t in trials]


def trial_units(trials: Sequence[Trial], sample_path: str, folds: int, seed: int,
                parallelism: int = 0) -> list[tuple[list[Trial], str, int, int]]:
    """The grid dealt round-robin over ``parallelism`` Spark tasks (0: one task per trial)."""
    tasks = parallelism or len(trials)
    return [([t for k, t in enumerate(trials) if k % tasks == i], sample_path, folds, seed)
            for i in range(min(tasks, len(trials)))]
