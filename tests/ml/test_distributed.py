"""Multi-worker training: two worker processes on 127.0.0.1, each on its shard, train one model together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lhc_assets.ml.dataset_writer import float_lists

pytestmark = pytest.mark.slow  # starts TensorFlow worker processes

N_EVENTS = 4000
BATCH_SIZE = 64
EPOCHS = 3


def _write_hlf_dataset(root: Path, sizes: tuple[int, ...], row_group_size: int, seed: int = 7) -> tuple:
    """A learnable HLF dataset: the class is the tertile of a linear function of two features plus noise."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    hlf = rng.normal(size=(n, 14)).astype(np.float32)
    score = hlf[:, 0] + 0.5 * hlf[:, 1] + rng.normal(scale=0.3, size=n)
    labels = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))
    onehot = np.eye(3, dtype=np.float32)[labels]
    root.mkdir(parents=True, exist_ok=True)
    start = 0
    for part, size in enumerate(sizes):
        rows = slice(start, start + size)
        table = pa.table({"label": float_lists(onehot[rows]), "hlf_input": float_lists(hlf[rows])})
        pq.write_table(table, root / f"part-{part:05d}.parquet", row_group_size=row_group_size)
        start += size
    (root / "_SUCCESS").write_text("")
    return hlf, labels


def _row_groups(root: Path) -> list[tuple[str, int]]:
    return [(f.name, i) for f in sorted(root.glob("part-*.parquet")) for i in range(pq.read_metadata(f).num_row_groups)]


def _worker_processes() -> list[psutil.Process]:
    """Live worker processes under this one. Other descendants (the session's Spark JVM and its Python
    daemon, whose exited workers are briefly zombies) may vanish or be unreadable while we look."""
    workers = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "lhc_assets.ml.distributed" in " ".join(p.cmdline()):
                workers.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # ZombieProcess is a NoSuchProcess
            continue
    return workers


@pytest.mark.timeout(600)
def test_two_workers_train_one_model_on_disjoint_shards(tmp_path):
    import keras

    from lhc_assets.ml.distributed import train_multi_worker

    data = tmp_path / "train"
    # Uneven files (row groups of 300, one short one): shard 0 holds 1,900 rows, shard 1 holds 2,100.
    hlf, labels = _write_hlf_dataset(data, (2500, 1500), row_group_size=300)
    result = train_multi_worker(data, "hlf", "hlf_classifier", workers=2, epochs=EPOCHS, batch_size=BATCH_SIZE,
                                seed=1, output_dir=tmp_path / "run", model_kwargs={"learning_rate": 0.005},
                                timeout_s=500)

    chief, other = result["workers"]
    assert [chief["index"], other["index"]] == [0, 1]
    # Both took part in every step, on batches of their own, and the same number of steps.
    shard_rows = [chief["shard_rows"], other["shard_rows"]]
    assert shard_rows == [1900, 2100]
    steps_per_epoch = min(shard_rows) // BATCH_SIZE
    for report in (chief, other):
        assert report["steps_per_epoch"] == steps_per_epoch
        assert report["steps"] == EPOCHS * steps_per_epoch > 0
        assert report["samples"] == report["steps"] * BATCH_SIZE
    # Each read its own shard: disjoint row groups that together are the whole dataset.
    shards = [{tuple(g) for g in report["shard_row_groups"]} for report in (chief, other)]
    assert shards[0] and shards[1] and not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(_row_groups(data))
    # One model: the replicas end with the same weights although they saw different data (gradients were
    # combined), and the metrics are global (the same history on both workers).
    assert chief["weights_sha256"] == other["weights_sha256"]
    assert chief["history"] == other["history"] == result["history"]

    history = result["history"]
    assert len(history["loss"]) == EPOCHS
    assert history["loss"][-1] < history["loss"][0]
    assert history["accuracy"][-1] > 0.6  # chance is 1/3

    assert result["model_path"] == chief["model_path"] and other["model_path"] is None
    model = keras.saving.load_model(result["model_path"], safe_mode=True)
    predicted = model.predict(hlf, batch_size=1024, verbose=0).argmax(axis=1)
    assert np.mean(predicted == labels) > 0.6
    assert not _worker_processes()


@pytest.mark.timeout(300)
def test_a_worker_failure_stops_every_worker_and_names_the_cause(tmp_path):
    from lhc_assets.ml.distributed import train_multi_worker

    data = tmp_path / "train"
    _write_hlf_dataset(data, (400,), row_group_size=50)
    # Footers intact (the readers' checks pass), data of row group 1 destroyed: only worker 1 reads it, and
    # worker 0 is left waiting for it in a collective.
    path = data / "part-00000.parquet"
    chunk = pq.read_metadata(path).row_group(1).column(1)
    with path.open("r+b") as f:
        f.seek(chunk.dictionary_page_offset or chunk.data_page_offset)
        f.write(b"\xff" * chunk.total_compressed_size)

    with pytest.raises(RuntimeError, match=r"(?s)worker 1 exited with code \d+.*thrift"):
        train_multi_worker(data, "hlf", "hlf_classifier", workers=2, epochs=2, batch_size=16, seed=1,
                           output_dir=tmp_path / "run", timeout_s=240)
    assert not _worker_processes()
