"""Grid search of the HLF classifier (ml/hyperparameters.py): the grid, the stratified sample, the folds, the
sample file, the choice of the best trial, and one cross-validated trial on a tiny sample."""

from __future__ import annotations

import numpy as np
import pytest

from lhc_assets.ml.hyperparameters import (
    Trial,
    _load_sample,
    best_trial,
    grid,
    kfold,
    run_trial,
    run_trial_unit,
    sample_indices,
    save_sample,
    trial_units,
)


def _one_hot(classes) -> np.ndarray:
    return np.eye(3, dtype=np.float32)[np.asarray(classes)]


# ---- Trial and grid -------------------------------------------------------------------------------------


def test_trial_name_spells_batch_epochs_and_the_hidden_units_per_layer():
    assert Trial(64, 10, (50, 20, 10)).name == "batch64-epochs10-hidden50x20x10"
    assert Trial(1, 2, (7,)).name == "batch1-epochs2-hidden7"


def test_default_grid_is_the_243_trials_of_the_study_batch_size_outermost():
    trials = grid()
    assert len(trials) == 3 * 3 * 3**3 == 243
    assert len(set(trials)) == 243
    assert trials[0] == Trial(64, 10, (50, 20, 10))
    assert trials[1] == Trial(64, 10, (50, 20, 20))
    assert trials[27] == Trial(64, 30, (50, 20, 10))
    assert trials[-1] == Trial(200, 50, (150, 100, 50))
    assert {t.batch_size for t in trials[:81]} == {64}


def test_grid_takes_one_unit_count_per_layer_and_returns_plain_ints():
    trials = grid(np.array([32]), [5, 6], [[4, 8], [3]])
    assert trials == [Trial(32, 5, (4, 3)), Trial(32, 5, (8, 3)), Trial(32, 6, (4, 3)), Trial(32, 6, (8, 3))]
    assert all(type(v) is int for t in trials for v in (t.batch_size, t.epochs, *t.hidden))


@pytest.mark.parametrize(("batch_sizes", "epochs", "hidden", "message"), [
    ([], [1], [[1]], "at least one value"),
    ([1], [], [[1]], "at least one value"),
    ([1], [1], [], "at least one value"),
    ([1], [1], [[1], []], "at least one value"),
    ([0, 8], [1], [[1]], "must be positive"),
    ([8], [-1], [[1]], "must be positive"),
    ([8], [1], [[4], [0, 2]], "must be positive"),
])
def test_grid_rejects_empty_or_non_positive_dimensions(batch_sizes, epochs, hidden, message):
    with pytest.raises(ValueError, match=message):
        grid(batch_sizes, epochs, hidden)


# ---- sample_indices -------------------------------------------------------------------------------------


def _labels_10_20_5() -> np.ndarray:
    # 10 QCD, 20 ttbar, 5 W+jets, interleaved so that the classes are not contiguous blocks.
    classes = np.array([0] * 10 + [1] * 20 + [2] * 5)
    return _one_hot(np.random.default_rng(0).permutation(classes))


def test_sample_is_stratified_with_a_rounded_share_of_every_class():
    labels = _labels_10_20_5()
    rows = sample_indices(labels, 0.2, seed=3)
    classes = np.argmax(labels[rows], axis=1)
    # round(0.2 * 10) = 2, round(0.2 * 20) = 4, round(0.2 * 5) = 1
    assert np.bincount(classes, minlength=3).tolist() == [2, 4, 1]
    assert np.all(np.diff(rows) > 0)  # sorted, no repeats
    assert rows.min() >= 0 and rows.max() < len(labels)


def test_sample_keeps_at_least_one_event_of_each_class_and_all_rows_at_fraction_one():
    labels = _labels_10_20_5()
    tiny = sample_indices(labels, 0.01, seed=1)
    assert np.bincount(np.argmax(labels[tiny], axis=1), minlength=3).tolist() == [1, 1, 1]
    assert sample_indices(labels, 1.0, seed=1).tolist() == list(range(35))


def test_sample_is_reproducible_with_its_seed_and_changes_with_another():
    labels = _one_hot(np.arange(3000) % 3)
    a = sample_indices(labels, 0.1, seed=7)
    np.testing.assert_array_equal(a, sample_indices(labels, 0.1, seed=7))
    assert len(a) == 300
    assert not np.array_equal(a, sample_indices(labels, 0.1, seed=8))


