"""The Spark side of the training data: what the checks of undersampled_dataset count."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_selection_audit_counts_rows_per_split_and_class_and_finds_shared_and_repeated_events(spark):
    from lhc_assets.spark.training_data import selection_audit

    rows = [("ttbar", "f0", 1, 1, "train"), ("ttbar", "f0", 2, 1, "test"), ("qcd", "f1", 1, 0, "train"),
            ("wjets", "f2", 7, 2, "train"), ("wjets", "f2", 7, 2, "test"),  # one event in both splits
            ("qcd", "f1", 3, 0, "test"), ("qcd", "f1", 3, 0, "test")]  # one event twice in test
    df = spark.createDataFrame(rows, "sample string, file string, entry long, label int, split string")
    audit = selection_audit(df)
    assert audit.counts == {"train": {0: 1, 1: 1, 2: 1}, "test": {0: 2, 1: 1, 2: 1}}
    assert (audit.in_both_splits, audit.duplicated) == (1, 2)
    clean = selection_audit(df.where("entry != 7 and entry != 3"))
    assert (clean.in_both_splits, clean.duplicated) == (0, 0)
