"""The training-data assets materialized for real on generated files: balance, split, scalers, datasets."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey
from dagster._core.definitions.data_version import StaleStatus

from lhc_assets.physics.schema import LLF_ROWS
from tests.defs.conftest import failure_messages

pytestmark = pytest.mark.slow
DATASETS = ("train_set", "test_set", "hlf_train_set", "hlf_test_set")


def _training_data(platform):
    job = platform.defs.resolve_job_def("training_data_job")
    return job.execute_in_process(instance=platform.instance, raise_on_error=False)


def _current(platform, asset: str):
    from resources.io_manager import materialized_path

    return materialized_path(platform.defs.resources["storage"], asset)


def _stale_status(platform) -> dict[str, StaleStatus]:
    """Each asset's status as the webserver computes it for its "Stale" badge (Dagster's own resolver)."""
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._time import get_current_datetime

    graph = platform.defs.resolve_asset_graph()
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                          instance=platform.instance, asset_graph=graph)
    resolver = CachingStaleStatusResolver(instance=platform.instance, asset_graph=graph, loading_context=view)
    return {k.to_user_string(): resolver.get_status(k) for k in graph.materializable_asset_keys
            if not graph.get(k).is_partitioned}


def _read(platform, asset: str):
    return pq.read_table(_current(platform, asset))


def test_balanced_scaled_reproducible_training_sets(platform, generated_files):
    keys = [platform.add_file(s, p) for s, p in generated_files.items()]
    assert platform.materialize(keys).success
    result = _training_data(platform)
    assert result.success, failure_messages(result)
    checks = {e.event_specific_data.check_name: e.event_specific_data.passed for e in result.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks and all(checks.values()), checks

    # Balanced classes, 80/20, train and test disjoint, every event from the selected features.
    train, test = _read(platform, "train_set"), _read(platform, "test_set")
    per_class = {split: np.bincount(np.argmax(np.stack(t.column("label").to_numpy(zero_copy_only=False)), axis=1),
                                    minlength=3) for split, t in (("train", train), ("test", test))}
    n_class = per_class["train"][0] + per_class["test"][0]
    assert len(set(per_class["train"])) == 1 and len(set(per_class["test"])) == 1
    assert per_class["train"][0] == round(0.8 * n_class)
    qcd_selected = platform.table("hlf_features", keys[0]).num_rows  # QCD is the rarest class
    assert n_class == qcd_selected
    ids = {split: set(zip(t.column("file").to_pylist(), t.column("entry").to_pylist(), strict=True))
           for split, t in (("train", train), ("test", test))}
    assert not ids["train"] & ids["test"]

    # HLF inputs scaled with the train ranges; GRU inputs: zero padding first, lepton last.
    hlf_train = np.stack(_read(platform, "hlf_train_set").column("hlf_input").to_numpy(zero_copy_only=False))
    assert hlf_train.shape[1] == 14 and hlf_train.min() == 0.0 and hlf_train.max() == 1.0
    scalers = json.loads((platform.root / "models" / "feature_scalers.json").read_text())
    assert scalers["fitted_on"]["split"] == "train" and scalers["fitted_on"]["events"] == len(train)
    assert scalers["fitted_on"]["particles"] > len(train)  # real particle rows, padding excluded
    gru = np.asarray(train.column("gru_input")[0].values, np.float32).reshape(LLF_ROWS, 19)
    real = np.flatnonzero(np.abs(gru).sum(axis=1) > 0)
    assert real.size > 1 and real[-1] == LLF_ROWS - 1 and np.all(np.diff(real) == 1)  # padding, then real rows

    # The same inputs and seed give the same rows in the same order.
    before = {a: _read(platform, a) for a in DATASETS}
    versions = {a: _current(platform, a) for a in DATASETS}
    assert _training_data(platform).success
    for a in DATASETS:
        assert _current(platform, a) != versions[a]
        assert _read(platform, a).equals(before[a]), a
    versions = {a: _current(platform, a) for a in DATASETS}

    # A new input partition does not change the training sets until they are re-materialized.
    extra = platform.add_file("ttbar", generated_files["ttbar"], name="ttbar_more.root")
    assert platform.materialize([extra]).success
    for a in DATASETS:
        assert _current(platform, a) == versions[a]
    # ... but the UI marks every asset that reads the features stale. Dagster 1.13's staleness is not
    # transitive, so the HLF-only sets (computed from the selection and the scalers) follow one step later.
    reads_features = ("undersampled_dataset", "feature_scalers", "train_set", "test_set")
    stale = _stale_status(platform)
    assert {a: stale[a] for a in reads_features} == dict.fromkeys(reads_features, StaleStatus.STALE), stale
    records = platform.instance.fetch_materializations(AssetKey("train_set"), limit=10).records
    assert len(records) == 2


def test_a_class_without_selected_events_fails_naming_the_class_and_the_files(platform, generated_files):
    keys = [platform.add_file(s, generated_files[s]) for s in ("ttbar", "wjets")]
    assert platform.materialize(keys).success
    result = _training_data(platform)
    assert not result.success
    text = failure_messages(result)
    assert "no selected events for class QCD (qcd)" in text, text
    assert all(k in text for k in keys) and "qcd: no files" in text, text
    assert _current(platform, "train_set") is None
