"""Keras model builders of DESIGN.md section 6: sizes, inputs, masking, native save/load."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # imports TensorFlow


def test_parameter_counts_match_the_study():
    from lhc_assets.ml.models import hlf_classifier, inclusive_classifier, particle_sequence_classifier

    assert hlf_classifier().count_params() == 2013
    assert inclusive_classifier().count_params() == 12353
    assert particle_sequence_classifier().count_params() == 3 * (19 * 50 + 50 * 50 + 2 * 50) + 50 * 3 + 3


def test_zero_padding_rows_in_front_do_not_change_the_sequence_models_output():
    from lhc_assets.ml.models import inclusive_classifier

    model = inclusive_classifier(seed=1)
    rng = np.random.default_rng(0)
    real = rng.normal(size=(4, 30, 19)).astype(np.float32)
    hlf = rng.uniform(size=(4, 14)).astype(np.float32)
    padded = np.concatenate([np.zeros((4, 771, 19), np.float32), real], axis=1)
    short = model({"hlf_input": hlf, "gru_input": real}, training=False).numpy()
    full = model({"hlf_input": hlf, "gru_input": padded}, training=False).numpy()
    np.testing.assert_allclose(short, full, atol=1e-5)


def test_models_round_trip_through_the_native_format_in_safe_mode(tmp_path):
    import keras

    from lhc_assets.ml.models import hlf_classifier, inclusive_classifier

    x = {"hlf_input": np.random.default_rng(1).uniform(size=(8, 14)).astype(np.float32),
         "gru_input": np.random.default_rng(2).normal(size=(8, 40, 19)).astype(np.float32)}
    for model, inputs in ((hlf_classifier(seed=3), x["hlf_input"]), (inclusive_classifier(seed=3), x)):
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        np.testing.assert_allclose(loaded.predict(inputs, verbose=0), model.predict(inputs, verbose=0), atol=1e-6)


def test_seeded_models_start_from_the_same_weights():
    from lhc_assets.ml.models import hlf_classifier

    a, b = hlf_classifier(seed=7), hlf_classifier(seed=7)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
