"""ONNX export of the Keras classifiers: ONNX Runtime gives Keras' probabilities, and the timings are measured."""

from __future__ import annotations

import numpy as np
import pytest

from lhc_assets.ml.contract import GRU_INPUT, HLF_INPUT
from lhc_assets.ml.preparation import FeatureScalers

IDENTITY = FeatureScalers(hlf_min=(0.0,) * 14, hlf_max=(1.0,) * 14, llf_mean=(0.0,) * 19, llf_std=(1.0,) * 19,
                          train_events=1, train_particles=1)
# The timings must exist here; how fast they are is the benchmark's business (benchmarks/deployment.py).
FAST_TIMING = {"timing_events": 8, "timing_seconds": 0.01, "latency_calls": 5}


def _events(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scaled HLF, padded particle lists (padding first, 1 to 40 real rows) and one-hot labels."""
    rng = np.random.default_rng(seed)
    hlf = rng.random((n, 14), dtype=np.float32)
    gru = np.zeros((n, 801, 19), np.float32)
    for i in range(n):
        k = int(rng.integers(1, 40))
        gru[i, -k:] = rng.normal(size=(k, 19))
        gru[i, -k:, 0] = rng.uniform(1, 50, k)  # pT > 0: drawn by the image layer
    labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
    return hlf, gru, labels


@pytest.mark.parametrize("builder", ["hlf_classifier", "inclusive_classifier", "image_classifier"])
def test_exported_classifier_matches_keras_on_every_event(tmp_path, builder):
    from lhc_assets.ml import models
    from lhc_assets.ml.deployment.onnx_export import OnnxClassifier, export_classifier

    kwargs = {"scalers": IDENTITY.to_dict(), "eta_bins": 16, "phi_bins": 12, "filters": (4,),
              "dense_units": 8} if builder == "image_classifier" else {}
    model = getattr(models, builder)(seed=3, **kwargs)
    hlf, gru, labels = _events(40)
    x = hlf if builder == "hlf_classifier" else {HLF_INPUT: hlf, GRU_INPUT: gru}
    exported = export_classifier(builder, model, x, labels, tmp_path, **FAST_TIMING)

    assert exported.path == tmp_path / f"{builder}.onnx" and exported.path.stat().st_size > 0
    assert exported.events == 40 and exported.max_abs_difference < 1e-5
    # The file alone (no Keras, no TensorFlow graph) reproduces the probabilities, and they are not trivial.
    again = OnnxClassifier(exported.path).predict(hlf, gru if builder != "hlf_classifier" else None)
    np.testing.assert_allclose(again, exported.probabilities, atol=1e-6)
    assert np.allclose(again.sum(axis=1), 1.0, atol=1e-5) and again.std(axis=0).max() > 1e-4
    np.testing.assert_array_equal(exported.labels, labels.argmax(axis=1))
    for timing in (exported.onnx, exported.keras):
        assert timing.latency_ms_batch1 > 0 and timing.events_per_s_batch1024 > 0
    summary = exported.summary()
    assert summary["speedup_batch1"] > 0 and summary["file"] == f"{builder}.onnx"


def test_parity_names_a_real_difference_and_refuses_mismatched_shapes():
    from lhc_assets.ml.deployment.onnx_export import parity

    a = np.full((4, 3), 1 / 3, np.float32)
    b = a.copy()
    b[2, 1] += 2e-5
    assert parity(a, a) == 0.0 and parity(a, b) == pytest.approx(2e-5, rel=1e-3)
    with pytest.raises(ValueError, match="shapes differ"):
        parity(a, a[:3])


def test_a_fixed_length_model_reads_its_last_rows_in_onnx_too(tmp_path):
    from lhc_assets.ml.deployment.onnx_export import OnnxClassifier, export_classifier
    from lhc_assets.ml.models import particle_sequence_classifier

    model = particle_sequence_classifier(seed=1, sequence_steps=12)
    _, gru, labels = _events(20, seed=4)
    exported = export_classifier("psc", model, gru, labels, tmp_path, **FAST_TIMING)
    assert OnnxClassifier(exported.path).fixed_steps == 12
    assert exported.max_abs_difference < 1e-5
