"""Training-data readers: Petastorm and pyarrow streams into tf.data, sharding, shapes, bad datasets."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lhc_assets.ml.dataset_writer import INCLUSIVE_SCHEMA, float_lists

pytestmark = pytest.mark.slow  # imports TensorFlow

N_EVENTS = 300


@pytest.fixture(scope="module")
def inclusive_dir(tmp_path_factory) -> tuple:
    """Two Parquet files of an inclusive dataset, row groups of 40 events, recognisable values."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, N_EVENTS)
    hlf = rng.uniform(0, 1, (N_EVENTS, 14)).astype(np.float32)
    hlf[:, 0] = np.arange(N_EVENTS)  # the event number, to follow rows through the readers
    gru = rng.normal(size=(N_EVENTS, 801 * 19)).astype(np.float32)
    gru[:, -19] = np.arange(N_EVENTS)
    root = tmp_path_factory.mktemp("inclusive")
    for part, sl in enumerate((slice(0, 160), slice(160, N_EVENTS))):
        n = sl.stop - sl.start
        table = pa.Table.from_arrays([
            pa.array(["ttbar"] * n), pa.array(["f.root"] * n), pa.array(np.arange(sl.start, sl.stop)),
            float_lists(np.eye(3, dtype=np.float32)[labels[sl]]), float_lists(hlf[sl]), float_lists(gru[sl]),
        ], schema=INCLUSIVE_SCHEMA)
        pq.write_table(table, root / f"part-{part:05d}.parquet", row_group_size=40)
    (root / "_SUCCESS").write_text("")
    return root, labels, hlf, gru


def _collect(dataset) -> tuple:
    xs, ys = [], []
    for x, y in dataset:
        xs.append({k: v.numpy() for k, v in x.items()} if isinstance(x, dict) else x.numpy())
        ys.append(y.numpy())
    return xs, ys


@pytest.mark.parametrize("reader", ["petastorm_dataset", "arrow_dataset"])
def test_inclusive_batches_have_the_model_shapes_and_every_event_once(inclusive_dir, reader):
    from lhc_assets.ml import readers

    root, labels, _, gru = inclusive_dir
    with getattr(readers, reader)(root, "inclusive", batch_size=64, seed=3) as ds:
        assert ds.options().autotune.enabled is False  # see readers.prefetched
        xs, ys = _collect(ds)
    assert [len(y) for y in ys][:-1] == [64] * (len(ys) - 1)
    x = {k: np.concatenate([b[k] for b in xs]) for k in xs[0]}
    y = np.concatenate(ys)
    assert x["hlf_input"].shape == (N_EVENTS, 14) and x["gru_input"].shape == (N_EVENTS, 801, 19)
    events = x["hlf_input"][:, 0].astype(int)
    assert sorted(events) == list(range(N_EVENTS))
    np.testing.assert_array_equal(y, np.eye(3, dtype=np.float32)[labels[events]])
    np.testing.assert_array_equal(x["gru_input"].reshape(N_EVENTS, -1), gru[events])  # reshape is row-major


@pytest.mark.parametrize("reader", ["petastorm_dataset", "arrow_dataset"])
def test_two_shards_split_the_events_between_them(inclusive_dir, reader):
    from lhc_assets.ml import readers

    root = inclusive_dir[0]
    seen = []
    for shard in (0, 1):
        with getattr(readers, reader)(root, "hlf", batch_size=50, cur_shard=shard, shard_count=2,
                                      shuffle_row_groups=False) as ds:
            xs, _ = _collect(ds)
        seen.append(set(np.concatenate(xs)[:, 0].astype(int)))
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(N_EVENTS))


def _delivered_row_groups(reader, root, **kwargs) -> list[int]:
    """The stored row groups (40 events each, per file) in the order the reader delivered them, each checked
    to arrive whole and in its stored row order."""
    from lhc_assets.ml import readers

    with getattr(readers, reader)(root, "hlf", batch_size=64, **kwargs) as ds:
        events = np.concatenate(_collect(ds)[0])[:, 0].astype(int)
    group_of = np.concatenate([np.arange(160) // 40, 4 + np.arange(N_EVENTS - 160) // 40])
    starts = np.flatnonzero(np.diff(group_of[events], prepend=-1))
    order = group_of[events][starts].tolist()
    for start, end, group in zip(starts, [*starts[1:], len(events)], order, strict=True):
        np.testing.assert_array_equal(events[start:end], np.flatnonzero(group_of == group))
    return order


@pytest.mark.parametrize("reader", ["petastorm_dataset", "arrow_dataset"])
def test_row_group_shuffling_is_reproducible_with_a_seed_and_off_keeps_the_stored_order(inclusive_dir, reader):
    root = inclusive_dir[0]
    shuffled = _delivered_row_groups(reader, root, seed=3)
    assert sorted(shuffled) == list(range(8)) and shuffled != sorted(shuffled)
    assert _delivered_row_groups(reader, root, seed=3) == shuffled
    assert _delivered_row_groups(reader, root, seed=11) != shuffled
    assert _delivered_row_groups(reader, root, shuffle_row_groups=False) == list(range(8))


def test_in_memory_arrays_match_the_stored_order(inclusive_dir):
    from lhc_assets.ml.readers import load_arrays

    root, labels, hlf, _ = inclusive_dir
    x, y = load_arrays(root, "hlf")
    np.testing.assert_array_equal(x, hlf)
    np.testing.assert_array_equal(y.argmax(axis=1), labels)


def test_several_epochs_and_keras_fit_from_the_petastorm_reader(inclusive_dir):
    import keras

    from lhc_assets.ml.readers import petastorm_dataset

    root = inclusive_dir[0]
    with petastorm_dataset(root, "hlf", batch_size=32, num_epochs=3, seed=1) as ds:
        events = np.concatenate(_collect(ds)[0])[:, 0].astype(int)
    assert len(events) == 3 * N_EVENTS
    for epoch in events.reshape(3, N_EVENTS):
        assert sorted(epoch) == list(range(N_EVENTS))
    with pytest.raises(ValueError, match=r"num_epochs=2 needs workers_count=1"), \
            petastorm_dataset(root, "hlf", num_epochs=2, workers_count=2):
        pass
    model = keras.Sequential([keras.Input((14,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "categorical_crossentropy")
    with petastorm_dataset(root, "hlf", batch_size=32, num_epochs=None, seed=1) as ds:
        history = model.fit(ds, epochs=2, steps_per_epoch=5, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()


def test_bad_datasets_fail_before_reading_with_the_column_named(tmp_path):
    from lhc_assets.ml.readers import arrow_dataset, petastorm_dataset

    fixed = pa.table({"hlf_input": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(28, np.float32)), 14),
                      "label": float_lists(np.zeros((2, 3), np.float32))})
    pq.write_table(fixed, tmp_path / "fixed.parquet")
    with pytest.raises(ValueError, match=r"'hlf_input'.*plain list<float>"), petastorm_dataset(tmp_path, "hlf"):
        pass
    (tmp_path / "fixed.parquet").unlink()
    short = pa.table({"hlf_input": float_lists(np.zeros((2, 13), np.float32)),
                      "label": float_lists(np.zeros((2, 3), np.float32))})
    pq.write_table(short, tmp_path / "short.parquet")
    with pytest.raises(ValueError, match="expected lists of length 14"), arrow_dataset(tmp_path, "hlf"):
        pass
    with pytest.raises(FileNotFoundError, match="no Parquet files"), arrow_dataset(tmp_path / "nothing", "hlf"):
        pass
