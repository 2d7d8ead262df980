"""The production deployment (deploy/): Dagster's run, event-log and schedule storage on PostgreSQL.

The end-to-end test starts a real PostgreSQL server from Debian's ``postgresql`` package (``make test`` and
``.ci/run`` install it) in a temporary directory, on 127.0.0.1 and a free port, as the unprivileged ``postgres``
user when the tests run as root; creates a role and a database for Dagster; makes the instance from the deploy
template with ``deploy/instance.py`` (what ``make ... LHC_DAGSTER_STORAGE=postgres`` runs); starts the real
``dagster-daemon``; drops one good and one corrupt Delphes file into ``incoming/``; and checks that the sensor's
runs went through Postgres, that the good file's partition is materialized and that ``lhc failures`` names the bad
one. The server and the daemon (with every process it started) are stopped afterwards, also on failure.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml
from dagster import AssetKey, DagsterInstance, DagsterRunStatus

from lhc_assets.cli.home import dagster_yaml
from lhc_assets.defs.partitions import INPUT_FILE_TAG
from lhc_assets.defs.sensors.new_files import INTERVAL_ENV, SETTLE_ENV
from lhc_assets.physics.partition_keys import partition_key
from tests.physics import badfiles

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TEMPLATE = REPO / "deploy" / "dagster.postgres.yaml"
INGESTION = ("raw_events", "hlf_features", "llf_features")
SERVER_USER = "postgres"  # the system user Debian's package creates
SENSOR = "new_delphes_files_sensor"
RUNS_DONE_S = 300


def _instance_module():
    spec = importlib.util.spec_from_file_location("deploy_instance", REPO / "deploy" / "instance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the template ------------------------------------------------------------------------------------------------


def test_the_postgres_template_is_the_sqlite_instance_with_postgres_storage():
    """Everything but the storage (and the coordinator, named explicitly) is what ``make run``'s SQLite instance has:
    telemetry off, 2 queued runs at most, run monitoring through LocalRunLauncher, no resumes, retries on request."""
    postgres = yaml.safe_load(TEMPLATE.read_text())
    storage = postgres.pop("storage")
    assert set(storage) == {"postgres"}
    server = storage["postgres"]["postgres_db"]
    assert server.pop("scheme") == "postgresql+psycopg2"  # the driver dagster-postgres depends on
    assert {field: value["env"] for field, value in server.items()} == {
        "hostname": "DAGSTER_PG_HOST", "port": "DAGSTER_PG_PORT", "db_name": "DAGSTER_PG_DB",
        "username": "DAGSTER_PG_USERNAME", "password": "DAGSTER_PG_PASSWORD"}
    assert postgres.pop("run_coordinator") == {"module": "dagster._core.run_coordinator",
                                               "class": "QueuedRunCoordinator"}
    assert postgres == yaml.safe_load(dagster_yaml())


def test_instance_script_refuses_a_sqlite_home_and_names_missing_settings(tmp_path, monkeypatch):
    module = _instance_module()
    sqlite_home = tmp_path / "sqlite"
    sqlite_home.mkdir()
    (sqlite_home / "dagster.yaml").write_text(dagster_yaml())
    with pytest.raises(SystemExit, match="does not configure Postgres storage"):
        module.ensure_postgres_home(sqlite_home)
    for name in module.SERVER_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAGSTER_PG_HOST", "127.0.0.1")
    with pytest.raises(SystemExit, match="set DAGSTER_PG_PORT, DAGSTER_PG_DB, DAGSTER_PG_USERNAME, DAGSTER_PG_PASS"):
        module.ensure_postgres_home(tmp_path / "new")
    assert not (tmp_path / "new" / "dagster.yaml").exists()


# --- a real server -------------------------------------------------------------------------------------------------


def _server_bin() -> Path:
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        pytest.fail("PostgreSQL's server binaries not found (/usr/lib/postgresql/<version>/bin/initdb): `make test` "
                    "installs Debian's postgresql package, or `sudo apt-get install -y postgresql`")
    return Path(max(found, key=lambda p: int(Path(p).parts[-3].split(".")[0]))).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    bin: Path
    root: Path  # private to the server's user: data directory, unix socket, log
    port: int
    db: str = "lhc_dagster"
    user: str = "lhc_dagster"
    password: str = ""

    @property
    def data(self) -> Path:
        return self.root / "data"

    def as_server_user(self) -> dict:
        """subprocess arguments that run a server command as ``postgres`` when we are root (initdb refuses root)."""
        if os.geteuid() != 0:
            return {}
        return {"user": SERVER_USER, "group": pwd.getpwnam(SERVER_USER).pw_gid, "extra_groups": []}

    def run(self, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root), "LC_ALL": "C"}
        out = subprocess.run([str(a) for a in args], cwd=self.root, env=env, capture_output=True, text=True,
                             timeout=timeout, check=False, **self.as_server_user())
        assert out.returncode == 0, f"{' '.join(map(str, args))}:\n{out.stdout}{out.stderr}\n{self.log_tail()}"
        return out

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run ``sql`` as the server's superuser over the private unix socket (trusted: only its user reaches it)."""
        return self.run(self.bin / "psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.root, "-p",
                        str(self.port), "-U", SERVER_USER, "-d", db, "-c", sql).stdout

    def log_tail(self) -> str:
        log = self.root / "server.log"
        return log.read_text()[-2000:] if log.exists() else ""

    def env(self) -> dict[str, str]:
        """What deploy/dagster.postgres.yaml reads."""
        return {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_DB": self.db,
                "DAGSTER_PG_USERNAME": self.user, "DAGSTER_PG_PASSWORD": self.password}

    def start(self) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_USER)  # the package's system user
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        os.chmod(self.root, 0o700)
        # Password (SCRAM) authentication over TCP, as in production; the socket lives in the private directory.
        self.run(self.bin / "initdb", "-D", self.data, "-U", SERVER_USER, "--encoding=UTF8", "--no-locale",
                 "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self.run(self.bin / "pg_ctl", "-D", self.data, "-l", self.root / "server.log", "-o", options, "-w",
                 "-t", "60", "start")
        self.password = secrets.token_hex(16)
        self.psql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
        self.psql(f"CREATE DATABASE {self.db} OWNER {self.user}")

    def stop(self) -> None:
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return
        try:
            self.run(self.bin / "pg_ctl", "-D", self.data, "stop", "-m", "fast", "-w", "-t", "60")
        except (AssertionError, subprocess.TimeoutExpired):
            if pid_file.exists():  # not stopped: kill the postmaster (its children exit with it)
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            raise


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(_server_bin(), Path(tempfile.mkdtemp(prefix="lhc-pg-")), _free_port())
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(server.root, ignore_errors=True)


