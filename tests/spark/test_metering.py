"""A stage's cost: wall and CPU seconds of the whole process tree, including work done in child processes."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from lhc_assets.spark import metering as M


def test_cpu_of_a_child_process_counts_and_the_per_core_rate_uses_the_given_cores():
    before = time.time()
    meter = M.StageMeter(cores=2)
    # A child that burns about 0.6 s of CPU (like a Spark Python worker doing a task), then waits to be read.
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\n"
                              "while time.process_time() - t < 0.6: pass\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while meter.cpu_seconds() < 0.55 and time.monotonic() < deadline:
            time.sleep(0.05)
        figures = meter.metadata(events=1000)
    finally:
        child.kill()
        child.wait()
    assert figures[M.CPU] >= 0.55
    assert figures[M.CORES] == 2 and figures[M.EVENTS] == 1000
    assert figures[M.PER_CORE] == pytest.approx(1000 / figures[M.WALL] / 2, rel=2e-3)
    assert figures[M.DRIVER_PEAK] > 10 and figures[M.WORKERS_PEAK] > 1
    # When it started (epoch seconds), so that the stage's window can be matched with Spark's event log.
    assert before - 0.001 <= figures[M.STARTED_AT] <= before + 1  # rounded to the millisecond


def test_work_done_before_the_stage_is_not_counted():
    t = time.process_time()
    while time.process_time() - t < 0.3:
        pass
    meter = M.StageMeter()
    assert meter.cpu_seconds() < 0.2
    assert meter.cores == M.available_cores() >= 1


def test_bytes_a_child_process_writes_to_storage_are_counted(tmp_path):
    meter = M.StageMeter()
    target = tmp_path / "out.bin"
    child = subprocess.Popen([sys.executable, "-c", (
        "import os, sys, time\n"
        f"f = open({str(target)!r}, 'wb'); f.write(os.urandom(4 << 20)); f.flush(); os.fsync(f.fileno()); f.close()\n"
        "sys.stdout.write('done\\n'); sys.stdout.flush(); time.sleep(30)")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "done\n"
        figures = meter.metadata(events=1)
    finally:
        child.kill()
        child.wait()
    assert figures[M.BYTES_WRITTEN] >= 4 << 20
    assert figures[M.BYTES_READ] >= 0
