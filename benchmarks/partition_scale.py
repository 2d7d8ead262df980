"""How the orchestration copes with many file partitions: registration and backfill submission, one sensor tick,
the webserver answering the asset page's partition query, a browser loading that page, and the daemon evaluating
the backfill.

For each partition count N: N input files (empty: nothing here opens them) under a fresh data root and a fresh
SQLite ``$DAGSTER_HOME`` (the platform's own dagster.yaml, except ``max_concurrent_runs: 0``: the runs the daemon
creates stay queued, so nothing executes), then

* ``lhc backfill --all --no-wait`` in a subprocess: registers N partitions and submits one asset backfill of the
  ingestion assets over them (no daemon runs yet), wall seconds;
* one tick of ``new_delphes_files_sensor`` with every file registered, and one with 100 new files (wall seconds);
* ``dagster-webserver`` started on the workspace; the median of three GraphQL queries that the asset page of
  ``raw_events`` makes for its partitions (the partition counts and the materialized / failed key ranges). Then
  about 10 % of the partitions are reported materialized (runless materializations, 50 ranges) and about 4 %
  failed (failed in-process runs over 4 ranges, as a Spark run over a range fails): the same numbers of ranges
  at every N. The query is repeated, and headless Chromium (Debian's, driven by Playwright, as in tests/ui; no
  browser download) loads the Partitions tab of ``raw_events`` three times, each in a fresh context: seconds
  until the partition count, the materialized and failed counts and the first key of the list are shown, the
  page's JS heap and its main-thread script seconds (Chrome DevTools Protocol ``Performance.getMetrics``);
* ``dagster-daemon run`` on the instance, until its backfill daemon has evaluated the backfill twice (once with
  ``--quick``): the first evaluation requests the runs; the second is the steady state, repeated every 30 s
  while the runs work. ``lhc backfill`` plans one run per 1,000 contiguous partitions (N / 1,000 runs);
  creating them writes one materialization-planned event per asset and partition (3 N). Reported
  (``daemon_*``): seconds until the first run exists and until the first evaluation is over, each evaluation's
  seconds (from the daemon's log, 1 s resolution), runs created (their statuses, and the message of a run
  that failed), planned events written, the backfill's status, the daemon's CPU seconds and peak RSS
  (``VmHWM``) and its code server's peak RSS, the sensor's ticks during the first evaluation (its interval is
  5 s here) and the longest gap between them, the largest age of the backfill and sensor daemons'
  heartbeats, and ``progress`` samples (seconds, planned events so far, daemon RSS MB) every 30 s. A daemon
  that has not finished by ``--daemon-timeout`` is stopped and reported with ``daemon_finished: false``;
* the same backfill on a fresh instance, evaluated by a daemon with
  ``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS`` set: Dagster's switch for one planned event per asset
  of a run over a range instead of one per asset and partition (``daemon_subset_*``).

    python benchmarks/partition_scale.py [--quick] [--partitions 10000,50000] [--no-browser] [--no-daemon]

Prints one JSON object: per N the figures of each step, and ``growth`` (each figure at the largest N over the
smallest, next to the ratio of the partition counts: linear growth gives the same number). ``LHC_CHROMIUM``
names the browser (default ``/usr/bin/chromium``); without one the browser part is skipped with a note.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SAMPLES = ("qcd", "ttbar", "wjets")
CHROMIUM_ENV = "LHC_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1600, "height": 1000}
BACKFILL_TAG = "dagster/backfill"
# The sensor ticks this often in the daemon here (30 s by default), so that ticks during an evaluation show.
SENSOR_INTERVAL_S = 5
SENSOR_NAME = "new_delphes_files_sensor"
PROGRESS_EVERY_S = 30
# Dagster's switch (read where runs are created: the daemon) for one materialization-planned event per asset of a
# run over a partition range instead of one per asset and partition.
SUBSET_PLANNED_EVENTS_ENV = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"
STOP_GRACE_S = 60
# The figures compared between the smallest and the largest count.
GROWTH_KEYS = ("lhc_backfill_all_no_wait_seconds", "sensor_tick_seconds", "sensor_tick_100_new_seconds",
               "asset_page_query_seconds", "asset_page_query_with_statuses_seconds", "browser_load_seconds",
               "browser_js_heap_mb", "browser_script_seconds", "daemon_backfill_seconds", "daemon_planned_events",
               "daemon_peak_rss_mb", "daemon_subset_backfill_seconds", "daemon_subset_peak_rss_mb")
ASSET_PAGE_QUERY = """
query {
  assetNodeOrError(assetKey: {path: ["raw_events"]}) {
    ... on AssetNode {
      partitionStats { numMaterialized numPartitions numFailed numMaterializing }
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses { materializedPartitions failedPartitions materializingPartitions }
      }
    }
  }
}
"""
# A daemon log line: "<date> <time> <offset> - dagster.daemon.<Daemon> - <LEVEL> - <message>" (ANSI colours).
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}) - dagster\.daemon\.(\w+) - (\w+) - (.*)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Options:
    browser: str | None = None  # the chromium binary; None: no browser part
    browser_loads: int = 3
    daemon: bool = True
    daemon_subset: bool = True  # the daemon again, with SUBSET_PLANNED_EVENTS_ENV set
    daemon_iterations: int = 2
    daemon_timeout_s: float = 1200.0
    notes: list[str] = field(default_factory=list)


def _files(incoming: Path, n: int, tag: str = "seed7") -> None:
    for i in range(n):
        sample = SAMPLES[i % 3]
        (incoming / sample).mkdir(parents=True, exist_ok=True)
        (incoming / sample / f"{sample}_{tag}_{i:06d}.root").touch()


def instance_yaml() -> str:
    """The platform's dagster.yaml with no run allowed to start: the daemon's runs stay queued."""
    from lhc_assets.cli.home import MAX_CONCURRENT_RUNS, dagster_yaml

    text, line = dagster_yaml(), f"max_concurrent_runs: {MAX_CONCURRENT_RUNS}"
    if line not in text:
        raise RuntimeError(f"no '{line}' in the platform's dagster.yaml: update the benchmark")
    return text.replace(line, "max_concurrent_runs: 0")


def _graphql(port: int, query: str) -> tuple[float, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        body = json.loads(response.read())
    return time.perf_counter() - t0, body


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group it leads (the daemon's code servers are in it), SIGKILL after a grace."""
    for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 30)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait_s)
            # The leader is gone; members that outlive it (a code server) still get the signal.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return


