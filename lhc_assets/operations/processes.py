"""Stopping a process and everything it started, for tests and benchmarks that run ``dagster-daemon`` and friends.

The daemon starts a code server, which starts run workers, which start Spark JVMs, which start Python workers.
Stopping the daemon's process group with SIGTERM is the polite part; some of those processes live in other groups
or outlive their parent (a run worker finishing its run, a JVM whose driver died), so whatever is still alive
afterwards is killed: the processes seen in the tree while it ran, and those whose environment names the same
``DAGSTER_HOME`` (found even after they were re-parented).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable

import psutil

_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess)


def descendants(pid: int) -> list[psutil.Process]:
    """Every live descendant of ``pid`` (empty when it is gone)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except _GONE:
        return []


def alive(processes: Iterable[psutil.Process]) -> list[psutil.Process]:
    """The processes that still run (a zombie counts as ended; a reused pid is not the same process)."""
    out = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except _GONE:
            continue
    return out


def with_environment(name: str, value: str) -> list[psutil.Process]:
    """Processes of this machine whose environment has ``name=value``, except this process and its ancestors."""
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for p in psutil.process_iter():
        if p.pid in mine:
            continue
        with contextlib.suppress(psutil.Error):
            if p.environ().get(name) == value:
                found.append(p)
    return found


def stop_process_tree(proc: subprocess.Popen | None, seen: Iterable[psutil.Process] = (),
                      env: tuple[str, str] | None = None, timeout_s: float = 30) -> list[psutil.Process]:
    """Stop ``proc`` (started with ``start_new_session=True``) and everything it started.

    SIGTERM to its process group, SIGKILL to the group if it has not exited within ``timeout_s``; then every
    process of ``seen`` (a tree recorded while it ran) and, with ``env=(name, value)``, every process whose
    environment has it, still alive ``timeout_s`` later, is killed. Returns those last ones: what outlived an
    orderly stop (empty when everything ended by itself)."""
    ours = set(seen)
    if proc is not None:
        ours.update(descendants(proc.pid))
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout_s)
    if env is not None:
        ours.update(with_environment(*env))
    _, left = psutil.wait_procs(alive(ours), timeout=timeout_s)
    for p in left:
        with contextlib.suppress(*_GONE):
            p.kill()
    psutil.wait_procs(left, timeout=timeout_s)
    return left