def test_sample_has_no_events_of_a_class_that_is_absent():
    rows = sample_indices(_one_hot([1, 1, 1, 1, 2, 2]), 0.5, seed=0)
    assert np.argmax(_one_hot([1, 1, 1, 1, 2, 2])[rows], axis=1).tolist() == [1, 1, 2]


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.01])
def test_sample_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(ValueError, match=r"sample fraction must be in \(0, 1\]"):
        sample_indices(_one_hot([0, 1, 2]), fraction, seed=0)


# ---- kfold ----------------------------------------------------------------------------------------------


def test_every_row_is_validated_exactly_once_and_trained_on_in_the_other_folds():
    folds = kfold(10, 3, seed=5)
    assert len(folds) == 3
    assert sorted(len(v) for _, v in folds) == [3, 3, 4]  # array_split of 10 into 3
    assert sorted(np.concatenate([v for _, v in folds]).tolist()) == list(range(10))
    for train, validation in folds:
        assert np.all(np.diff(train) > 0) and np.all(np.diff(validation) > 0)
        assert sorted([*train.tolist(), *validation.tolist()]) == list(range(10))


def test_folds_are_reproducible_with_their_seed_and_shuffled():
    a = kfold(30, 3, seed=1)
    for (ta, va), (tb, vb) in zip(a, kfold(30, 3, seed=1), strict=True):
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_array_equal(va, vb)
    # A seeded permutation, not contiguous blocks of rows.
    assert a[0][1].tolist() != list(range(10))
    assert any(not np.array_equal(va, vb) for (_, va), (_, vb) in zip(a, kfold(30, 3, seed=2), strict=True))


def test_folds_need_two_folds_and_at_least_one_row_per_fold():
    with pytest.raises(ValueError, match="at least 2 folds, got 1"):
        kfold(10, 1, seed=0)
    with pytest.raises(ValueError, match="3 events cannot be split into 4 folds"):
        kfold(3, 4, seed=0)
    assert [v.tolist() for _, v in kfold(2, 2, seed=0)] in ([[0], [1]], [[1], [0]])


# ---- the sample file ------------------------------------------------------------------------------------


def test_saved_sample_loads_back_as_float32_with_the_same_values(tmp_path):
    x = np.arange(42, dtype=np.float64).reshape(3, 14) / 7.0
    y = _one_hot([2, 0, 1]).astype(np.float64)
    path = tmp_path / "sample.npz"
    save_sample(path, x, y)
    loaded_x, loaded_y = _load_sample(str(path))
    assert loaded_x.dtype == np.float32 and loaded_y.dtype == np.float32
    np.testing.assert_array_equal(loaded_x, x.astype(np.float32))
    np.testing.assert_array_equal(loaded_y, [[0, 0, 1], [1, 0, 0], [0, 1, 0]])


# ---- best_trial -----------------------------------------------------------------------------------------


def _result(name, accuracy, loss, hidden):
    return {"trial": name, "mean_val_accuracy": accuracy, "mean_val_loss": loss, "hidden": hidden}


def test_best_trial_has_the_highest_accuracy():
    results = [_result("a", 0.80, 0.1, [1]), _result("b", 0.90, 0.9, [100]), _result("c", 0.85, 0.2, [1])]
    assert best_trial(results)["trial"] == "b"


def test_best_trial_ties_go_to_lower_loss_then_smaller_model_then_name():
    assert best_trial([_result("a", 0.9, 0.5, [1]), _result("b", 0.9, 0.4, [50])])["trial"] == "b"
    assert best_trial([_result("a", 0.9, 0.4, [50, 50]), _result("b", 0.9, 0.4, [20, 70]),
                       _result("c", 0.9, 0.4, [10, 20])])["trial"] == "c"
    assert best_trial([_result("z", 0.9, 0.4, [10]), _result("m", 0.9, 0.4, [10])])["trial"] == "m"


def test_best_trial_of_no_results_is_an_error():
    with pytest.raises(ValueError, match="no trial results"):
        best_trial([])


# ---- one trial ------------------------------------------------------------------------------------------


def _initialise_tensorflow() -> None:
    """Start TensorFlow's runtime first, as in a reused Spark worker: run_trial then cannot make the rest of the
    test session single-threaded (it sets the thread counts only while the runtime is not yet started)."""
    import tensorflow as tf

    tf.constant(0.0)


def _separable_sample(path, n=48, seed=0):
    """Class c has HLF column c at 1, every other column at 0 (plus a little noise): easy to learn."""
    classes = np.arange(n) % 3
    x = np.zeros((n, 14), np.float32)
    x[np.arange(n), classes] = 1.0
    x += np.random.default_rng(seed).normal(0, 0.01, size=x.shape).astype(np.float32)
    save_sample(path, x, _one_hot(classes))
    return x, _one_hot(classes)