def _webserver(env: dict, root: Path) -> tuple[subprocess.Popen, int]:
    from lhc_assets.spark.standalone import free_port

    port = free_port()
    log = open(root / "webserver.log", "w")  # noqa: SIM115 (closed with the process)
    command = [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the webserver exited:\n{(root / 'webserver.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                    return proc, port
            except OSError:
                time.sleep(0.5)
        raise TimeoutError("the webserver did not answer within 300 s")
    except BaseException:
        _stop(proc)
        raise


def _asset_page_queries(port: int, n: int, materialized: int | None = None, failed: int | None = None) -> list[float]:
    """Three timed GraphQL queries of the asset page; checks the counts the webserver sees."""
    timings = []
    for _ in range(3):
        seconds, body = _graphql(port, ASSET_PAGE_QUERY)
        stats = body["data"]["assetNodeOrError"]["partitionStats"]
        seen = (stats["numPartitions"], stats["numMaterialized"], stats["numFailed"])
        if stats["numPartitions"] < n or (materialized is not None and seen[1:] != (materialized, failed)):
            raise RuntimeError(f"the webserver sees (partitions, materialized, failed) = {seen}, expected "
                               f"({n}, {materialized}, {failed})")
        timings.append(seconds)
    return timings


def status_plan(ordered: list[str]) -> tuple[list[str], list[list[str]]]:
    """The partitions to report materialized (blocks of b = N/500 keys, one in ten: 10 %, 50 ranges) and the
    ranges to fail (blocks of 5 b, one in 26: 4 %, 4 ranges, never touching a materialized block): the same
    ranges at every N, so that only N changes between counts."""
    b = max(1, len(ordered) // 500)
    materialized: list[str] = []
    failed: dict[int, list[str]] = {}
    for i, key in enumerate(ordered):
        if (i // (5 * b)) % 26 == 3:
            failed.setdefault(i // (5 * b), []).append(key)
        elif (i // b) % 10 == 0:
            materialized.append(key)
    return materialized, list(failed.values())


def mark_statuses(instance, materialized: list[str], failed_ranges: list[list[str]]) -> None:
    """Runless materializations of raw_events for ``materialized``; one failed in-process run per range (a step
    that raises), so the UI counts the range failed as it does for a failed Spark run over it."""
    from dagster import AssetMaterialization, Definitions, asset, define_asset_job

    from lhc_assets.defs.partitions import delphes_files
    from lhc_assets.operations.failures import RANGE_END_TAG, RANGE_START_TAG

    for key in materialized:
        instance.report_runless_asset_event(AssetMaterialization(asset_key="raw_events", partition=key))

    @asset(name="raw_events", partitions_def=delphes_files)
    def failing_raw_events() -> None:
        raise RuntimeError("partition_scale: a failed run over a range of partitions")

    job = Definitions(assets=[failing_raw_events], jobs=[define_asset_job("partition_scale_failed")]
                      ).resolve_job_def("partition_scale_failed")
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    for keys in failed_ranges:
        result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=quiet,
                                        tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]})
        if result.success:
            raise RuntimeError("the failing run succeeded")


def chromium() -> str | None:
    """Debian's chromium (or $LHC_CHROMIUM), as tests/ui finds it; None when absent."""
    return shutil.which(os.environ.get(CHROMIUM_ENV, DEFAULT_CHROMIUM))


def _shows(label: str, count: int | None = None) -> re.Pattern:
    """The exact text of a label, its count in place of ``{}`` however the page writes the number: it writes
    both "10,000 Partitions Selected" and "Materialized (1000)"."""
    number = "" if count is None else rf"{count:,}".replace(",", ",?")
    return re.compile("^" + number.join(re.escape(part) for part in label.split("{}")) + "$")


def browser_loads(executable: str, port: int, n: int, first_key: str, materialized: int, failed: int,
                  loads: int, timeout_s: float = 600.0) -> dict:
    """Load the Partitions tab of raw_events ``loads`` times, each in a fresh browser context (no cache): seconds
    until the page shows the partition count, the materialized and failed counts and the first partition of the
    list; the JS heap then, and the seconds the main thread spent in scripts and in all tasks. A load that does
    not show them within ``timeout_s`` ends the loads with ``browser_error`` (and the page's text)."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright

    url = f"http://127.0.0.1:{port}/assets/raw_events?view=partitions"
    shown = [_shows("{} Partitions Selected", n), _shows("Materialized ({})", materialized),
             _shows("Failed ({})", failed), _shows(first_key)]
    seconds, heap, script, task, nodes = [], [], [], [], []
    out: dict = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            for _ in range(loads):
                context = browser.new_context(viewport=VIEWPORT, locale="en-US")
                try:
                    page = context.new_page()
                    # Should the community dialog show up, dismiss it as a person would.
                    page.add_locator_handler(page.get_by_role("button", name="Skip", exact=True), lambda b: b.click())
                    cdp = context.new_cdp_session(page)
                    cdp.send("Performance.enable")
                    t0 = time.perf_counter()
                    try:
                        page.goto(url, timeout=timeout_s * 1000)
                        for pattern in shown:
                            expect(page.get_by_text(pattern).first).to_be_visible(timeout=timeout_s * 1000)
                    except (AssertionError, PlaywrightError) as exc:
                        text = "(no text: the page does not answer)"
                        with contextlib.suppress(PlaywrightError):
                            text = " ".join(page.inner_text("body", timeout=10_000).split())[:600]
                        out["browser_error"] = f"{str(exc).splitlines()[0][:300]}; the page shows: {text}"
                        break
                    seconds.append(time.perf_counter() - t0)
                    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
                    heap.append(metrics["JSHeapUsedSize"] / 2**20)
                    script.append(metrics["ScriptDuration"])
                    task.append(metrics["TaskDuration"])
                    nodes.append(int(metrics["Nodes"]))
                finally:
                    context.close()
        finally:
            browser.close()
    if seconds:
        out.update(browser_load_seconds=round(statistics.median(seconds), 2),
                   browser_load_all_seconds=[round(s, 2) for s in seconds],
                   browser_js_heap_mb=round(max(heap), 1),
                   browser_script_seconds=round(statistics.median(script), 2),
                   browser_task_seconds=round(statistics.median(task), 2),
                   browser_dom_nodes=max(nodes))
    return out


class LogFollower:
    """The complete lines a growing log file gained since the last call (lines can be megabytes long)."""

    def __init__(self, path: Path):
        self.path, self.offset, self.partial = path, 0, b""

    def lines(self) -> list[str]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *complete, self.partial = (self.partial + data).split(b"\n")
        return [line.decode(errors="replace") for line in complete]


@dataclass
class DaemonLog:
    """What the daemon's log says about one backfill and the sensor, with the log's timestamps (1 s)."""

    backfill_id: str
    started: list[float] = field(default_factory=list)  # each evaluation of the backfill
    finished: list[float] = field(default_factory=list)
    sensor_ticks: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def read(self, lines: list[str]) -> None:
        for line in lines:
            m = LOG_LINE.match(ANSI.sub("", line))
            if not m:
                continue
            stamp, daemon, level, message = m.groups()
            t = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S %z").timestamp()
            if message.startswith(f"Evaluating asset backfill {self.backfill_id}"):
                self.started.append(t)
            elif message.startswith(f"Asset backfill {self.backfill_id} completed iteration"):
                self.finished.append(t)
            elif daemon == "SensorDaemon" and message == f"Checking for new runs for sensor: {SENSOR_NAME}":
                self.sensor_ticks.append(t)
            elif level in ("ERROR", "CRITICAL") and len(self.errors) < 5:
                self.errors.append(f"{daemon}: {message[:500]}")

    def iteration_seconds(self) -> list[float]:
        return [end - start for start, end in zip(self.started, self.finished, strict=False)]

    def ticks_during(self, start: float, end: float) -> tuple[int, float]:
        """Sensor ticks within [start, end], and the longest time between ticks over that span."""
        inside = [t for t in self.sensor_ticks if start <= t <= end]
        before = [t for t in self.sensor_ticks if t < start][-1:]
        after = [t for t in self.sensor_ticks if t > end][:1]
        points = before + inside + after
        if not points:
            return 0, end - start
        edges = [min(points[0], start), *points, max(points[-1], end)]
        return len(inside), max(b - a for a, b in itertools.pairwise(edges))


def _peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set size (VmHWM), None where /proc does not tell."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _rss_mb(pid: int) -> float | None:
    import psutil

    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).memory_info().rss / 2**20
    return None


def _cpu_seconds(pid: int) -> float | None:
    import psutil

    with contextlib.suppress(psutil.Error):
        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    return None


def _children(pid: int) -> list[int]:
    import psutil

    with contextlib.suppress(psutil.Error):
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    return []


def _planned_events(home: Path, run_id: str) -> int | None:
    """Materialization-planned events stored so far for a run: its SQLite event-log shard, read-only."""
    shard = home / "history" / "runs" / f"{run_id}.db"
    if not shard.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{shard}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute("SELECT COUNT(*) FROM event_logs WHERE dagster_event_type = "
                              "'ASSET_MATERIALIZATION_PLANNED'").fetchone()[0]
    except sqlite3.Error:  # locked by the writer, or not created yet
        return None


def daemon_backfill(env: dict, home: Path, backfill_id: str, iterations: int, timeout_s: float,
                    prefix: str = "daemon_") -> dict:
    """Run ``dagster-daemon`` until its backfill daemon has evaluated the backfill ``iterations`` times (or
    ``timeout_s`` passes); what it did meanwhile, under keys starting with ``prefix``."""
    from dagster import DagsterEventType, DagsterInstance, RunsFilter

    log_path = home.parent / f"{home.name}-daemon.log"
    follower, log = LogFollower(log_path), DaemonLog(backfill_id)
    env = {**env, "LHC_SENSOR_INTERVAL_S": str(SENSOR_INTERVAL_S)}
    peaks: dict[int, float] = {}
    progress: list[list[float | int | None]] = []
    run_created_s = first_done_s = None
    run_ids: list[str] = []
    heartbeat_age = {"BACKFILL": 0.0, "SENSOR": 0.0}
    with log_path.open("wb") as out:
        t0, wall0 = time.monotonic(), time.time()
        proc = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with DagsterInstance.from_config(str(home)) as instance:
            next_sample = 0.0
            while True:
                log.read(follower.lines())
                elapsed = time.monotonic() - t0
                if not run_ids:
                    run_ids = list(instance.get_run_ids(RunsFilter(tags={BACKFILL_TAG: backfill_id})))
                    run_created_s = elapsed if run_ids else None
                if log.finished and first_done_s is None:
                    first_done_s = elapsed
                if len(log.finished) >= iterations or elapsed > timeout_s:
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"dagster-daemon exited with {proc.returncode}:\n"
                                       f"{log_path.read_text(errors='replace')[-3000:]}")
                beats = instance.get_daemon_heartbeats()
                for kind in heartbeat_age:
                    if kind in beats:  # once it has started: before that the daemon is loading code
                        heartbeat_age[kind] = max(heartbeat_age[kind], time.time() - beats[kind].timestamp)
                for pid in [proc.pid, *_children(proc.pid)]:
                    peak = _peak_rss_mb(pid)
                    if peak is not None:
                        peaks[pid] = max(peaks.get(pid, 0.0), peak)
                if elapsed >= next_sample:
                    planned = _planned_events(home, run_ids[0]) if run_ids else 0
                    progress.append([round(elapsed), planned, round(_rss_mb(proc.pid) or 0)])
                    next_sample += PROGRESS_EVERY_S
                time.sleep(1)
            observed_s = time.monotonic() - t0
            cpu_s = _cpu_seconds(proc.pid)
            log.read(follower.lines())
            run_ids = list(instance.get_run_ids(RunsFilter(tags={BACKFILL_TAG: backfill_id})))
            backfill = instance.get_backfill(backfill_id)
            status = backfill.status.value if backfill else None
            run_statuses = sorted({r.status.value for r in instance.get_runs(RunsFilter(run_ids=run_ids))})
            # Why a run failed before it could start (run monitoring's start timeout, say).
            run_failures = sorted({" ".join((r.event_log_entry.dagster_event.message or "").split())[:200]
                                   for run_id in run_ids for r in instance.get_records_for_run(
                                       run_id, of_type=DagsterEventType.RUN_FAILURE).records})
    finally:
        _stop(proc)
    planned = sum(_planned_events(home, r) or 0 for r in run_ids)  # the daemon has stopped writing
    progress.append([round(observed_s), planned, None])
    finished = len(log.finished) >= iterations
    end_s = first_done_s if first_done_s is not None else observed_s
    # The sensor over the first evaluation (to the end of the observation if it never finished).
    window = (log.started[0], log.finished[0] if log.finished else wall0 + observed_s) if log.started else None
    ticks, gap = log.ticks_during(*window) if window else (0, observed_s)
    code_servers = [v for pid, v in peaks.items() if pid != proc.pid]
    figures = {
        "finished": finished,
        "ready_seconds": round(log.started[0] - wall0, 1) if log.started else None,
        "run_created_seconds": None if run_created_s is None else round(run_created_s, 1),
        "backfill_seconds": None if first_done_s is None else round(first_done_s, 1),
        "iteration_all_seconds": [round(x) for x in log.iteration_seconds()],
        "runs_created": len(run_ids),
        "run_statuses": run_statuses,
        "run_failures": run_failures,
        "planned_events": planned,
        # The rate of the run's creation: planned events over the time from the run's record to the evaluation's end.
        "planned_events_per_second": (round(planned / max(end_s - run_created_s, 1.0), 1)
                                      if run_created_s is not None else None),
        "backfill_status": status,
        # CPU next to wall time: whether the daemon computes or waits (on SQLite's commits) meanwhile.
        "cpu_seconds": None if cpu_s is None else round(cpu_s),
        "peak_rss_mb": round(peaks.get(proc.pid, 0.0)) or None,
        "code_server_peak_rss_mb": round(max(code_servers)) if code_servers else None,
        "sensor_ticks": len(log.sensor_ticks),
        "sensor_ticks_during_evaluation": ticks,
        "sensor_max_tick_gap_seconds": round(gap),
        "backfill_heartbeat_max_age_seconds": round(heartbeat_age["BACKFILL"]),
        "sensor_heartbeat_max_age_seconds": round(heartbeat_age["SENSOR"]),
        "log_mb": round(log_path.stat().st_size / 2**20, 1),
        "errors": log.errors,
        "progress": progress,
    }
    return {prefix + key: value for key, value in figures.items()}


def _new_home(home: Path) -> None:
    from lhc_assets.cli.home import create_storage

    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml())
    # The "Join the Dagster community" dialog shows once per instance until dismissed (tests/ui does the same).
    (home / ".nux").mkdir()
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    create_storage(home)


def _submit(env: dict, n: int) -> tuple[float, str]:
    """``lhc backfill --all --no-wait``: its wall seconds and the backfill's id."""
    t0 = time.perf_counter()
    out = subprocess.run([str(BIN / "lhc"), "backfill", "--all", "--no-wait"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=3600, check=False)
    seconds = time.perf_counter() - t0
    found = re.search(rf"^backfill (\S+): {n} partition\(s\)", out.stdout, re.MULTILINE)
    if out.returncode != 0 or not found:
        raise RuntimeError(f"lhc backfill failed:\n{out.stdout}\n{out.stderr[-3000:]}")
    return seconds, found[1]


def measure(n: int, options: Options) -> dict:
    from dagster import DagsterInstance, build_sensor_context

    from lhc_assets.defs.sensors.new_files import evaluate
    from resources.storage import StorageResource

    with tempfile.TemporaryDirectory(prefix="lhc-partitions-") as tmp:
        root = Path(tmp)
        home, incoming = root / "home", root / "data" / "incoming"
        _new_home(home)
        _files(incoming, n)
        # The subprocesses import this checkout's code, wherever the package is installed from.
        pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "DAGSTER_HOME": str(home), "LHC_DATA_ROOT": str(root / "data"), "PYTHONPATH": pythonpath}
        submit_s, backfill_id = _submit(env, n)

        storage = StorageResource(root=str(root / "data"))
        with DagsterInstance.from_config(str(home)) as instance:
            t0 = time.perf_counter()
            evaluate(build_sensor_context(instance=instance), storage)
            tick_s = time.perf_counter() - t0
            _files(incoming, 100, tag="seed8")
            t0 = time.perf_counter()
            evaluate(build_sensor_context(instance=instance), storage)
            tick_new_s = time.perf_counter() - t0
            ordered = list(instance.get_dynamic_partitions("delphes_files"))
        # Gone again, or the daemon's sensor would register them and request their runs.
        for path in incoming.glob("*/*_seed8_*.root"):
            path.unlink()

        result = {"partitions": n, "lhc_backfill_all_no_wait_seconds": round(submit_s, 2),
                  "sensor_tick_seconds": round(tick_s, 3), "sensor_tick_100_new_seconds": round(tick_new_s, 3)}
        proc, port = _webserver(env, root)
        try:
            timings = _asset_page_queries(port, n)
            result.update(asset_page_query_seconds=round(statistics.median(timings), 3),
                          asset_page_query_all_seconds=[round(t, 3) for t in timings])
            materialized, failed_ranges = status_plan(ordered)
            failed = sum(len(r) for r in failed_ranges)
            t0 = time.perf_counter()
            with DagsterInstance.from_config(str(home)) as instance:
                mark_statuses(instance, materialized, failed_ranges)
            result.update(materialized_partitions=len(materialized), failed_partitions=failed,
                          mark_statuses_seconds=round(time.perf_counter() - t0, 1))
            timings = _asset_page_queries(port, n, len(materialized), failed)
            result["asset_page_query_with_statuses_seconds"] = round(statistics.median(timings), 3)
            if options.browser:
                result.update(browser_loads(options.browser, port, n, ordered[0], len(materialized), failed,
                                            options.browser_loads))
        finally:
            _stop(proc)

        if options.daemon:
            result.update(daemon_backfill(env, home, backfill_id, options.daemon_iterations,
                                          options.daemon_timeout_s))
        if options.daemon_subset:
            # The same backfill on a fresh instance, with Dagster's switch for one planned event per asset and run.
            sub_home = root / "home-subset"
            _new_home(sub_home)
            sub_env = {**env, "DAGSTER_HOME": str(sub_home)}
            _, sub_id = _submit(sub_env, n)
            sub_env[SUBSET_PLANNED_EVENTS_ENV] = "1"
            result.update(daemon_backfill(sub_env, sub_home, sub_id, options.daemon_iterations,
                                          options.daemon_timeout_s, prefix="daemon_subset_"))
    return result


def growth(small: dict, large: dict) -> dict:
    """Each figure of ``GROWTH_KEYS`` at the largest count over the smallest, next to the partitions' ratio."""
    out = {"partitions": large["partitions"] / small["partitions"]}
    for key in GROWTH_KEYS:
        a, b = small.get(key), large.get(key)
        if isinstance(a, int | float) and isinstance(b, int | float):
            out[key] = round(b / max(a, 1e-9), 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1,000 and 5,000 partitions")
    p.add_argument("--partitions", help="partition counts, comma-separated (default 10000,50000)")
    p.add_argument("--no-browser", action="store_true", help="skip the browser loads of the asset page")
    p.add_argument("--browser-loads", type=int, default=3, help="loads of the asset page per count (default 3)")
    p.add_argument("--no-daemon", action="store_true", help="skip the daemon's evaluation of the backfill")
    p.add_argument("--no-daemon-subset", action="store_true",
                   help=f"skip the daemon's evaluation with {SUBSET_PLANNED_EVENTS_ENV}=1")
    p.add_argument("--daemon-iterations", type=int, default=None,
                   help="evaluations of the backfill to wait for (default 2: the first and the steady state; 1 "
                        "with --quick)")
    p.add_argument("--daemon-timeout", type=float, default=1200.0,
                   help="seconds after which the daemon is stopped, finished or not (default 1200)")
    args = p.parse_args()
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so the finally blocks stop the daemon, webserver and browser.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    counts = [int(x) for x in (args.partitions or ("1000,5000" if args.quick else "10000,50000")).split(",")]
    options = Options(daemon=not args.no_daemon, daemon_subset=not (args.no_daemon or args.no_daemon_subset),
                      daemon_iterations=args.daemon_iterations or (1 if args.quick else 2),
                      daemon_timeout_s=args.daemon_timeout, browser_loads=args.browser_loads)
    if not args.no_browser:
        options.browser = chromium()
        if options.browser is None:
            note = (f"browser part skipped: no Chromium at {os.environ.get(CHROMIUM_ENV, DEFAULT_CHROMIUM)!r} "
                    f"(${CHROMIUM_ENV}; `make browser` installs Debian's)")
            print(note, file=sys.stderr)
            options.notes.append(note)
    results = [measure(n, options) for n in counts]
    print(json.dumps({"benchmark": "partition_scale", "results": results,
                      "growth": growth(results[0], results[-1]), "notes": options.notes}))


if __name__ == "__main__":
    main()
