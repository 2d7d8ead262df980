"""MultiWorkerMirroredStrategy with a single worker (tests/ml/test_distributed.py runs two), through one
configuration of benchmarks/distributed_training.py: one worker reads the whole dataset as its shard."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lhc_assets.ml.dataset_writer import float_lists

pytestmark = pytest.mark.slow  # starts a TensorFlow worker process

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "distributed_training.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("distributed_training_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hlf_dataset(root: Path, n: int = 3000, seed: int = 5) -> None:
    """HLF rows in [0, 1] whose class is the tertile of the first feature: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    hlf = rng.uniform(size=(n, 14)).astype(np.float32)
    labels = np.digitize(hlf[:, 0], [1 / 3, 2 / 3])
    root.mkdir(parents=True)
    table = pa.table({"label": float_lists(np.eye(3, dtype=np.float32)[labels]), "hlf_input": float_lists(hlf)})
    pq.write_table(table, root / "part-00000.parquet", row_group_size=1000)


@pytest.mark.timeout(300)
def test_one_worker_trains_on_the_whole_dataset_and_is_evaluated(tmp_path):
    benchmark = _benchmark()
    _hlf_dataset(tmp_path / "train")
    result = benchmark.run_config("mwms_1", str(tmp_path / "train"), str(tmp_path / "train"), 3,
                                  str(tmp_path / "run"))

    assert result["workers"] == 1 and result["shard_rows"] == [3000] and result["replicas_in_sync"]
    assert result["steps"] == 3 * (3000 // benchmark.BATCH) and result["samples"] == result["steps"] * benchmark.BATCH
    assert 0 < result["train_seconds"] < result["wall_seconds"]
    assert result["test_events"] == 3000 and len(result["test_auc"]) == 3
    assert result["mean_test_auc"] > 0.8  # chance is 0.5
    assert set(result["rejection"]) == {"0.99", "0.95"}
    assert set(result["rejection"]["0.95"]) == {"QCD", "W+jets"}
