"""Training and inference loops: bucketing by length, trimming padding, fit, length-sorted prediction."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # imports TensorFlow

STEPS, WIDTH = 801, 19


def _events(n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Inclusive inputs with padding first: event i has lengths[i] real rows (never exactly zero)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, STEPS + 1, size=n)
    lengths[:3] = (1, STEPS, 100)  # the extremes and a bucket boundary
    gru = np.zeros((n, STEPS, WIDTH), np.float32)
    for i, length in enumerate(lengths):
        gru[i, STEPS - length:] = rng.normal(size=(length, WIDTH)).astype(np.float32) + 3.0
    hlf = rng.uniform(size=(n, 14)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=n)]
    return {"hlf_input": hlf, "gru_input": gru}, labels, lengths


def _batched(x, y, size: int = 64):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(size)


def test_real_length_counts_rows_after_the_padding():
    import tensorflow as tf

    from lhc_assets.ml.inference import real_lengths
    from lhc_assets.ml.training import real_length

    x, _, lengths = _events(20)
    x["gru_input"][5, -1] = 0.0  # a zero row after real ones is still inside the real part
    lengths = lengths.copy()
    assert [int(real_length(tf.constant(g))) for g in x["gru_input"]] == list(lengths)
    np.testing.assert_array_equal(real_lengths(x["gru_input"]), lengths)
    assert int(real_length(tf.zeros((STEPS, WIDTH)))) == 0


def test_bucketing_keeps_every_event_once_and_cuts_only_padding():
    from lhc_assets.ml.training import bucket_by_length

    x, y, lengths = _events(300)
    x["hlf_input"][:, 0] = np.arange(300)  # event id travels with the event
    seen = []
    for bx, by in bucket_by_length(_batched(x, y), batch_size=32, bucket_width=100):
        steps = bx["gru_input"].shape[1]
        ids = bx["hlf_input"][:, 0].numpy().astype(int)
        assert steps % 100 == 0 or steps == STEPS
        assert lengths[ids].max() <= steps and lengths[ids].min() > steps - 100  # one bucket per batch
        np.testing.assert_array_equal(bx["gru_input"].numpy(), x["gru_input"][ids, STEPS - steps:])
        np.testing.assert_array_equal(by.numpy(), y[ids])
        seen.extend(ids)
    assert sorted(seen) == list(range(300))


def test_a_trimmed_batch_trains_exactly_like_the_full_801_step_batch():
    from lhc_assets.ml.models import inclusive_classifier

    x, y, lengths = _events(16, seed=3)
    steps = int(lengths[lengths < 500].max())
    keep = lengths <= steps
    x = {k: v[keep] for k, v in x.items()}
    y = y[keep]
    full, trimmed = inclusive_classifier(seed=5), inclusive_classifier(seed=5)
    full.train_on_batch(x, y)
    trimmed.train_on_batch({**x, "gru_input": x["gru_input"][:, -steps:]}, y)
    for a, b in zip(full.get_weights(), trimmed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_fit_on_an_endless_stream_counts_one_pass_per_epoch_and_learns():
    import keras

    from lhc_assets.ml.models import hlf_classifier
    from lhc_assets.ml.training import fit

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=1200)
    x = rng.normal(size=(1200, 14)).astype(np.float32) * 0.3
    x[np.arange(1200), labels] += 3.0  # learnable
    y = np.eye(3, dtype=np.float32)[labels]
    keras.utils.set_random_seed(1)
    model = hlf_classifier(seed=1)
    result = fit(model, _batched(x, y, 100).repeat(), train_rows=1200, batch_size=100, epochs=4,
                 validation=_batched(x[:300], y[:300], 100))
    assert result.steps_per_epoch == 12 and result.samples_per_epoch == 1200 and len(result.epoch_seconds) == 4
    assert result.samples_per_s > 0
    assert set(result.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert result.history["loss"][-1] < result.history["loss"][0] and result.final("val_accuracy") > 0.8


def test_length_sorted_prediction_equals_the_full_length_model_in_input_order():
    from lhc_assets.ml.inference import predict_arrays
    from lhc_assets.ml.models import inclusive_classifier, particle_sequence_classifier

    x, _, _ = _events(50, seed=7)
    for model in (inclusive_classifier(seed=2), particle_sequence_classifier(seed=2)):
        inputs = x if len(model.inputs) == 2 else x["gru_input"]
        expected = model.predict(inputs, batch_size=64, verbose=0)
        got = predict_arrays(model, x["hlf_input"], x["gru_input"].reshape(50, -1), chunk=16)
        np.testing.assert_allclose(got, expected, atol=2e-5)


def test_a_capped_model_reads_the_last_rows_everywhere(tmp_path):
    """Training batches, prediction and the saved model all use the model's declared last ``sequence_steps`` rows."""
    import keras

    from lhc_assets.ml.inference import predict_arrays
    from lhc_assets.ml.models import inclusive_classifier, sequence_steps
    from lhc_assets.ml.training import training_batches

    x, y, _ = _events(40, seed=3)
    model = inclusive_classifier(seed=2, sequence_steps=32)
    assert sequence_steps(model) == 32 and model.count_params() == 12353
    batches = list(training_batches(_batched(x, y, size=25), batch_size=16, sequence_steps=32))
    assert [b[0]["gru_input"].shape[1:] for b in batches] == [(32, WIDTH)] * 3
    np.testing.assert_array_equal(np.concatenate([b[0]["gru_input"] for b in batches]), x["gru_input"][:, -32:])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)

    expected = model.predict({"hlf_input": x["hlf_input"], "gru_input": x["gru_input"][:, -32:]}, verbose=0)
    got = predict_arrays(model, x["hlf_input"], x["gru_input"].reshape(40, -1), chunk=16)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert sequence_steps(loaded) == 32
    np.testing.assert_allclose(predict_arrays(loaded, x["hlf_input"], x["gru_input"]), got, atol=1e-6)
    with pytest.raises(ValueError, match="between 1 and 801"):
        inclusive_classifier(sequence_steps=802)
