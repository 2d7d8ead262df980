"""Keras classifiers exported to ONNX and run with ONNX Runtime: parity with Keras, latency and throughput.

Keras 3 exports through ``tf2onnx`` (``model.export(path, format="onnx")``). Opset 17: the image classifier's
drawing layer scatters with a summing ``tensor_scatter_nd_add``, which is ONNX's ``ScatterND`` with a reduction,
opset 16 or later. A model is called once before its export: Keras traces the export from a built model.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lhc_assets.ml.contract import GRU_INPUT, GRU_SHAPE, HLF_INPUT

OPSET = 17
ONNX_SUFFIX = ".onnx"
LATENCY_CALLS = 200  # single-event calls timed for the latency
THROUGHPUT_BATCH = 1024


def export_onnx(model: Any, path: Path, example: np.ndarray | Mapping[str, np.ndarray]) -> Path:
    """Write ``model`` (a Keras classifier) as ONNX to ``path``; ``example`` is a batch of its inputs."""
    model(example, training=False)
    with warnings.catch_warnings():
        # Keras' tf2onnx shim probes np.object, which numpy 1.26 answers with a FutureWarning: not ours to act on.
        warnings.simplefilter("ignore", FutureWarning)
        model.export(str(path), format="onnx", verbose=False, opset_version=OPSET)
    return path


class OnnxClassifier:
    """An exported classifier in an ONNX Runtime CPU session, predicting like ``inference.predict_arrays``."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One thread per session by default: a trigger node runs one event stream per core, and latency per event
        # on one core is the figure that compares with Keras' per-core numbers.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initialisers are not the user's business
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        unknown = set(self.input_names) - {HLF_INPUT, GRU_INPUT}
        if unknown:
            raise ValueError(f"{path}: unexpected ONNX inputs {sorted(unknown)}; expected {HLF_INPUT}/{GRU_INPUT}")
        self.fixed_steps = self._fixed_steps()

    def _fixed_steps(self) -> int | None:
        for i in self.session.get_inputs():
            if i.name == GRU_INPUT and isinstance(i.shape[1], int):
                return i.shape[1]
        return None

    def run(self, x: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
        """Probabilities of one batch of model inputs (an array for a one-input model, else a dict by name)."""
        feeds = dict(x) if isinstance(x, Mapping) else {self.input_names[0]: x}
        return self.session.run(None, feeds)[0]

    def predict(self, hlf_input: np.ndarray | None, gru_input: np.ndarray | None,
                chunk: int | None = None) -> np.ndarray:
        """(N, 3) probabilities, chunked and length-sorted exactly as Keras predicts them."""
        from lhc_assets.ml.inference import predict_chunks

        return predict_chunks(self.run, self.input_names, self.fixed_steps, hlf_input, gru_input, chunk)


def model_inputs(names: list[str], hlf: np.ndarray, gru: np.ndarray | None, rows: slice | np.ndarray,
                 steps: int | None = None) -> np.ndarray | dict[str, np.ndarray]:
    """The inputs of ``rows`` events for a model reading ``names`` (particle lists cut to their last ``steps``)."""
    x: dict[str, np.ndarray] = {}
    if HLF_INPUT in names:
        x[HLF_INPUT] = np.ascontiguousarray(hlf[rows])
    if GRU_INPUT in names:
        particles = gru.reshape(-1, *GRU_SHAPE)[rows]
        x[GRU_INPUT] = np.ascontiguousarray(particles[:, -steps:, :] if steps else particles)
    return x if len(x) > 1 else next(iter(x.values()))


@dataclass(frozen=True)
class Timing:
    latency_ms_batch1: float  # median wall time of one single-event call
    latency_ms_batch1_p99: float
    events_per_s_batch1024: float  # throughput with batches of THROUGHPUT_BATCH events

    def as_dict(self) -> dict[str, float]:
        return {"latency_ms_batch1": round(self.latency_ms_batch1, 4),
                "latency_ms_batch1_p99": round(self.latency_ms_batch1_p99, 4),
                "events_per_s_batch1024": round(self.events_per_s_batch1024, 1)}


def time_runtime(run: Callable[[Any], Any], single: Callable[[int], Any], batch: Callable[[int], Any], n_events: int,
                 calls: int = LATENCY_CALLS, min_seconds: float = 1.0) -> Timing:
    """Latency of ``run`` on one event (``single(i)`` gives event i's inputs) and throughput on batches of
    ``THROUGHPUT_BATCH`` events (``batch(start)``), cycling over the ``n_events`` available; warm-up calls first."""
    run(single(0))
    run(batch(0))
    laps = []
    for k in range(calls):
        x = single(k % n_events)
        t0 = time.perf_counter()
        run(x)
        laps.append(time.perf_counter() - t0)
    laps.sort()
    events, elapsed, start = 0, 0.0, 0
    while elapsed < min_seconds or events < 2 * THROUGHPUT_BATCH:
        x = batch(start)
        t0 = time.perf_counter()
        run(x)
        elapsed += time.perf_counter() - t0
        events += THROUGHPUT_BATCH
        start = (start + THROUGHPUT_BATCH) % max(n_events - THROUGHPUT_BATCH + 1, 1)
    return Timing(1e3 * statistics.median(laps), 1e3 * laps[min(len(laps) - 1, int(0.99 * len(laps)))],
                  events / elapsed)


def timing_inputs(names: list[str], fixed_steps: int | None, hlf: np.ndarray, gru: np.ndarray | None
                  ) -> tuple[Callable[[int], Any], Callable[[int], Any]]:
    """``(single, batch)`` for ``time_runtime``: event i alone, and THROUGHPUT_BATCH events from ``start`` (cycling
    over a small sample), each particle list cut to the real rows of its longest event, as a trigger would feed them."""
    from lhc_assets.ml.inference import real_lengths

    n = len(hlf)
    lengths = None
    if gru is not None and GRU_INPUT in names and fixed_steps is None:
        lengths = np.maximum(real_lengths(gru.reshape(-1, *GRU_SHAPE)), 1)

    def steps(rows: np.ndarray | slice) -> int | None:
        return fixed_steps if lengths is None else int(lengths[rows].max())

    def single(i: int) -> Any:
        return model_inputs(names, hlf, gru, slice(i, i + 1), steps(slice(i, i + 1)))

    def batch(start: int) -> Any:
        rows = np.arange(start, start + THROUGHPUT_BATCH) % n
        return model_inputs(names, hlf, gru, rows, steps(rows))

    return single, batch


def parity(keras_probabilities: np.ndarray, onnx_probabilities: np.ndarray) -> float:
    """Largest absolute difference of any class probability of any event."""
    if keras_probabilities.shape != onnx_probabilities.shape:
        raise ValueError(f"shapes differ: Keras {keras_probabilities.shape}, ONNX {onnx_probabilities.shape}")
    return float(np.max(np.abs(keras_probabilities.astype(np.float64) - onnx_probabilities)))


@dataclass(frozen=True)
class ExportedClassifier:
    """One classifier exported and checked: its file, the parity on the test events, both runtimes' timings."""

    name: str
    path: Path
    events: int
    max_abs_difference: float
    onnx: Timing
    keras: Timing
    labels: np.ndarray  # class index of each test event
    probabilities: np.ndarray  # ONNX Runtime's (events, classes) on them

    def summary(self) -> dict[str, Any]:
        return {"file": self.path.name, "events": self.events, "max_abs_difference": self.max_abs_difference,
                "onnx": self.onnx.as_dict(), "keras": self.keras.as_dict(),
                "speedup_batch1": round(self.keras.latency_ms_batch1 / self.onnx.latency_ms_batch1, 2),
                "speedup_batch1024": round(self.onnx.events_per_s_batch1024 / self.keras.events_per_s_batch1024, 2)}


def _split(x: np.ndarray | Mapping[str, np.ndarray], names: list[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
    if isinstance(x, Mapping):
        return x.get(HLF_INPUT), x.get(GRU_INPUT)
    return (x, None) if names == [HLF_INPUT] else (None, x)


def export_classifier(name: str, model: Any, x: np.ndarray | Mapping[str, np.ndarray], labels_onehot: np.ndarray,
                      directory: Path, timing_events: int = 256, timing_seconds: float = 1.0,
                      latency_calls: int = LATENCY_CALLS) -> ExportedClassifier:
    """Export ``model`` to ``directory/<name>.onnx``, compare ONNX Runtime with Keras on the test events ``x``
    (``readers.load_arrays`` layout), and time both runtimes on the first ``timing_events`` of them (``latency_calls``
    single-event calls, batches of THROUGHPUT_BATCH for at least ``timing_seconds``)."""
    from lhc_assets.ml.inference import compiled_forward, predict_arrays
    from lhc_assets.ml.models import sequence_steps

    names = [t.name for t in model.inputs]
    hlf, gru = _split(x, names)
    n = len(labels_onehot)
    if n == 0:
        raise ValueError(f"{name}: no test events to check the export on")
    steps = sequence_steps(model)
    path = export_onnx(model, directory / f"{name}{ONNX_SUFFIX}",
                       model_inputs(names, _or_zeros(hlf, n), gru, slice(0, min(n, 8)), steps))
    session = OnnxClassifier(path)
    keras_probabilities = predict_arrays(model, hlf, gru)
    onnx_probabilities = session.predict(hlf, gru)
    k = min(n, timing_events)
    sample_hlf, sample_gru = _or_zeros(hlf, n)[:k], None if gru is None else gru[:k]
    single, batch = timing_inputs(names, steps, sample_hlf, sample_gru)
    forward = compiled_forward(model)
    return ExportedClassifier(
        name, path, n, parity(keras_probabilities, onnx_probabilities),
        onnx=time_runtime(session.run, single, batch, k, latency_calls, timing_seconds),
        keras=time_runtime(lambda v: forward(v).numpy(), single, batch, k, latency_calls, timing_seconds),
        labels=np.argmax(labels_onehot, axis=1), probabilities=onnx_probabilities)


def _or_zeros(hlf: np.ndarray | None, n: int) -> np.ndarray:
    # A particle-only model has no HLF input; model_inputs still indexes one, so give it an unused placeholder.
    return hlf if hlf is not None else np.zeros((n, 0), np.float32)
