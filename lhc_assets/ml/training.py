"""Training loop shared by the model assets, the benchmark and the distributed workers.

Speed on CPU comes from not running the GRU over padding: the particle lists are stored padded to
801 rows with the padding first and exactly zero, and the models mask it, so cutting leading padding
does not change a model's output (tests/ml/test_models.py). ``bucket_by_length`` groups events of
similar length into a batch and cuts each batch to its bucket's bound, so the GRU runs about the mean
real length (about 540 steps on the generated data) instead of 801. Bounds are multiples of
``bucket_width``, which keeps the number of distinct batch shapes (and of XLA compilations) small.

Faster still, a model built with ``sequence_steps`` reads only the last rows of each list, the particles
nearest the lepton (a different input, so a choice with measured AUCs: docs/performance.md).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from lhc_assets.ml.contract import GRU_INPUT, GRU_SHAPE
from lhc_assets.ml.readers import prefetched

FULL_LENGTH = GRU_SHAPE[0]
DEFAULT_BUCKET_WIDTH = 100


def _sequences(x: Any) -> tf.Tensor | None:
    if isinstance(x, dict):
        return x.get(GRU_INPUT)
    return x if x.shape.rank == 3 else None


def real_length(sequence: tf.Tensor) -> tf.Tensor:
    """Number of real (non-padding) rows of one event's (T, 19) particle list; padding rows come first."""
    real = tf.reduce_any(tf.not_equal(sequence, 0.0), axis=-1)
    first = tf.argmax(tf.cast(real, tf.int32), output_type=tf.int32)
    return tf.where(tf.reduce_any(real), tf.shape(sequence, out_type=tf.int32)[0] - first, 0)


def _trim(x: Any, steps: tf.Tensor) -> Any:
    if isinstance(x, dict):
        return {**x, GRU_INPUT: x[GRU_INPUT][:, -steps:, :]}
    return x[:, -steps:, :]


def bucket_by_length(
    dataset: tf.data.Dataset, batch_size: int, bucket_width: int = DEFAULT_BUCKET_WIDTH, drop_remainder: bool = False
) -> tf.data.Dataset:
    """``(x, label)`` batches -> batches of ``batch_size`` events of similar length, cut to their bucket's bound.

    Works on "gru" and "inclusive" inputs; a dataset without a particle list is only rebatched. A bucket
    emits a batch as soon as it holds ``batch_size`` events, so on an endless stream every batch is full;
    at the end of a finite stream the partly filled buckets are flushed (unless ``drop_remainder``).
    """
    if bucket_width < 1:
        raise ValueError(f"bucket_width must be positive, got {bucket_width}")
    x_spec = dataset.element_spec[0]
    if _sequences(x_spec) is None:
        return dataset.rebatch(batch_size, drop_remainder=drop_remainder)
    inclusive = isinstance(x_spec, dict)
    width = tf.constant(bucket_width, tf.int64)

    def key(x: Any, _label: tf.Tensor) -> tf.Tensor:
        length = tf.cast(real_length(x[GRU_INPUT] if inclusive else x), tf.int64)
        return (tf.maximum(length, 1) - 1) // width

    def reduce(bucket: tf.Tensor, window: tf.data.Dataset) -> tf.data.Dataset:
        steps = tf.cast(tf.minimum((bucket + 1) * width, FULL_LENGTH), tf.int32)
        return window.batch(batch_size, drop_remainder=drop_remainder).map(lambda x, y: (_trim(x, steps), y))

    return dataset.unbatch().group_by_window(key, reduce, window_size=batch_size)


def last_steps(dataset: tf.data.Dataset, steps: int) -> tf.data.Dataset:
    """``(x, label)`` batches with each particle list cut to its last ``steps`` rows (nearest the lepton)."""
    if not 1 <= steps <= FULL_LENGTH:
        raise ValueError(f"steps must be between 1 and {FULL_LENGTH}, got {steps}")
    if _sequences(dataset.element_spec[0]) is None:
        return dataset
    return dataset.map(lambda x, y: (_trim(x, steps), y))


def training_batches(
    dataset: tf.data.Dataset, batch_size: int, bucket_width: int = DEFAULT_BUCKET_WIDTH,
    sequence_steps: int | None = None,
) -> tf.data.Dataset:
    """Reader batches -> training batches for a model.

    With ``sequence_steps`` (the model's fixed input length) every batch is cut to its last rows; otherwise
    batches are bucketed by length (``bucket_width`` > 0) or keep all 801 steps (0).
    """
    if sequence_steps is not None:
        batches = last_steps(dataset, sequence_steps).rebatch(batch_size)
    elif bucket_width == 0:
        batches = dataset.rebatch(batch_size)
    else:
        batches = bucket_by_length(dataset, batch_size, bucket_width)
    return prefetched(batches)


