"""Stopping a process tree (lhc_assets/operations/processes.py) with plain Python processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import psutil

from lhc_assets.operations.processes import alive, descendants, stop_process_tree, with_environment

SLEEPER = "import time; time.sleep(60)"
# Ignores SIGTERM, in a session of its own: outside the group that stop_process_tree signals.
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"


def _spawn(code: str, mark: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "LHC_TEST_MARK": mark},
                            start_new_session=True)


def _wait_for(predicate, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return value


def test_the_group_ends_on_sigterm_and_nothing_is_left():
    mark = uuid.uuid4().hex
    parent = _spawn(f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {SLEEPER!r}]); "
                    f"{SLEEPER}", mark)
    child = _wait_for(lambda: descendants(parent.pid))[0]
    assert stop_process_tree(parent, env=("LHC_TEST_MARK", mark), timeout_s=5) == []
    assert parent.poll() is not None and not alive([child])


def test_what_escaped_the_group_or_its_parent_is_found_and_killed():
    mark = uuid.uuid4().hex
    # The parent starts a stubborn child in another session and exits: the child is re-parented, found by its env.
    parent = _spawn(f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {STUBBORN!r}], "
                    "start_new_session=True)", mark)
    parent.wait(timeout=20)
    orphan = _wait_for(lambda: with_environment("LHC_TEST_MARK", mark))[0]
    seen = [_spawn(STUBBORN, uuid.uuid4().hex)]  # and one known only from the tree recorded while it ran
    seen_proc = psutil.Process(seen[0].pid)
    left = stop_process_tree(parent, seen=[seen_proc], env=("LHC_TEST_MARK", mark), timeout_s=1)
    assert {p.pid for p in left} == {orphan.pid, seen_proc.pid}
    seen[0].wait(timeout=10)
    assert not alive([orphan, seen_proc])


def test_the_caller_is_never_a_match():
    mark = uuid.uuid4().hex
    code = ("import os; from lhc_assets.operations.processes import with_environment; "
            "print(len(with_environment('LHC_TEST_MARK', os.environ['LHC_TEST_MARK'])))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "LHC_TEST_MARK": mark}, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "0"
