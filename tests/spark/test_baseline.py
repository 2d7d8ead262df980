"""The Spark ML random forest baseline (spark/baseline.py) on small, hand-made, separable HLF tables."""

from __future__ import annotations

import numpy as np
import pytest

from lhc_assets.physics.schema import HLF_COLUMNS

pytestmark = pytest.mark.slow  # starts the JVM


def _events(spark, per_class=10, seed=0, informative=("HT",), noise=0.0):
    """``label`` (int) and the 14 HLF: the ``informative`` columns are 100 * label + U(0, 10), so the classes
    are separated by wide gaps; the others are ``noise`` * U(0, 1) (constant 0 by default)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], per_class)
    rows = []
    for label in labels:
        values = [float(100 * label + rng.uniform(0, 10)) if c in informative else float(noise * rng.uniform())
                  for c in HLF_COLUMNS]
        rows.append((int(label), *values))
    schema = ", ".join(["label int", *(f"`{c}` double" for c in HLF_COLUMNS)])
    return spark.createDataFrame(rows, schema)


def _ht_only(spark, hts, labels):
    """Events whose HLF are all 0 but HT."""
    rows = [(int(label), float(ht), *([0.0] * (len(HLF_COLUMNS) - 1))) for ht, label in zip(hts, labels, strict=True)]
    return spark.createDataFrame(rows, ", ".join(["label int", *(f"`{c}` double" for c in HLF_COLUMNS)]))


def test_one_tree_splits_ht_halfway_between_the_classes_and_only_ht_has_importance(spark):
    from lhc_assets.spark.baseline import feature_importances, forest_probabilities, train_random_forest

    # HT is 0, 100 or 200 by class (10 events each), every other HLF is 0: the only useful splits are on HT,
    # and Spark puts a split halfway between two consecutive values (50 and 150).
    train = _ht_only(spark, [100.0 * c for c in range(3) for _ in range(10)], [c for c in range(3) for _ in range(10)])
    # One tree reads every feature at every node (Spark's "auto" subset for a single tree).
    model = train_random_forest(train, num_trees=1, max_depth=3, seed=7)

    importances = feature_importances(model)
    assert list(importances) == list(HLF_COLUMNS)  # the 14 HLF by name, in the assembler's order
    assert importances == {c: (1.0 if c == "HT" else 0.0) for c in HLF_COLUMNS}

    hts = [-10.0, 49.0, 51.0, 100.0, 149.0, 151.0, 900.0]
    scored = forest_probabilities(model, _ht_only(spark, hts, [0, 0, 1, 1, 1, 2, 2]))
    assert [(f.name, f.dataType.simpleString()) for f in scored.schema.fields] == [
        ("label", "int"), ("probability", "array<float>")]
    rows = scored.collect()
    assert [r.label for r in rows] == [0, 0, 1, 1, 1, 2, 2]  # the events' own labels, as int
    # Pure leaves: each event's probability is exactly one-hot on the class of its side of the splits.
    assert [list(r.probability) for r in rows] == [
        [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0],
        [0.0, 0.0, 1.0]]


def test_forest_of_several_trees_is_reproducible_with_its_seed(spark):
    from lhc_assets.spark.baseline import feature_importances, forest_probabilities, train_random_forest

    # 10 separating HLF and 4 noise columns: each node draws 4 of the 14 features (sqrt, Spark's "auto" for a
    # forest), and almost always sees a separating one.
    noisy = ("nJets", "nBjets", "lepCharge", "lepIsEle")
    informative = tuple(c for c in HLF_COLUMNS if c not in noisy)
    train = _events(spark, seed=3, informative=informative, noise=50.0)
    test = _events(spark, per_class=5, seed=4, informative=informative, noise=50.0)
    a = train_random_forest(train, num_trees=5, max_depth=4, seed=11)
    b = train_random_forest(train, num_trees=5, max_depth=4, seed=11)

    importances = feature_importances(a)
    assert importances == feature_importances(b)
    assert sum(importances.values()) == pytest.approx(1.0)
    assert all(v >= 0.0 for v in importances.values())
    assert sum(importances[c] for c in noisy) < 0.1  # the separating HLF carry the forest's splits

    pa_, pb = forest_probabilities(a, test).collect(), forest_probabilities(b, test).collect()
    assert [list(r.probability) for r in pa_] == [list(r.probability) for r in pb]
    probabilities = np.array([r.probability for r in pa_])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert np.argmax(probabilities, axis=1).tolist() == [r.label for r in pa_]


def test_a_missing_hlf_value_is_refused_when_training(spark):
    from lhc_assets.spark.baseline import train_random_forest

    train = _events(spark, per_class=3).selectExpr(
        "label", *(f"IF(label = 2, NULL, `{c}`) AS `{c}`" if c == "MET" else f"`{c}`" for c in HLF_COLUMNS))
    with pytest.raises(Exception, match=r"(?i)null"):
        train_random_forest(train, num_trees=1, max_depth=2, seed=0)