# --- the daemon on it ------------------------------------------------------------------------------------------------


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _stop_daemon(proc: subprocess.Popen, seen: list[psutil.Process], home: Path) -> None:
    """SIGTERM to the daemon's process group, then SIGKILL to whatever it started that is still alive (code server,
    run processes, their Spark JVMs), found by the tree seen while it ran and by DAGSTER_HOME in their environment."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    ours = set(seen)
    for p in psutil.process_iter():
        try:
            if p.environ().get("DAGSTER_HOME") == str(home):
                ours.add(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    _, alive = psutil.wait_procs(list(ours), timeout=20)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=20)


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_sensor_runs_and_failures_through_the_daemon_on_postgres(tmp_path: Path, postgres: PostgresServer,
                                                                  generated_files: dict[str, Path], monkeypatch):
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    for name, value in postgres.env().items():  # this process reads the instance too
        monkeypatch.setenv(name, value)
    env = {
        **os.environ, **postgres.env(),
        "DAGSTER_HOME": str(home), "LHC_DATA_ROOT": str(data),
        "LHC_SPARK_MASTER": "local[2]", "LHC_SPARK_DRIVER_MEMORY": "1g", "PYSPARK_PYTHON": sys.executable,
        INTERVAL_ENV: "2", SETTLE_ENV: "1",
    }
    # The instance, as `make ui|daemon|webserver LHC_DAGSTER_STORAGE=postgres` creates it.
    made = subprocess.run([sys.executable, "deploy/instance.py"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert made.returncode == 0, made.stdout + made.stderr
    assert (home / "dagster.yaml").read_text() == TEMPLATE.read_text()

    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=REPO, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    seen: list[psutil.Process] = []

    def tail() -> str:
        return f"daemon log:\n{log_path.read_text()[-4000:]}\nserver log:\n{postgres.log_tail()}"

    try:
        # One good file, dropped as the generator does (hidden name, renamed into place), and one corrupt file.
        src = generated_files["ttbar"]
        incoming = data / "incoming"
        (incoming / "ttbar").mkdir(parents=True)
        (incoming / "qcd").mkdir(parents=True)
        partial = incoming / "ttbar" / f".{src.name}.partial"
        shutil.copyfile(src, partial)
        partial.rename(incoming / "ttbar" / src.name)
        bad_file = badfiles.truncated(incoming / "qcd" / "broken.root", generated_files["qcd"])
        good, bad = partition_key("ttbar", src.name), partition_key("qcd", bad_file.name)

        with DagsterInstance.from_config(str(home)) as instance:
            deadline = time.monotonic() + RUNS_DONE_S
            runs = []
            while time.monotonic() < deadline:
                assert daemon.poll() is None, f"the daemon exited\n{tail()}"
                seen.extend(p for p in _descendants(daemon.pid) if p not in seen)
                runs = [r for r in instance.get_runs() if r.tags.get("dagster/sensor_name") == SENSOR]
                if len(runs) >= 2 and all(r.is_finished for r in runs):
                    break
                time.sleep(2)
            by_partition = {r.tags.get("dagster/partition"): r for r in runs}
            assert len(runs) == 2 and set(by_partition) == {good, bad} and all(r.is_finished for r in runs), (
                f"runs: {[(r.tags.get('dagster/partition'), r.status.value) for r in runs]}\n{tail()}")

            # The sensor requested one run per file: the good one succeeded, the corrupt one failed.
            for key, status, name in ((good, DagsterRunStatus.SUCCESS, f"ttbar/{src.name}"),
                                      (bad, DagsterRunStatus.FAILURE, "qcd/broken.root")):
                run = by_partition[key]
                assert run.status == status, f"{key}: {run.status}\n{tail()}"
                assert run.tags.get(INPUT_FILE_TAG) == name
            for asset in INGESTION:
                materialized = instance.get_materialized_partitions(AssetKey(asset))
                assert good in materialized and bad not in materialized, asset

            # Everything went through Postgres: the storage classes, the rows, and no SQLite files in DAGSTER_HOME.
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
            all_runs = len(instance.get_runs())
        assert int(postgres.psql("SELECT count(*) FROM runs", db=postgres.db)) == all_runs >= 2
        assert not list(home.rglob("*.db")), list(home.rglob("*.db"))

        out = subprocess.run([str(BIN / "lhc"), "failures", "--json"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=180, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        assert [r["partition"] for r in rows] == [bad], out.stdout + out.stderr
        assert "broken.root" in rows[0]["problem"], rows[0]
    finally:
        _stop_daemon(daemon, seen, home)
