"""The training data of more feature data than the driver has memory: nothing is collected to the driver."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RUN = """
import sys
from dagster import DagsterInstance
from lhc_assets.cli.generate import main as generate
from lhc_assets.definitions import build_definitions
from resources.storage import StorageResource
root = sys.argv[1]
generate(["--out", root + "/incoming", "--events-per-file", sys.argv[2], "--files-per-sample", "1", "--seed", "8",
          "--jobs", "2", "--quiet"])
defs = build_definitions()
keys = sorted(StorageResource(root=root).input_files())
quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
with DagsterInstance.ephemeral() as instance:
    instance.add_dynamic_partitions("delphes_files", keys)
    ok = defs.resolve_job_def("ingestion_job").execute_in_process(
        instance=instance, run_config=quiet, raise_on_error=False,
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}).success
    ok = ok and defs.resolve_job_def("training_data_job").execute_in_process(
        instance=instance, run_config=quiet, raise_on_error=False).success
    from pyspark.sql import SparkSession
    print("DRIVER_MEMORY", SparkSession.getActiveSession().conf.get("spark.driver.memory"))
sys.exit(0 if ok else 1)
"""


def _size(path: Path) -> int:
    """Bytes of the table once decoded (Parquet's uncompressed row-group sizes)."""
    import pyarrow.parquet as pq

    total = 0
    for f in path.rglob("*.parquet"):
        meta = pq.ParquetFile(f).metadata
        total += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return total


def test_training_data_larger_than_the_driver_memory(tmp_path):
    env = {**os.environ, "LHC_DATA_ROOT": str(tmp_path), "LHC_SPARK_MASTER": "local[2]",
           "LHC_SPARK_DRIVER_MEMORY": "512m"}
    proc = subprocess.run([sys.executable, "-c", RUN, str(tmp_path), "12000"], env=env, capture_output=True,
                          text=True, timeout=800, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert "DRIVER_MEMORY 512m" in proc.stdout
    warehouse = tmp_path / "warehouse"
    # The stage read more particle data than the whole driver heap, and wrote the inclusive sets from it.
    assert _size(warehouse / "llf_features") > 600 * 2**20
    assert _size(warehouse / "train_set") > 150 * 2**20
