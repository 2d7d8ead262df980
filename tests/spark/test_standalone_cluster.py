"""Scale-out is configuration only: the same partition materialized on a Spark standalone cluster
(a master and one worker on 127.0.0.1, started from the pyspark package) equals the local-mode output."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pyspark
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SPARK_HOME = Path(pyspark.__file__).parent

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"port {port} not open after {timeout}s:\n{log.read_text()[-3000:]}")


def _spark_class(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen([str(SPARK_HOME / "bin" / "spark-class"), *args], stdout=fh, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)


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

    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_WORKER_DIR": str(tmp_path / "work"), "PYSPARK_PYTHON": sys.executable}
    port, ui, wui = _free_port(), _free_port(), _free_port()
    master = _spark_class(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                           "--webui-port", str(ui)], tmp_path / "master.log", env)
    worker = None
    try:
        _wait_port(port, master, tmp_path / "master.log")
        worker = _spark_class(["org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}", "--host",
                               "127.0.0.1", "--cores", "2", "--memory", "3g", "--webui-port", str(wui),
                               "--work-dir", str(tmp_path / "work")], tmp_path / "worker.log", env)
        deadline = time.monotonic() + 90
        while "Successfully registered with master" not in (tmp_path / "worker.log").read_text():
            assert worker.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.5)

        conf = "spark.driver.host=127.0.0.1;spark.driver.bindAddress=127.0.0.1;spark.executor.memory=2g"
        _materialize(roots["cluster"], key, f"spark://127.0.0.1:{port}", conf, tmp_path / "cluster-run.log")
        # The work really ran in the worker's executor, not in the driver.
        assert list((tmp_path / "work").glob("app-*/*/stderr"))
    finally:
        for proc in (worker, master):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
    assert master.poll() is not None and (worker is None or worker.poll() is not None)

    _materialize(roots["local"], key, "local[2]", "", tmp_path / "local-run.log")
    local, cluster = _tables(roots["local"], key), _tables(roots["cluster"], key)
    for asset in local:
        assert local[asset].num_rows > 0
        assert local[asset].drop(["file"]).equals(cluster[asset].drop(["file"])), asset
