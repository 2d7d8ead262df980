"""A Spark standalone cluster on 127.0.0.1, started from the pip package: a master and E workers of C cores.

    with StandaloneCluster(workers=2, cores_per_worker=1, work_dir=tmp) as cluster:
        env = {"LHC_SPARK_MASTER": cluster.master_url, "LHC_SPARK_CONF": cluster.client_conf()}

Used by the scaling study (``benchmarks/scaling.py``) and the cluster tests. Every daemon runs in its own process
group, and leaving the block stops them all (SIGTERM, then SIGKILL after a grace period) whether the block
succeeded, raised, or the cluster never finished starting; ``stop()`` is idempotent. Workers register with the
master before the block is entered, so the first application gets every core.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import pyspark

SPARK_HOME = Path(pyspark.__file__).parent
REGISTERED = "Successfully registered with master"


class ClusterStartError(RuntimeError):
    """A daemon of the cluster exited or did not come up in time; the message ends with its log."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of the call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


class StandaloneCluster:
    """``workers`` Spark workers of ``cores_per_worker`` cores and ``memory_per_worker`` each, plus a master."""

    def __init__(self, workers: int, cores_per_worker: int, work_dir: str | Path, memory_per_worker: str = "3g",
                 start_timeout_s: float = 120.0) -> None:
        if workers < 1 or cores_per_worker < 1:
            raise ValueError(f"need at least one worker of one core, got {workers} x {cores_per_worker}")
        self.workers = workers
        self.cores_per_worker = cores_per_worker
        self.memory_per_worker = memory_per_worker
        self.work_dir = Path(work_dir)
        self.start_timeout_s = start_timeout_s
        self.processes: list[subprocess.Popen] = []
        self.port = 0
        self._env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
                     "SPARK_WORKER_DIR": str(self.work_dir / "work"), "PYSPARK_PYTHON": sys.executable}

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    @property
    def cores(self) -> int:
        return self.workers * self.cores_per_worker

    def client_conf(self, executor_memory: str | None = None) -> str:
        """``LHC_SPARK_CONF`` for an application on this cluster: one executor per worker using all its cores."""
        memory = executor_memory or self.memory_per_worker
        return ";".join((
            "spark.driver.host=127.0.0.1", "spark.driver.bindAddress=127.0.0.1",
            f"spark.executor.cores={self.cores_per_worker}", f"spark.executor.memory={memory}",
            f"spark.cores.max={self.cores}", f"spark.default.parallelism={self.cores}",
        ))

    def _launch(self, args: list[str], log: Path) -> subprocess.Popen:
        with open(log, "w") as fh:
            process = subprocess.Popen([str(SPARK_HOME / "bin" / "spark-class"), *args], stdout=fh,
                                       stderr=subprocess.STDOUT, env=self._env, start_new_session=True)
        self.processes.append(process)
        return process

    def _wait(self, process: subprocess.Popen, log: Path, ready) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while not ready():
            if process.poll() is not None:
                raise ClusterStartError(f"{log.name}: the daemon exited with code {process.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise ClusterStartError(f"{log.name}: not ready after {self.start_timeout_s:.0f} s:\n{_tail(log)}")
            time.sleep(0.3)

    def start(self) -> StandaloneCluster:
        """Start the master and the workers and wait until every worker registered; stops all on failure."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.port = free_port()
            log = self.work_dir / "master.log"
            master = self._launch(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port",
                                   str(self.port), "--webui-port", str(free_port())], log)

            def listening() -> bool:
                with socket.socket() as s:
                    return s.connect_ex(("127.0.0.1", self.port)) == 0

            self._wait(master, log, listening)
            logs = []
            for i in range(self.workers):
                log = self.work_dir / f"worker-{i}.log"
                process = self._launch([
                    "org.apache.spark.deploy.worker.Worker", self.master_url, "--host", "127.0.0.1",
                    "--cores", str(self.cores_per_worker), "--memory", self.memory_per_worker,
                    "--webui-port", str(free_port()), "--work-dir", str(self.work_dir / "work")], log)
                logs.append((process, log))
            for process, log in logs:
                self._wait(process, log, lambda log=log: REGISTERED in _tail(log, 1_000_000))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace_s: float = 30.0) -> None:
        """Stop every daemon this cluster started (workers first), each with its whole process group."""
        for process in reversed(self.processes):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for process in reversed(self.processes):
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def alive(self) -> list[int]:
        """Pids of daemons still running (empty after ``stop``)."""
        return [p.pid for p in self.processes if p.poll() is None]

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
