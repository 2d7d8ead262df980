"""Scale-out is configuration only: the same partition materialized on a Spark standalone cluster
(a master and one worker on 127.0.0.1, started from the pyspark package) equals the local-mode output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from lhc_assets.spark.standalone import ClusterStartError, StandaloneCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MATERIALIZE = """
import sys
from dagster import DagsterInstance
from lhc_assets.definitions import build_definitions
defs = build_definitions()
with DagsterInstance.ephemeral() as instance:
    instance.add_dynamic_partitions("delphes_files", [sys.argv[1]])
    result = defs.resolve_job_def("ingestion_job").execute_in_process(
        instance=instance, partition_key=sys.argv[1], raise_on_error=False)
    from pyspark.sql import SparkSession
    print("MASTER", SparkSession.getActiveSession().sparkContext.master)
    sys.exit(0 if result.success else 1)
"""


def _daemons(where: Path) -> list[int]:
    """Pids of live processes of the cluster working in ``where``: its daemons, executors and their Python
    workers all inherit the SPARK_WORKER_DIR it sets."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("SPARK_WORKER_DIR") == str(where / "work"):
                found.append(process.pid)
        except psutil.Error:
            continue
    return found


def test_cluster_stops_every_process_when_its_block_fails(tmp_path):
    with pytest.raises(RuntimeError, match="the stage failed"), \
            StandaloneCluster(workers=2, cores_per_worker=1, work_dir=tmp_path, memory_per_worker="1g") as cluster:
        assert len(cluster.alive()) == 3 and cluster.master_url.startswith("spark://127.0.0.1:")
        assert len(_daemons(tmp_path)) >= 3
        raise RuntimeError("the stage failed")
    assert not cluster.alive() and not _daemons(tmp_path)


def test_cluster_that_cannot_start_stops_what_it_started(tmp_path):
    # A worker with no memory to offer exits at once: the master must not be left behind.
    cluster = StandaloneCluster(workers=1, cores_per_worker=1, work_dir=tmp_path, memory_per_worker="0m")
    with pytest.raises(ClusterStartError, match=r"worker-0\.log"):
        cluster.start()
    assert len(cluster.processes) == 2 and not cluster.alive() and not _daemons(tmp_path)


def _materialize(root: Path, key: str, master: str, extra_conf: str, log: Path) -> None:
    env = {**os.environ, "LHC_DATA_ROOT": str(root), "LHC_SPARK_MASTER": master, "LHC_SPARK_CONF": extra_conf,
           "LHC_SPARK_DRIVER_MEMORY": "1g"}
    proc = subprocess.run([sys.executable, "-c", MATERIALIZE, key], env=env, capture_output=True, text=True,
                          timeout=400, check=False)
    log.write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert f"MASTER {master}" in proc.stdout


def _tables(root: Path, key: str) -> dict:
    from resources.io_manager import current_version

    out = {}
    for asset in ("raw_events", "hlf_features", "llf_features"):
        version = current_version(root / "warehouse" / asset / key)
        out[asset] = pq.read_table(version).sort_by("entry")
    return out


def test_cluster_output_equals_local_output(tmp_path, generated_files):
    key = "ttbar/ttbar_seed11_0000"
    roots = {}
    for mode in ("local", "cluster"):
        root = tmp_path / mode
        (root / "incoming" / "ttbar").mkdir(parents=True)
        shutil.copyfile(generated_files["ttbar"], root / "incoming" / "ttbar" / generated_files["ttbar"].name)
        roots[mode] = root

    with StandaloneCluster(workers=1, cores_per_worker=2, work_dir=tmp_path / "cluster") as cluster:
        _materialize(roots["cluster"], key, cluster.master_url, cluster.client_conf(executor_memory="2g"),
                     tmp_path / "cluster-run.log")
        # The work really ran in the worker's executor, not in the driver.
        assert list((tmp_path / "cluster" / "work").glob("app-*/*/stderr"))
    assert not cluster.alive() and not _daemons(tmp_path / "cluster")

    _materialize(roots["local"], key, "local[2]", "", tmp_path / "local-run.log")
    local, cluster = _tables(roots["local"], key), _tables(roots["cluster"], key)
    for asset in local:
        assert local[asset].num_rows > 0
        assert local[asset].drop(["file"]).equals(cluster[asset].drop(["file"])), asset
