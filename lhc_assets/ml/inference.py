"""Batch inference with trained models: cached loading and length-sorted prediction on numpy arrays.

Used inside Spark's Python workers (``lhc_assets.spark.inference``): a model is loaded once per worker
process and reused by every later task, because workers are reused and this cache is module state.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lhc_assets.ml.contract import GRU_INPUT, GRU_SHAPE, HLF_INPUT

_MODELS: dict[tuple[str, float], object] = {}
_FORWARD: dict[int, object] = {}
# Events per forward call. HLF rows are tiny: big chunks amortise the call. Particle lists are cut to the
# longest sequence of their chunk, so smaller chunks of length-sorted events run fewer GRU steps.
CHUNK = 8192
SEQUENCE_CHUNK = 256


def load_model(path: str | Path):
    """A ``.keras`` model loaded in safe mode, once per process and file version (path + mtime)."""
    from lhc_assets.ml.models import load

    key = (str(path), os.stat(path).st_mtime)
    if key not in _MODELS:
        _MODELS[key] = load(path)
    return _MODELS[key]


def compiled_forward(model):
    """The model as one cached tf.function in inference mode (one per model object and process)."""
    import tensorflow as tf

    if id(model) not in _FORWARD:
        _FORWARD[id(model)] = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return _FORWARD[id(model)]


def real_lengths(gru: np.ndarray) -> np.ndarray:
    """Real (non-padding) rows per event of a (N, T, 19) array whose padding rows come first."""
    real = np.any(gru != 0.0, axis=2)
    return np.where(real.any(axis=1), gru.shape[1] - np.argmax(real, axis=1), 0)


def predict_arrays(
    model, hlf_input: np.ndarray | None, gru_input: np.ndarray | None, chunk: int | None = None
) -> np.ndarray:
    """Class probabilities (N, 3) float32 for whichever inputs the model takes (HLF, particles or both).

    Particle lists are predicted in order of length, each chunk cut to its longest real sequence, so the
    GRU runs over real rows only; results come back in the input order. A model that reads a fixed number of
    rows (``models.sequence_steps``) gets exactly its last rows.
    """
    from lhc_assets.ml.models import sequence_steps

    forward = compiled_forward(model)
    return predict_chunks(lambda x: forward(x).numpy(), [t.name for t in model.inputs], sequence_steps(model),
                          hlf_input, gru_input, chunk)


def predict_chunks(
    forward: Callable[[np.ndarray | dict[str, np.ndarray]], np.ndarray], input_names: list[str],
    fixed_steps: int | None, hlf_input: np.ndarray | None, gru_input: np.ndarray | None, chunk: int | None = None,
) -> np.ndarray:
    """``predict_arrays`` for any runtime: ``forward`` maps one chunk of model inputs (an array for a one-input
    model, a dict by input name otherwise) to its (rows, 3) probabilities; ``fixed_steps`` is the particle rows the
    model reads (None: any length). ONNX Runtime sessions predict through this too, so both see the same chunks."""
    n = len(hlf_input if hlf_input is not None else gru_input)
    out = np.empty((n, 3), np.float32)
    if GRU_INPUT not in input_names:
        chunk = chunk or CHUNK
        for start in range(0, n, chunk):
            out[start:start + chunk] = forward(hlf_input[start:start + chunk])
        return out
    gru = gru_input.reshape(-1, *GRU_SHAPE)
    if fixed_steps is not None:
        gru = gru[:, -fixed_steps:, :]
    lengths = real_lengths(gru) if fixed_steps is None else np.full(n, fixed_steps)
    order = np.argsort(lengths, kind="stable")
    chunk = chunk or SEQUENCE_CHUNK
    for start in range(0, n, chunk):
        rows = order[start:start + chunk]
        steps = max(1, int(lengths[rows].max()))
        x = {GRU_INPUT: gru[rows, -steps:, :]}
        if HLF_INPUT in input_names:
            x[HLF_INPUT] = hlf_input[rows]
        out[rows] = forward(x if len(input_names) > 1 else x[GRU_INPUT])
    return out
