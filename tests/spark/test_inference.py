"""Scoring inside Spark (spark/inference.py): per-event probabilities from saved Keras models in one mapInArrow
pass, and the trigger-style summary of background rejection at fixed signal efficiencies."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lhc_assets.ml.contract import GRU_SHAPE, GRU_WIDTH, N_HLF
from lhc_assets.ml.dataset_writer import float_lists

pytestmark = [
    pytest.mark.slow,  # starts the JVM, and the Python workers import TensorFlow
    pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer:UserWarning"),
]

TTBAR = 1  # the signal class of the study


# ---- score_events ---------------------------------------------------------------------------------------


def _test_set(path, n=6, particles=True):
    """A test_set-like Parquet file: identity, one-hot label, HLF inputs, padded particle lists, a split column."""
    rng = np.random.default_rng(4)
    classes = np.array([0, 1, 2, 1, 0, 2][:n])
    hlf = rng.uniform(size=(n, N_HLF)).astype(np.float32)
    gru = np.zeros((n, GRU_WIDTH), np.float32)
    for i in range(n):  # event i has 1 + 3i real particles, after the padding rows
        real = rng.normal(size=((1 + 3 * i) * GRU_SHAPE[1])).astype(np.float32)
        gru[i, GRU_WIDTH - real.size:] = real
    columns = {"sample": pa.array([("qcd", "ttbar", "wjets")[c] for c in classes]),
               "file": pa.array([f"f{c}.root" for c in classes]), "entry": pa.array(100 + np.arange(n), pa.int64()),
               "label": float_lists(np.eye(3, dtype=np.float32)[classes]), "hlf_input": float_lists(hlf),
               "split": pa.array(["test"] * n)}
    if particles:
        columns["gru_input"] = float_lists(gru)
    pq.write_table(pa.table(columns), path)
    return classes, hlf, gru


def _save(tmp_path, name, **kwargs) -> str:
    from lhc_assets.ml.contract import keras_model

    path = tmp_path / f"{name}.keras"
    keras_model(name).build(seed=2, **kwargs).save(path)
    return str(path)


def test_every_event_gets_its_true_class_and_the_probabilities_of_each_model(spark, tmp_path):
    import keras

    classes, hlf, gru = _test_set(tmp_path / "test_set.parquet")
    models = {"hlf_classifier": _save(tmp_path, "hlf_classifier"),
              "inclusive_classifier": _save(tmp_path, "inclusive_classifier", gru_units=4, dense_units=4)}
    from lhc_assets.spark.inference import score_events

    scored = score_events(spark.read.parquet(str(tmp_path / "test_set.parquet")), models)
    assert [(f.name, f.dataType.simpleString()) for f in scored.schema.fields] == [
        ("sample", "string"), ("file", "string"), ("entry", "bigint"), ("label", "int"),
        ("hlf_classifier", "array<float>"), ("inclusive_classifier", "array<float>")]

    rows = sorted(scored.collect(), key=lambda r: r.entry)
    assert [r.entry for r in rows] == list(range(100, 106))
    assert [r.label for r in rows] == classes.tolist() == [0, 1, 2, 1, 0, 2]
    assert [r.sample for r in rows] == ["qcd", "ttbar", "wjets", "ttbar", "qcd", "wjets"]

    dense = keras.saving.load_model(models["hlf_classifier"])
    np.testing.assert_allclose([r.hlf_classifier for r in rows], dense.predict(hlf, verbose=0), atol=1e-5)
    inclusive = keras.saving.load_model(models["inclusive_classifier"])
    expected = inclusive.predict({"hlf_input": hlf, "gru_input": gru.reshape(-1, *GRU_SHAPE)}, verbose=0)
    got = np.array([r.inclusive_classifier for r in rows])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_without_particle_lists_only_the_hlf_inputs_are_read(spark, tmp_path):
    import keras

    _, hlf, _ = _test_set(tmp_path / "hlf_test_set.parquet", n=4, particles=False)
    models = {"hlf_classifier": _save(tmp_path, "hlf_classifier")}
    from lhc_assets.spark.inference import score_events

    scored = score_events(spark.read.parquet(str(tmp_path / "hlf_test_set.parquet")), models)
    assert scored.columns == ["sample", "file", "entry", "label", "hlf_classifier"]
    rows = sorted(scored.collect(), key=lambda r: r.entry)
    assert [r.label for r in rows] == [0, 1, 2, 1]
    dense = keras.saving.load_model(models["hlf_classifier"])
    np.testing.assert_allclose([r.hlf_classifier for r in rows], dense.predict(hlf, verbose=0), atol=1e-5)


# ---- trigger_summary ------------------------------------------------------------------------------------

# ttbar probability of each event; the other two classes share the rest.
SIGNAL_SCORES = [0.9, 0.8, 0.7, 0.6]
QCD_SCORES = [0.65, 0.5, 0.3, 0.1]
WJETS_SCORES = [0.85, 0.2]


def _scores(spark):
    def probabilities(s):
        return [(1 - s) / 2, s, (1 - s) / 2]

    rows = [(label, probabilities(s), [0.01, 0.98, 0.01] if label == TTBAR else [0.5, 0.01, 0.49])
            for label, scores in ((1, SIGNAL_SCORES), (0, QCD_SCORES), (2, WJETS_SCORES)) for s in scores]
    return spark.createDataFrame(rows, "label int, hlf_classifier array<float>, inclusive_classifier array<float>")


def test_trigger_cuts_are_signal_quantiles_and_background_rejection_is_one_over_efficiency(spark):
    from lhc_assets.spark.inference import trigger_summary

    rows = trigger_summary(_scores(spark), ["hlf_classifier", "inclusive_classifier"], TTBAR, [1.0, 0.5, 0.25])
    assert [(r["model"], r["signal_efficiency_target"]) for r in rows] == [
        ("hlf_classifier", 1.0), ("hlf_classifier", 0.5), ("hlf_classifier", 0.25),
        ("inclusive_classifier", 1.0), ("inclusive_classifier", 0.5), ("inclusive_classifier", 0.25)]

    # hlf_classifier: the (1 - efficiency) quantile of the 4 signal scores 0.6 < 0.7 < 0.8 < 0.9 is the one of
    # rank ceil(q * 4) (the smallest for q = 0); events at the cut pass.
    hlf = rows[:3]
    assert [r["cut"] for r in hlf] == pytest.approx([0.6, 0.7, 0.8], abs=1e-6)
    assert [r["signal_efficiency"] for r in hlf] == [1.0, 0.75, 0.5]
    loose, middle, tight = (r["background"] for r in hlf)
    assert loose == {"QCD": {"efficiency": 0.25, "rejection": 4.0}, "W+jets": {"efficiency": 0.5, "rejection": 2.0}}
    assert middle == {"QCD": {"efficiency": 0.0, "rejection": None}, "W+jets": {"efficiency": 0.5, "rejection": 2.0}}
    assert tight == middle

    # inclusive_classifier gives every signal event 0.98 (a float32): whatever the target, the cut is that value,
    # every signal event passes and no background does.
    for r in rows[3:]:
        assert r["cut"] == pytest.approx(0.98, abs=1e-6)
        assert r["signal_efficiency"] == 1.0
        assert r["background"] == {"QCD": {"efficiency": 0.0, "rejection": None},
                                   "W+jets": {"efficiency": 0.0, "rejection": None}}


def test_trigger_summary_without_signal_events_says_so_and_lists_empty_background_classes(spark):
    from lhc_assets.spark.inference import trigger_summary

    no_ttbar = _scores(spark).where(f"label != {TTBAR}")
    with pytest.raises(ValueError, match=r"no ttbar \(signal\) events among the scores"):
        trigger_summary(no_ttbar, ["hlf_classifier"], TTBAR, [0.5])
    no_wjets = _scores(spark).where("label != 2")
    (row,) = trigger_summary(no_wjets, ["hlf_classifier"], TTBAR, [1.0])
    assert row["background"] == {"QCD": {"efficiency": 0.25, "rejection": 4.0},
                                 "W+jets": {"efficiency": None, "rejection": None}}