class _EpochTimer(keras.callbacks.Callback):
    """Wall time of the training part of each epoch (validation excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0
        self._open = False

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start, self._open = time.perf_counter(), True

    def _close(self) -> None:
        if self._open:
            self.seconds.append(time.perf_counter() - self._start)
            self._open = False

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._close()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._close()


@dataclass
class TrainingResult:
    history: dict[str, list[float]]
    epochs: int
    steps_per_epoch: int
    batch_size: int
    epoch_seconds: list[float] = field(default_factory=list)

    @property
    def samples_per_epoch(self) -> int:
        return self.steps_per_epoch * self.batch_size

    @property
    def samples_per_s(self) -> float:
        """Training throughput after the first epoch (which also traces and compiles), or of it if alone."""
        timed = self.epoch_seconds[1:] or self.epoch_seconds
        return self.samples_per_epoch * len(timed) / sum(timed) if timed and sum(timed) > 0 else float("nan")

    def final(self, metric: str) -> float | None:
        values = self.history.get(metric)
        return float(values[-1]) if values else None


def steps_per_epoch(rows: int, batch_size: int) -> int:
    """Batches for one pass over ``rows`` events from an endless stream (at least one)."""
    return max(1, math.ceil(rows / batch_size))


def fit(
    model: keras.Model,
    train: tf.data.Dataset,
    train_rows: int,
    batch_size: int,
    epochs: int,
    validation: tf.data.Dataset | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainingResult:
    """Train ``model`` on an endless ``train`` stream of ``batch_size`` batches, one epoch = one pass of rows."""
    if epochs < 1:
        raise ValueError(f"epochs must be positive, got {epochs}")
    if train_rows < 1:
        raise ValueError("the training set is empty")
    timer = _EpochTimer()
    steps = steps_per_epoch(train_rows, batch_size)
    with warnings.catch_warnings():
        # Keras 3 warns when a finite validation set ends, which is how validation is meant to end; the
        # training stream is endless, so this warning cannot hide a short training epoch.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        history = model.fit(
            train, epochs=epochs, steps_per_epoch=steps, validation_data=validation,
            callbacks=[timer, *(callbacks or [])], verbose=0, shuffle=False,
        )
    clean = {name: [float(v) for v in values] for name, values in history.history.items()}
    return TrainingResult(clean, epochs, steps, batch_size, timer.seconds)


READ_BATCH = 1024  # events per reader batch; bucketing regroups them into training batches


@dataclass(frozen=True)
class TrainingSettings:
    """How a registered classifier is trained (the model assets' config, without Dagster)."""

    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    reader_workers: int = 1
    workers: int = 1  # more than one: MultiWorkerMirroredStrategy over that many local processes
    sequence_steps: int | None = None  # particle models only; None reads whole lists
    bucket_width: int = 0  # particle models with whole lists: length buckets of this many steps
    builder_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainedClassifier:
    model: keras.Model
    history: dict[str, list[float]]
    train_events: int
    seconds: float
    samples_per_s: float
    details: dict[str, Any] = field(default_factory=dict)  # how it ran: steps per epoch, or the workers' samples


def train_classifier(spec: Any, train_path: str | Path, test_path: str | Path, settings: TrainingSettings,
                     scratch: Path | None = None) -> TrainedClassifier:
    """Train the registered classifier ``spec`` (``ml.contract.KerasModelSpec``) on its Petastorm training set,
    validated on its test set; with ``settings.workers > 1`` in worker processes writing to ``scratch``."""
    from lhc_assets.ml.contract import normalize_sequence_steps
    from lhc_assets.ml.readers import arrow_dataset, dataset_rows, petastorm_dataset

    rows = dataset_rows(train_path)
    steps = normalize_sequence_steps(settings.sequence_steps) if spec.reads_particles else None
    bucket_width = settings.bucket_width if spec.reads_particles else 0
    kwargs = {**settings.builder_kwargs, "learning_rate": settings.learning_rate, "seed": settings.seed,
              **({"sequence_steps": steps} if spec.reads_particles else {})}
    start = time.perf_counter()
    if settings.workers > 1:
        from lhc_assets.ml.distributed import train_multi_worker

        if scratch is None:
            raise ValueError("multi-worker training needs a scratch directory")
        report = train_multi_worker(
            str(train_path), spec.inputs, spec.name, workers=settings.workers, epochs=settings.epochs,
            batch_size=settings.batch_size, seed=settings.seed, output_dir=str(scratch), model_kwargs=kwargs)
        from lhc_assets.ml.models import load

        model = load(report["model_path"])
        seconds = time.perf_counter() - start
        return TrainedClassifier(model, report["history"], rows, seconds,
                                 sum(w["samples"] for w in report["workers"]) / max(seconds, 1e-9),
                                 {"workers": settings.workers,
                                  "worker_samples": {str(w["index"]): w["samples"] for w in report["workers"]}})
    keras.utils.set_random_seed(settings.seed)
    model = spec.build(**kwargs)
    with petastorm_dataset(train_path, spec.inputs, batch_size=READ_BATCH, num_epochs=None, seed=settings.seed,
                           workers_count=settings.reader_workers) as train, \
            arrow_dataset(test_path, spec.inputs, batch_size=READ_BATCH, shuffle_row_groups=False) as test:
        result = fit(model, training_batches(train, settings.batch_size, bucket_width, steps), rows,
                     settings.batch_size, settings.epochs,
                     validation=training_batches(test, settings.batch_size, bucket_width, steps))
    return TrainedClassifier(model, result.history, rows, time.perf_counter() - start, result.samples_per_s,
                             {"steps_per_epoch": result.steps_per_epoch})