@pytest.mark.slow  # imports TensorFlow
def test_trial_cross_validates_each_fold_with_its_own_seeded_model(tmp_path):
    import keras

    from lhc_assets.ml.models import hlf_classifier

    _initialise_tensorflow()
    path = tmp_path / "sample.npz"
    x, y = _separable_sample(path)
    trial = Trial(batch_size=4, epochs=1, hidden=(8,))
    result = run_trial(trial, str(path), folds=2, seed=3, learning_rate=0.05)

    assert set(result) == {"batch_size", "epochs", "hidden", "trial", "folds", "mean_val_accuracy",
                           "std_val_accuracy", "mean_val_loss", "seconds"}
    assert (result["batch_size"], result["epochs"], result["hidden"]) == (4, 1, [8])
    assert result["trial"] == "batch4-epochs1-hidden8" and result["folds"] == 2
    assert result["seconds"] > 0

    # The same folds trained by hand, with the seeds run_trial uses (seed + fold index).
    accuracy, loss = [], []
    for k, (train, validation) in enumerate(kfold(len(x), 2, 3)):
        keras.utils.set_random_seed(3 + k)
        model = hlf_classifier(hidden=(8,), learning_rate=0.05, seed=3 + k)
        model.fit(x[train], y[train], batch_size=4, epochs=1, verbose=0, shuffle=True)
        val_loss, val_accuracy = model.evaluate(x[validation], y[validation], batch_size=1024, verbose=0)
        accuracy.append(val_accuracy)
        loss.append(val_loss)
        keras.backend.clear_session()
    assert result["mean_val_accuracy"] == pytest.approx(np.mean(accuracy), abs=1e-6)
    assert result["std_val_accuracy"] == pytest.approx(np.std(accuracy), abs=1e-6)
    assert result["mean_val_loss"] == pytest.approx(np.mean(loss), rel=1e-4)
    # 24 validation events per fold; one epoch learns the problem well above chance (1/3).
    assert result["mean_val_accuracy"] * 48 == pytest.approx(round(result["mean_val_accuracy"] * 48))
    assert result["mean_val_accuracy"] > 2 / 3


@pytest.mark.slow  # imports TensorFlow
def test_trial_unit_runs_its_trials_in_order_on_the_shared_sample(tmp_path):
    _initialise_tensorflow()
    path = tmp_path / "sample.npz"
    _separable_sample(path, n=24)
    trials = [Trial(8, 1, (4,)), Trial(6, 1, (3, 2))]
    results = run_trial_unit((trials, str(path), 2, 1))
    assert [r["trial"] for r in results] == ["batch8-epochs1-hidden4", "batch6-epochs1-hidden3x2"]
    assert [r["hidden"] for r in results] == [[4], [3, 2]]
    assert all(r["folds"] == 2 for r in results)
    for r in results:
        # Two folds of 12 validation events: the mean accuracy is a multiple of 1/24, the loss positive.
        assert 0.0 <= r["mean_val_accuracy"] <= 1.0
        assert r["mean_val_accuracy"] * 24 == pytest.approx(round(r["mean_val_accuracy"] * 24))
        assert r["mean_val_loss"] > 0
    # Pure function of (trial, sample, folds, seed): the second trial alone scores the same.
    again = run_trial(trials[1], str(path), 2, 1)
    assert again["mean_val_accuracy"] == pytest.approx(results[1]["mean_val_accuracy"], abs=1e-6)
    assert again["mean_val_loss"] == pytest.approx(results[1]["mean_val_loss"], rel=1e-5)


def test_trial_units_deal_the_grid_round_robin_over_the_tasks_once_each():
    trials = grid([32, 64], [1], [[4, 8, 16]])  # 6 trials
    units = trial_units(trials, "/shared/sample.npz", 3, 7, parallelism=4)
    assert [[t.name for t in unit[0]] for unit in units] == [
        [trials[0].name, trials[4].name], [trials[1].name, trials[5].name], [trials[2].name], [trials[3].name]]
    assert all(unit[1:] == ("/shared/sample.npz", 3, 7) for unit in units)
    # 0: one task per trial; more tasks than trials: no empty task.
    assert [len(u[0]) for u in trial_units(trials, "s", 3, 7)] == [1] * 6
    assert len(trial_units(trials, "s", 3, 7, parallelism=50)) == 6
