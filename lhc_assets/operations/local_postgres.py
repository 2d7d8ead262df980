"""A private PostgreSQL server from Debian's binaries, for tests, benchmarks and trying the production deployment
(``deploy/dagster.postgres.yaml``) on one machine.

The server lives in a temporary directory: its data, its unix socket and its log, on 127.0.0.1 and a free port. When
this process is root it runs as the unprivileged ``postgres`` user the package creates (``initdb`` refuses root).
Dagster connects over TCP with a password (SCRAM), as in production; the superuser only through the private socket.
Durability is traded for speed (``fsync=off``): the server is thrown away with its directory.

    with LocalPostgres.started() as server:       # a role and a database for Dagster, created
        env = {**os.environ, **server.env()}       # the DAGSTER_PG_* variables the deploy template reads
        ...

Needs Debian's ``postgresql`` package (``apt-get install postgresql``; ``make test`` and ``.ci/run`` install it);
its system cluster is not used.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SERVER_USER = "postgres"  # the system user Debian's package creates
BIN_GLOB = "/usr/lib/postgresql/*/bin/initdb"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server binaries are not installed."""


class PostgresCommandFailed(RuntimeError):
    """A server command (initdb, pg_ctl, psql) failed; the message holds its output and the server log's tail."""


def server_bin(pattern: str = BIN_GLOB) -> Path:
    """The newest installed server's bin directory (``/usr/lib/postgresql/<version>/bin``)."""
    found = glob.glob(pattern)
    if not found:
        raise PostgresUnavailable(
            "PostgreSQL's server binaries were not found (/usr/lib/postgresql/<version>/bin/initdb): install Debian's "
            "package with `sudo apt-get install -y postgresql` (`make test` does)")
    return Path(max(found, key=lambda p: int(Path(p).parts[-3].split(".")[0]))).parent


def server_parent() -> str:
    """Where the server's directory goes: the temporary directory, unless the server's user (``postgres``, when we
    are root) could not reach into it (a private ``TMPDIR``, such as pytest's); then ``/tmp``."""
    parent = tempfile.gettempdir()
    if os.geteuid() != 0:
        return parent
    path = Path(parent).resolve()
    if all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents)):
        return parent
    return "/tmp"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalPostgres:
    bin: Path
    root: Path  # private to the server's user: data directory, unix socket, log
    port: int
    db: str = "lhc_dagster"
    user: str = "lhc_dagster"
    password: str = ""

    @classmethod
    @contextmanager
    def started(cls, prefix: str = "lhc-pg-") -> Iterator[LocalPostgres]:
        """A running server with Dagster's role and database in a new temporary directory; stopped and removed at
        the end of the block, also on failure."""
        bin_dir = server_bin()
        server = cls(bin_dir, Path(tempfile.mkdtemp(prefix=prefix, dir=server_parent())), free_port())
        try:
            server.start()
            yield server
        finally:
            try:
                server.stop()
            finally:
                shutil.rmtree(server.root, ignore_errors=True)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _as_server_user(self) -> dict:
        """subprocess arguments that run a server command as ``postgres`` when we are root."""
        if os.geteuid() != 0:
            return {}
        return {"user": SERVER_USER, "group": pwd.getpwnam(SERVER_USER).pw_gid, "extra_groups": []}

    def run(self, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root), "LC_ALL": "C"}
        out = subprocess.run([str(a) for a in args], cwd=self.root, env=env, capture_output=True, text=True,
                             timeout=timeout, check=False, **self._as_server_user())
        if out.returncode != 0:
            raise PostgresCommandFailed(f"{' '.join(map(str, args))}:\n{out.stdout}{out.stderr}\n{self.log_tail()}")
        return out

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run ``sql`` as the server's superuser over the private unix socket (trusted: only its user reaches it)."""
        return self.run(self.bin / "psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.root, "-p",
                        str(self.port), "-U", SERVER_USER, "-d", db, "-c", sql).stdout

    def log_tail(self, chars: int = 2000) -> str:
        log = self.root / "server.log"
        try:
            return log.read_text()[-chars:]
        except OSError:
            return ""

    def env(self) -> dict[str, str]:
        """What deploy/dagster.postgres.yaml reads."""
        return {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_DB": self.db,
                "DAGSTER_PG_USERNAME": self.user, "DAGSTER_PG_PASSWORD": self.password}

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_USER)
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
        """A fast shutdown (clients disconnected); the postmaster is killed if that does not finish in time."""
        if not (self.data / "postmaster.pid").exists():
            return
        try:
            self.run(self.bin / "pg_ctl", "-D", self.data, "stop", "-m", "fast", "-w", "-t", "60")
        except (PostgresCommandFailed, subprocess.TimeoutExpired):
            pid = self.postmaster_pid()
            if pid is not None:  # its children exit with it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise
