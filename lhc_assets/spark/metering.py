"""What one stage of a run cost: wall and CPU seconds of the whole process tree, cores, peak memory.

A run is one process (the driver) with its Spark JVM and Spark's Python workers below it (and, for
multi-worker training, TensorFlow worker processes). ``StageMeter`` snapshots the CPU time of every process
in that tree when the stage starts and again when it reports, so the CPU seconds count the work of the
executors too (in local mode they are threads of the JVM and its Python worker processes); the same for the
bytes read from and written to storage (what reached the disk layer: page-cache hits are not reads). Peak memory is
each process's high-water mark (``VmHWM``), which for the driver and a long-lived JVM covers the run so far,
not only this stage.

No Dagster here: the stages put ``StageMeter.metadata`` into their materialization metadata, and
``pipeline_performance`` reads it back from the instance.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psutil

# Metadata keys every metered stage records (pipeline_performance reads them).
EVENTS = "stage_events"
WALL = "stage_wall_seconds"
CPU = "stage_cpu_seconds"
CORES = "stage_cores"
PER_CORE = "stage_events_per_s_per_core"
DRIVER_PEAK = "stage_driver_peak_rss_mb"
WORKERS_PEAK = "stage_workers_peak_rss_mb"
BYTES_READ = "stage_bytes_read"
BYTES_WRITTEN = "stage_bytes_written"
STARTED_AT = "stage_started_at"  # epoch seconds: with the materialization's time, the stage's window


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _tree() -> list[psutil.Process]:
    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _io(process: psutil.Process) -> tuple[int, int]:
    """Bytes the process made the storage layer read and write (Linux: not page-cache hits, not sockets)."""
    try:
        counters = process.io_counters()
    except (AttributeError, psutil.AccessDenied):  # not available on this platform
        return 0, 0
    return counters.read_bytes, counters.write_bytes


def _peak_rss_mb(process: psutil.Process) -> float:
    """The process's high-water RSS (Linux ``VmHWM``), else its current RSS."""
    try:
        with open(f"/proc/{process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return process.memory_info().rss / 2**20


class StageMeter:
    """Started when a stage begins; ``metadata(events)`` says what it cost until now.

    ``cores``: what the stage may use (Spark's default parallelism for Spark stages, the process's cores for
    TensorFlow) — the denominator of events/s per core.
    """

    def __init__(self, cores: int | None = None) -> None:
        self.cores = max(1, cores or available_cores())
        self._start = time.perf_counter()
        self.started_at = time.time()
        self._cpu: dict[int, float] = {}
        self._io: dict[int, tuple[int, int]] = {}
        for process in _tree():
            try:
                self._cpu[process.pid] = _cpu(process)
                self._io[process.pid] = _io(process)
            except psutil.Error:
                continue

    def cpu_seconds(self) -> float:
        """CPU seconds the process tree spent since the start (processes that exited meanwhile are lost)."""
        total = 0.0
        for process in _tree():
            try:
                total += max(0.0, _cpu(process) - self._cpu.get(process.pid, 0.0))
            except psutil.Error:
                continue
        return total

    def io_bytes(self) -> tuple[int, int]:
        """Bytes read from and written to storage by the process tree since the start."""
        read = written = 0
        for process in _tree():
            try:
                now = _io(process)
            except psutil.Error:
                continue
            before = self._io.get(process.pid, (0, 0))
            read += max(0, now[0] - before[0])
            written += max(0, now[1] - before[1])
        return read, written

    def metadata(self, events: int) -> dict[str, Any]:
        """The stage's cost for ``events`` events (or training samples) processed."""
        wall = max(time.perf_counter() - self._start, 1e-9)
        read, written = self.io_bytes()
        tree = _tree()
        workers = []
        for process in tree[1:]:
            try:
                workers.append(_peak_rss_mb(process))
            except psutil.Error:
                continue
        return {
            EVENTS: int(events),
            WALL: round(wall, 3),
            CPU: round(self.cpu_seconds(), 3),
            CORES: self.cores,
            PER_CORE: round(events / wall / self.cores, 3),
            DRIVER_PEAK: round(_peak_rss_mb(tree[0]), 1),
            WORKERS_PEAK: round(max(workers, default=0.0), 1),
            BYTES_READ: read,
            BYTES_WRITTEN: written,
            STARTED_AT: round(self.started_at, 3),
        }
