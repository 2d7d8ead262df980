"""The identity of the process that executes a run: host, pid and the process's start time (pids are reused).

Every run records it in its tags when its resources start (``StorageResource.setup_for_execution``), and runs
executed in-process by ``lhc`` carry it from their launch. With it, a run left STARTED by a process that died
(SIGKILL, out of memory, a restart) is recognised: by ``lhc`` (``operations.failures.fail_dead_runs``) and by
the daemon's run monitoring (``operations.dagster_internals.LocalRunLauncher``).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

import psutil

HOST_TAG, PID_TAG, PID_START_TAG = "lhc/host", "lhc/pid", "lhc/pid_start"


def _start_time(pid: int) -> int:
    return int(psutil.Process(pid).create_time())


def process_tags() -> dict[str, str]:
    """Run tags naming this process."""
    pid = psutil.Process().pid
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PID_START_TAG: str(_start_time(pid))}


def process_gone(tags: Mapping[str, str]) -> bool | None:
    """Whether the process the tags name has ended: None when it cannot be told here (no tags, another host)."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return None
    try:
        return str(_start_time(int(tags[PID_TAG]))) != tags.get(PID_START_TAG)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True
    except psutil.Error:
        return None
