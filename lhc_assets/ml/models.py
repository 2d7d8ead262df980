"""Keras 3 model builders of DESIGN section 6, compiled and ready for ``fit``.

Input layers are named after the dataset columns ("hlf_input", "gru_input") so that the dict batches of
``lhc_assets.ml.readers`` feed the inclusive model directly. Which model reads which inputs and datasets is
registered in ``lhc_assets.ml.contract``. Only built-in layers and the platform's registered image layers
(``lhc_assets.ml.images``) are used, so that the models round-trip through the native ``.keras`` format with
``safe_mode=True`` (load them with ``load``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras

from lhc_assets.ml.contract import GRU_INPUT, GRU_SHAPE, HLF_INPUT, HLF_SHAPE, N_CLASSES

DROPOUT = 0.2


class _Seeds:
    """Distinct seeds per layer derived from one model seed (None keeps Keras' unseeded defaults)."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self.count = 0

    def next(self) -> int | None:
        if self.seed is None:
            return None
        self.count += 1
        return self.seed * 1000 + self.count

    def glorot(self) -> keras.initializers.Initializer:
        return keras.initializers.GlorotUniform(seed=self.next())

    def orthogonal(self) -> keras.initializers.Initializer:
        return keras.initializers.Orthogonal(seed=self.next())


def _compile(model: keras.Model, learning_rate: float, jit_compile: bool | str = "auto") -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def _gru_branch(gru_input: keras.KerasTensor, gru_units: int, seeds: _Seeds) -> keras.KerasTensor:
    # Padding rows are exactly zero and come first, so masking leaves the state untouched until the
    # first real particle: zero-prepending or trimming padding does not change the output.
    masked = keras.layers.Masking(mask_value=0.0, name="padding_mask")(gru_input)
    state = keras.layers.GRU(
        gru_units,
        activation="tanh",
        kernel_initializer=seeds.glorot(),
        recurrent_initializer=seeds.orthogonal(),
        name="gru",
    )(masked)
    return keras.layers.Dropout(DROPOUT, seed=seeds.next(), name="gru_dropout")(state)


def _sequence_input(sequence_steps: int | None) -> keras.KerasTensor:
    # None: variable time dimension, so a batch may be trimmed to its longest real sequence. A number: the
    # model reads that many rows, the particles nearest the lepton (the last rows), and says so in its
    # saved config, so every caller feeds it the same view (``sequence_steps(model)``).
    if sequence_steps is not None and not 1 <= sequence_steps <= GRU_SHAPE[0]:
        raise ValueError(f"sequence_steps must be between 1 and {GRU_SHAPE[0]}, got {sequence_steps}")
    return keras.Input(shape=(sequence_steps, GRU_SHAPE[1]), name=GRU_INPUT)


def sequence_steps(model: keras.Model) -> int | None:
    """Rows of the particle list the model reads (the last ones), or None for any length (or no list)."""
    for tensor in model.inputs:
        if tensor.name == GRU_INPUT:
            return tensor.shape[1]
    return None


def hlf_classifier(
    hidden: Sequence[int] = (50, 20, 10), learning_rate: float = 1e-3, seed: int | None = None
) -> keras.Model:
    """Dense 14 -> hidden (ReLU) -> 3 softmax; 2,013 parameters with the default hidden sizes."""
    seeds = _Seeds(seed)
    hlf = keras.Input(shape=HLF_SHAPE, name=HLF_INPUT)
    x = hlf
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(units, activation="relu", kernel_initializer=seeds.glorot(), name=f"dense_{i}")(x)
    output = keras.layers.Dense(N_CLASSES, activation="softmax", kernel_initializer=seeds.glorot(), name="output")(x)
    return _compile(keras.Model(hlf, output, name="hlf_classifier"), learning_rate)


def particle_sequence_classifier(
    gru_units: int = 50,
    learning_rate: float = 1e-3,
    jit_compile: bool = False,
    seed: int | None = None,
    sequence_steps: int | None = None,
) -> keras.Model:
    """Masking -> GRU(tanh) -> Dropout 0.2 -> Dense 3 softmax on the (time, 19) particle list.

    ``sequence_steps``: read only the last rows (nearest the lepton); None reads any length. XLA is off by
    default: it would recompile for every distinct sequence length of trimmed batches.
    """
    seeds = _Seeds(seed)
    particles = _sequence_input(sequence_steps)
    x = _gru_branch(particles, gru_units, seeds)
    output = keras.layers.Dense(N_CLASSES, activation="softmax", kernel_initializer=seeds.glorot(), name="output")(x)
    return _compile(keras.Model(particles, output, name="particle_sequence_classifier"), learning_rate, jit_compile)


def inclusive_classifier(
    gru_units: int = 50,
    dense_units: int = 25,
    learning_rate: float = 1e-3,
    jit_compile: bool = False,
    seed: int | None = None,
    sequence_steps: int | None = None,
) -> keras.Model:
    """GRU branch concatenated with Dropout(HLF) -> Dense 25 ReLU -> 3 softmax; 12,353 parameters.

    Takes a dict {"hlf_input": (B, 14), "gru_input": (B, T, 19)}, the "inclusive" reader output.
    """
    seeds = _Seeds(seed)
    hlf = keras.Input(shape=HLF_SHAPE, name=HLF_INPUT)
    particles = _sequence_input(sequence_steps)
    gru = _gru_branch(particles, gru_units, seeds)
    hlf_dropped = keras.layers.Dropout(DROPOUT, seed=seeds.next(), name="hlf_dropout")(hlf)
    x = keras.layers.Concatenate(name="concat")([gru, hlf_dropped])
    x = keras.layers.Dense(dense_units, activation="relu", kernel_initializer=seeds.glorot(), name="dense")(x)
    output = keras.layers.Dense(N_CLASSES, activation="softmax", kernel_initializer=seeds.glorot(), name="output")(x)
    model = keras.Model({HLF_INPUT: hlf, GRU_INPUT: particles}, output, name="inclusive_classifier")
    return _compile(model, learning_rate, jit_compile)


def image_classifier(
    scalers: Mapping[str, Any],
    eta_bins: int = 64,
    phi_bins: int = 40,
    eta_max: float = 3.0,
    reflect_eta: bool = True,
    filters: Sequence[int] = (8, 16, 32),
    dense_units: int = 32,
    learning_rate: float = 1e-3,
    jit_compile: bool = False,
    seed: int | None = None,
    sequence_steps: int | None = None,
) -> keras.Model:
    """EventImage (the particle lists and MET drawn as a (eta, phi, 5) image) -> per block: periodic padding in
    phi, Conv 3x3 ReLU, MaxPool 2 -> Flatten -> Dense ReLU -> Dropout -> 3 softmax.

    Reads the "inclusive" inputs like ``inclusive_classifier``; ``scalers`` (``FeatureScalers.to_dict()``)
    are the fitted feature scalers, whose inverse the image layer applies.
    """
    from lhc_assets.ml.images import EventImage, ImageGrid, PeriodicPadding2D

    seeds = _Seeds(seed)
    grid = ImageGrid(eta_bins, phi_bins, eta_max, reflect_eta)
    hlf = keras.Input(shape=HLF_SHAPE, name=HLF_INPUT)
    particles = _sequence_input(sequence_steps)
    x = EventImage.for_scalers(scalers, grid, name="event_image")({HLF_INPUT: hlf, GRU_INPUT: particles})
    for k, n in enumerate(filters):
        x = PeriodicPadding2D(1, name=f"periodic_pad_{k}")(x)
        x = keras.layers.Conv2D(n, 3, activation="relu", kernel_initializer=seeds.glorot(), name=f"conv_{k}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool_{k}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(dense_units, activation="relu", kernel_initializer=seeds.glorot(), name="dense")(x)
    x = keras.layers.Dropout(DROPOUT, seed=seeds.next(), name="dropout")(x)
    output = keras.layers.Dense(N_CLASSES, activation="softmax", kernel_initializer=seeds.glorot(), name="output")(x)
    model = keras.Model({HLF_INPUT: hlf, GRU_INPUT: particles}, output, name="image_classifier")
    return _compile(model, learning_rate, jit_compile)


def load(path: str | Path) -> keras.Model:
    """A saved classifier in safe mode; the platform's own layers (``lhc_assets.ml.images``) are registered
    first, so every loader (IO manager, Spark workers, distributed training) reads every model."""
    import lhc_assets.ml.images  # noqa: F401  (registers EventImage and PeriodicPadding2D)

    return keras.saving.load_model(path, safe_mode=True)
