"""Soak test of the production deployment (issue 21): a backfill through the real daemon on PostgreSQL while runs and
the daemon are killed. Prints one JSON object.

On a private PostgreSQL server (``lhc_assets.operations.local_postgres``) and an instance made by ``deploy/instance.py``
(run monitoring polled every few seconds instead of 30, the only change to the template):

1. ``lhc-generate`` writes the files; a clean run of all of them (``lhc backfill --all --in-process`` on a SQLite
   instance of its own, no kills) gives the reference row counts per partition and table.
2. ``lhc backfill --all --partitions-per-run 1 --retries N --no-wait`` registers the backfill's files and submits
   one asset backfill, one run per file, each retried up to N times; then the real ``dagster-daemon`` starts, with the
   new-file sensor on. Further files (and corrupt ones, with ``--bad-files``) are dropped into ``incoming/`` while
   the soak runs, for the sensor.
3. About ``--kill-fraction`` of the backfill's runs are SIGKILLed, as the OOM killer would: the run worker alone
   (its Spark JVM and Python workers are left to die by themselves, and timed), at a random time after it started
   executing or, for a share of them, while it writes its Parquet files (its staging directory exists). Once, the
   daemon process itself is SIGKILLed (its code server and runs live on, as after an OOM kill of the daemon); while
   it is down one more run is killed and a file dropped; then it is started again.
4. When the backfill and every run are finished: a partition still not materialized is re-run by hand
   (``lhc backfill --partitions``, reported as a manual re-run; target: none), the daemon is stopped, and the end
   state is checked (``lhc_assets.operations.soak.check_soak``): each partition materialized once by a successful
   run with the clean run's rows, the sensor's requests, ``lhc failures``, staging directories (``lhc gc`` is run
   and reported if the runs left any), processes.

    python benchmarks/soak.py [--quick] [--partitions N] [--sensor-files N] [--bad-files N] [--events N]
                              [--kill-fraction F] [--retries N] [--seed S] [--timeout S]

``--quick`` (6 + 2 files and a corrupt one, two kills, a short daemon outage) is what tests/benchmarks/test_soak.py
runs. Exit status 0 when every check holds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: this tree's package, as for the subprocesses below

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance  # noqa: E402

from lhc_assets.defs.partitions import INPUT_FILE_TAG  # noqa: E402
from lhc_assets.operations import soak  # noqa: E402
from lhc_assets.operations.backfill import materialized_partitions  # noqa: E402
from lhc_assets.operations.dagster_internals import backfill_finished, missed_retries  # noqa: E402
from lhc_assets.operations.failures import own_process_tags  # noqa: E402
from lhc_assets.operations.local_postgres import LocalPostgres  # noqa: E402
from lhc_assets.operations.processes import alive, descendants, stop_process_tree, with_environment  # noqa: E402
from lhc_assets.physics.partition_keys import partition_key  # noqa: E402
from resources.io_manager import materialized_path  # noqa: E402
from resources.storage import StorageResource  # noqa: E402

BIN = Path(sys.executable).parent
TEMPLATE = REPO / "deploy" / "dagster.postgres.yaml"
INGESTION = ("raw_events", "hlf_features", "llf_features")
SENSOR = "new_delphes_files_sensor"
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
MAX_TMPDIR_CHARS = 40
ORPHAN_GRACE_S = 60.0  # a killed run's JVM or Python worker alive longer than this is a leak


@dataclass
class Options:
    partitions: int
    sensor_files: int
    bad_files: int
    events: int
    kill_fraction: float
    write_share: float
    retries: int
    seed: int
    monitoring_s: int  # run monitoring's poll interval (the template's: 30)
    start_timeout_s: int  # a run stuck STARTING fails after this (the template's: 300)
    daemon_kill_at: float  # share of the backfill done when the daemon is killed (then a random few seconds)
    daemon_down_s: float
    timeout_s: float
    keep_logs: Path | None = None


def parse_options(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4 backfill files, 1 for the sensor and a corrupt one")
    p.add_argument("--partitions", type=int, help="files of the backfill (default 100; --quick 4)")
    p.add_argument("--sensor-files", type=int, help="files dropped for the sensor during the soak (default 10; "
                   "--quick 1)")
    p.add_argument("--bad-files", type=int, help="corrupt files dropped for the sensor (default 0; --quick 1)")
    p.add_argument("--events", type=int, default=150, help="events per file (default 150)")
    p.add_argument("--kill-fraction", type=float, default=0.1, help="share of the backfill's runs killed")
    p.add_argument("--write-share", type=float, default=0.5, help="share of the kills made during the writes")
    p.add_argument("--retries", type=int, default=2, help="retries per run (the backfill's dagster/max_retries)")
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--timeout", type=float, help="seconds before giving up (default: from the size)")
    p.add_argument("--keep-logs", type=Path, metavar="DIR", help="copy the daemon's log and the runs' logs there")
    a = p.parse_args(argv)
    partitions = a.partitions if a.partitions is not None else (4 if a.quick else 100)
    sensor = a.sensor_files if a.sensor_files is not None else (1 if a.quick else 10)
    bad = a.bad_files if a.bad_files is not None else (1 if a.quick else 0)
    runs = partitions + sensor + bad
    return Options(partitions=partitions, sensor_files=sensor, bad_files=bad, events=a.events,
                   kill_fraction=a.kill_fraction, write_share=a.write_share, retries=a.retries, seed=a.seed,
                   monitoring_s=3, start_timeout_s=60, daemon_kill_at=0.25 if a.quick else 0.4,
                   daemon_down_s=5 if a.quick else 25,
                   timeout_s=a.timeout or 600 + 60 * runs, keep_logs=a.keep_logs)


# --- files ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputFile:
    sample: str
    path: Path  # in the stash; copied into incoming/ when its turn comes

    @property
    def key(self) -> str:
        return partition_key(self.sample, self.path.name)


def generate(opts: Options, stash: Path, env: dict) -> tuple[list[InputFile], list[InputFile], list[InputFile]]:
    """The backfill's files, the sensor's and the corrupt ones, samples interleaved."""
    total = opts.partitions + opts.sensor_files
    subprocess.run([str(BIN / "lhc-generate"), "--out", str(stash), "--events-per-file", str(opts.events),
                    "--files-per-sample", str(max(1, math.ceil(total / 3))), "--seed", str(opts.seed), "--jobs", "2"],
                   env=env, check=True, capture_output=True)
    files = sorted((InputFile(p.parent.name, p) for p in stash.glob("*/*.root")),
                   key=lambda f: (f.path.stem.rsplit("_", 1)[1], f.sample))
    for extra in files[total:]:
        extra.path.unlink()
    bad = []
    for i in range(opts.bad_files):  # a truncated file: not a readable ROOT file
        src = files[i % len(files)]
        path = stash / src.sample / f"broken_{i}.root"
        path.write_bytes(src.path.read_bytes()[:65536])
        bad.append(InputFile(src.sample, path))
    return files[:opts.partitions], files[opts.partitions:total], bad


def drop(f: InputFile, incoming: Path) -> None:
    """Into ``incoming/<sample>/`` as the generator delivers: a hidden name, renamed into place when whole."""
    target = incoming / f.sample
    target.mkdir(parents=True, exist_ok=True)
    partial = target / f".{f.path.name}.partial"
    shutil.copyfile(f.path, partial)
    partial.rename(target / f.path.name)


def table_rows(version: Path | None) -> int | None:
    return None if version is None else sum(pq.ParquetFile(p).metadata.num_rows for p in version.glob("*.parquet"))


def current_tables(data: Path, keys: list[str]) -> dict[tuple[str, str], tuple[int | None, str]]:
    """(asset, partition) -> (rows, version name) of the current version of each partition."""
    storage = StorageResource(root=str(data))
    out = {}
    for asset in INGESTION:
        for key in keys:
            version = materialized_path(storage, asset, key)
            out[(asset, key)] = (table_rows(version), version.name if version else "")
    return out


def reference_run(files: list[InputFile], base: Path, env: dict) -> tuple[dict[tuple[str, str], int], float]:
    """The clean run: every good file ingested once, in this machine's process, on an instance of its own."""
    data = base / "data"
    for f in files:
        (data / "incoming" / f.sample).mkdir(parents=True, exist_ok=True)
        os.link(f.path, data / "incoming" / f.sample / f.path.name)
    ref_env = {**env, "DAGSTER_HOME": str(base / "home"), "LHC_DATA_ROOT": str(data)}
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD"):
        ref_env.pop(name, None)
    t0 = time.monotonic()
    out = subprocess.run([str(BIN / "lhc"), "backfill", "--all", "--in-process"], cwd=REPO, env=ref_env,
                         capture_output=True, text=True, timeout=3600, check=False)
    seconds = time.monotonic() - t0
    if out.returncode != 0:
        raise RuntimeError(f"the clean reference run failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    current = current_tables(data, [f.key for f in files])
    return {k: rows for k, (rows, _) in current.items()}, seconds


# --- the deployment ---------------------------------------------------------------------------------------------------


@dataclass
class Kill:
    run_id: str
    partition: str
    kind: str  # soak.WRITE / soak.RUNNING / "daemon_down"
    during_write: bool
    at_s: float
    children: list[psutil.Process] = field(default_factory=list)
    children_exit_s: float | None = None  # when the last child of the killed worker ended


class Deployment:
    def __init__(self, base: Path, env: dict):
        self.base, self.env = base, env
        self.home, self.data = Path(env["DAGSTER_HOME"]), Path(env["LHC_DATA_ROOT"])
        self.daemon: subprocess.Popen | None = None
        self.daemons: list[subprocess.Popen] = []
        self.seen: set[psutil.Process] = set()
        self.log = base / "daemon.log"

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def start_daemon(self, instance) -> None:
        started = time.time()
        with self.log.open("a") as log:
            self.daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=REPO,
                                           env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.daemons.append(self.daemon)
        deadline = time.monotonic() + 300
        while True:  # a heartbeat of this daemon, not the previous one's
            beat = instance.get_daemon_heartbeats().get("BACKFILL")
            if beat is not None and beat.timestamp > started:
                return
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not start:\n{self.log_tail()}")
            self.track()
            time.sleep(0.5)

    def track(self) -> None:
        """Remember every process the daemons started (killed or orphaned ones are found later by this list)."""
        for d in self.daemons:
            self.seen.update(descendants(d.pid))

    def kill_daemon(self) -> None:
        self.track()
        os.kill(self.daemon.pid, signal.SIGKILL)
        self.daemon.wait()

    def stop(self) -> list[str]:
        """Stop the daemon and everything any daemon started (also the killed daemon's code server and runs);
        what had to be killed, named."""
        self.track()
        left = stop_process_tree(self.daemon, self.seen, env=("DAGSTER_HOME", str(self.home)))
        return sorted({_describe(p) for p in left})

    def log_tail(self) -> str:
        return self.log.read_text()[-4000:] if self.log.exists() else ""


def _ended(pid: int, wait_s: float = 10) -> bool:
    """Whether a process (not our child) has ended: gone, or a zombie its new parent has not reaped yet."""
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    deadline = time.monotonic() + wait_s
    while alive([proc]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not alive([proc])


def _describe(p: psutil.Process) -> str:
    try:
        return f"{p.pid} {' '.join(p.cmdline()[:4])[:100]}"
    except psutil.Error:
        return str(p.pid)


def make_instance(env: dict, home: Path, monitoring_s: int, start_timeout_s: int) -> bool:
    """The instance as ``make daemon LHC_DAGSTER_STORAGE=postgres`` makes it (``deploy/instance.py``), then run
    monitoring polled every ``monitoring_s`` s and a run stuck STARTING (the daemon died while launching it)
    failed after ``start_timeout_s``; returns whether the made dagster.yaml was the template."""
    made = subprocess.run([sys.executable, "deploy/instance.py"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    if made.returncode != 0:
        raise RuntimeError(f"deploy/instance.py failed:\n{made.stdout}{made.stderr}")
    config_path = home / "dagster.yaml"
    is_template = config_path.read_text() == TEMPLATE.read_text()
    config = yaml.safe_load(config_path.read_text())
    config["run_monitoring"]["poll_interval_seconds"] = monitoring_s
    config["run_monitoring"]["start_timeout_seconds"] = start_timeout_s
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return is_template


# --- the soak ---------------------------------------------------------------------------------------------------------


class Soak:
    """The main loop: follows the runs, kills some, drops the sensor's files, kills and restarts the daemon once."""

    def __init__(self, opts: Options, deployment: Deployment, instance, backfill_id: str, backfill_keys: list[str],
                 drops: list[InputFile]):
        self.opts, self.d, self.instance = opts, deployment, instance
        self.backfill_id, self.backfill_keys = backfill_id, set(backfill_keys)
        self.plan = deque(soak.plan_kills(len(backfill_keys), opts.kill_fraction, opts.write_share, opts.seed))
        self.planned = list(self.plan)
        self.drops = deque(drops)
        self.dropped: list[InputFile] = []
        self.ordinal: dict[str, int] = {}  # run id -> order in which it was seen executing
        self.seen_at: dict[str, float] = {}  # run id -> when it was first seen executing
        self.executed: list[float] = []  # how long finished runs executed (from the first sighting)
        self.ended: set[str] = set()
        self.own: dict[str, int] = {}  # run id -> its worker's pid, from its own tags
        self.armed: dict[str, tuple[soak.KillPoint, float, float | None]] = {}  # run -> (point, seen at, staging at)
        self.kills: list[Kill] = []
        self.missed = 0  # kill points whose run ended first (passed on to the next run)
        self.daemon_kill_due: float | None = None
        self.daemon_killed_at: float | None = None
        self.daemon_restarted_at: float | None = None
        self.down_kill_done = self.down_drop_done = False
        self.stalled: list[str] = []  # failed runs whose announced retry never came
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    # the runs of the backfill, as seen by this loop
    def runs(self):
        return self.instance.get_runs()

    def progress(self, runs) -> float:
        done = {r.tags.get("dagster/asset_partition_range_start") for r in runs
                if r.tags.get("dagster/backfill") == self.backfill_id and r.status.value == "SUCCESS"}
        return len(done) / max(1, len(self.backfill_keys))

    def run(self) -> None:
        deadline = self.t0 + self.opts.timeout_s
        next_runs = 0.0
        runs = []
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the soak did not finish within {self.opts.timeout_s:.0f} s")
            if self.now() >= next_runs:
                runs = self.runs()
                self.d.track()
                next_runs = self.now() + 1.0
                self._arm(runs)
                self._daemon(runs)
                self._drop(runs)
                if self._finished(runs):
                    return
            self._fire(runs)
            self._orphans()
            time.sleep(0.05 if any(p.kind == soak.WRITE for p, *_ in self.armed.values()) else 0.2)

    def _executing(self, runs):
        return [r for r in runs if r.status.value == "STARTED" and self._own_pid(r) is not None]

    def _own_pid(self, run) -> int | None:
        """The pid of the run's worker, once its own resources have tagged it (a retry starts with its parent's
        process tags, the killed one's)."""
        if run.run_id not in self.own:
            if "lhc/pid" not in own_process_tags(self.instance, run):
                return None
            self.own[run.run_id] = int(run.tags["lhc/pid"])
        return self.own[run.run_id]

    def expected_run_s(self) -> float:
        """How long a run executes, from the ones that finished (10 s until one has)."""
        return statistics.median(self.executed) if self.executed else 10.0

    def _arm(self, runs) -> None:
        for r in runs:
            if r.run_id in self.seen_at and r.status.value in TERMINAL and r.run_id not in self.ended:
                self.ended.add(r.run_id)
                if r.status.value == "SUCCESS":
                    self.executed.append(self.now() - self.seen_at[r.run_id])
        for r in self._executing(runs):
            if r.run_id in self.ordinal:
                continue
            self.ordinal[r.run_id] = len(self.ordinal)
            self.seen_at[r.run_id] = self.now()
            if (r.tags.get("dagster/backfill") == self.backfill_id and self.plan
                    and self.plan[0].ordinal <= self.ordinal[r.run_id] and soak.may_kill(r.tags, self.opts.retries)):
                self.armed[r.run_id] = (self.plan.popleft(), self.now(), None)
        for r in runs:  # an armed run that ended first passes its kill on
            if r.run_id in self.armed and r.status.value in TERMINAL:
                point, *_ = self.armed.pop(r.run_id)
                self.plan.appendleft(point)
                self.missed += 1

    def _fire(self, runs) -> None:
        by_id = {r.run_id: r for r in runs}
        for run_id, (point, seen_at, staging_at) in list(self.armed.items()):
            run = by_id.get(run_id)
            if run is None:
                continue
            pid = self._own_pid(run)
            if pid is None:
                continue
            if point.kind == soak.WRITE:
                if staging_at is None:
                    if self._staging_of(pid):
                        self.armed[run_id] = (point, seen_at, self.now())
                    continue
                due = staging_at + point.delay_s(self.expected_run_s())
            else:
                due = seen_at + point.delay_s(self.expected_run_s())
            if self.now() >= due and self._kill(run, point.kind):
                del self.armed[run_id]

    def _staging_of(self, pid: int) -> list[Path]:
        warehouse = self.d.data / "warehouse"
        return [p for p in warehouse.glob(f"*/{soak.STAGING_PREFIX}*") if soak.staging_owner_pid(p.name) == pid]

    def _kill(self, run, kind: str) -> bool:
        """SIGKILL the run's worker alone (the pid and start time its tags record); False if it is gone."""
        pid = int(run.tags["lhc/pid"])
        try:
            proc = psutil.Process(pid)
            if str(int(proc.create_time())) != run.tags.get("lhc/pid_start"):
                return False
            children = proc.children(recursive=True)
            writing = bool(self._staging_of(pid))
            proc.kill()
        except psutil.NoSuchProcess:
            return False
        self.kills.append(Kill(run.run_id, run.tags.get("dagster/asset_partition_range_start")
                               or run.tags.get("dagster/partition", ""), kind, writing, round(self.now(), 1),
                               children))
        return True

    def wait_for_orphans(self, grace_s: float) -> None:
        """Give the children of the last killed workers their time to end by themselves."""
        deadline = time.monotonic() + grace_s
        while any(k.children_exit_s is None for k in self.kills) and time.monotonic() < deadline:
            self._orphans()
            time.sleep(0.5)
        self._orphans()

    def _orphans(self) -> None:
        for k in self.kills:
            if k.children_exit_s is None and not alive(k.children):
                k.children_exit_s = round(self.now() - k.at_s, 1)

    def _daemon(self, runs) -> None:
        """Kill the daemon once, a share into the backfill; while it is down kill a run and drop a file."""
        if self.daemon_killed_at is None:
            if self.daemon_kill_due is None and self.progress(runs) >= self.opts.daemon_kill_at:
                # Not at once: a run has just ended, and the daemon is launching the next one.
                self.daemon_kill_due = self.now() + random.Random(self.opts.seed).uniform(2, 10)
            # ... while a run has just started, so that one is still executing during the outage.
            fresh = [r for r in self._executing(runs) if self.now() - self.seen_at.get(r.run_id, 0) < 8]
            if self.daemon_kill_due is not None and self.now() >= self.daemon_kill_due and fresh:
                self.d.kill_daemon()
                self.daemon_killed_at = self.now()
            return
        if self.daemon_restarted_at is not None:
            return
        down = self.now() - self.daemon_killed_at
        if not self.down_kill_done and down > 1:
            executing = [r for r in self._executing(runs) if soak.may_kill(r.tags, self.opts.retries)
                         and r.run_id not in self.armed]
            if executing:
                self._kill(executing[0], "daemon_down")
            self.down_kill_done = True
        if not self.down_drop_done and down > 3 and self.drops:
            self._drop_next()
            self.down_drop_done = True
        if down >= self.opts.daemon_down_s:
            self.d.start_daemon(self.instance)
            self.daemon_restarted_at = self.now()

    def _drop_next(self) -> None:
        f = self.drops.popleft()
        drop(f, self.d.data / "incoming")
        self.dropped.append(f)

    def _drop(self, runs) -> None:
        """The sensor's files, spread over the first 90 % of the backfill (the corrupt ones first)."""
        total = len(self.dropped) + len(self.drops)
        waiting_for_outage = self.daemon_killed_at is not None and self.daemon_restarted_at is None \
            and not self.down_drop_done  # the outage's own drop comes first
        if self.drops and not waiting_for_outage and self.progress(runs) >= 0.9 * len(self.dropped) / max(1, total):
            self._drop_next()

    def _finished(self, runs) -> bool:
        if self.drops or self.daemon_restarted_at is None or self.armed:
            return False
        if any(r.status.value not in TERMINAL for r in runs):
            return False
        backfill = self.instance.get_backfill(self.backfill_id)
        if backfill is None or not backfill_finished(backfill):
            # Waiting for a retry Dagster announced and never launched would be for ever: stop, and say so.
            missed = missed_retries(self.instance, older_than_s=120)
            self.stalled = sorted(r.run_id[:8] for r in missed)
            return bool(missed)
        requested = {r.tags.get("dagster/partition") for r in runs if r.tags.get("dagster/sensor_name") == SENSOR}
        return all(f.key in requested for f in self.dropped)


def materializations(instance) -> list[soak.Materialization]:
    out = []
    for asset in INGESTION:
        cursor = None
        while True:
            page = instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey(asset)), limit=1000,
                                                   cursor=cursor, ascending=True)
            for r in page.records:
                rows = r.asset_materialization.metadata.get("rows_written")
                out.append(soak.Materialization(asset, r.partition_key, r.run_id,
                                                None if rows is None else int(rows.value)))
            if not page.has_more:
                break
            cursor = page.cursor
    return out


def main(argv: list[str] | None = None) -> int:
    opts = parse_options(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop everything through the finally blocks
    started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="lhc-soak-"))
    result: dict = {"benchmark": "soak", "options": {k: v for k, v in asdict(opts).items() if k != "keep_logs"}}
    postmaster = None
    try:
        with LocalPostgres.started() as pg:
            postmaster = pg.postmaster_pid()
            result.update(run_soak(opts, base, pg))
    except Exception as exc:  # still one JSON object, saying what went wrong
        result["error"] = "".join(traceback.format_exception(exc))[-4000:]
    finally:
        result["postgres_stopped"] = postmaster is None or _ended(postmaster)
        if opts.keep_logs is not None:
            opts.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in ("daemon.log", "home/storage"):
                if (base / log).exists():
                    copy = shutil.copytree if (base / log).is_dir() else shutil.copy
                    copy(base / log, opts.keep_logs / Path(log).name)
        shutil.rmtree(base, ignore_errors=True)
        for scratch in {base.parent / f"{base.name}-tmp", Path("/tmp") / f"{base.name}-tmp"}:
            # A killed code server leaves its temporary directory behind.
            shutil.rmtree(scratch, ignore_errors=True)
    checks = result.get("checks", {})
    if not result["postgres_stopped"]:
        checks["no_process_left"] = {"ok": False, "problems": [f"the PostgreSQL server {postmaster}"]}
    result["ok"] = "error" not in result and bool(checks) and all(c["ok"] for c in checks.values())
    result["total_seconds"] = round(time.monotonic() - started, 1)
    result["cpu_count"] = os.cpu_count()
    result["python"] = platform.python_version()
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


def run_soak(opts: Options, base: Path, pg: LocalPostgres) -> dict:
    home, data, stash = base / "home", base / "data", base / "stash"
    os.environ.update(pg.env())  # this process reads the instance too
    scratch = base.parent / f"{base.name}-tmp"  # the processes' temporary files: removed with base (main)
    if len(str(scratch)) > MAX_TMPDIR_CHARS:  # multiprocessing's sockets there would exceed AF_UNIX's 108 bytes
        scratch = Path("/tmp") / scratch.name
    scratch.mkdir()
    env = {**os.environ, **pg.env(), "DAGSTER_HOME": str(home), "LHC_DATA_ROOT": str(data), "TMPDIR": str(scratch),
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "LHC_SPARK_MASTER": "local[2]", "LHC_SPARK_DRIVER_MEMORY": "1g", "PYSPARK_PYTHON": sys.executable,
           "LHC_SENSOR_INTERVAL_S": "5", "LHC_SENSOR_SETTLE_S": "1"}
    backfill_files, sensor_files, bad_files = generate(opts, stash, env)
    reference, reference_s = reference_run(backfill_files + sensor_files, base / "reference", env)

    is_template = make_instance(env, home, opts.monitoring_s, opts.start_timeout_s)
    for f in backfill_files:
        drop(f, data / "incoming")
    d = Deployment(base, env)
    out: dict = {}
    with DagsterInstance.from_config(str(home)) as instance:
        # Registered and submitted before the daemon starts, so the sensor never sees these files as new.
        t_submit = time.monotonic()
        submitted = d.cli("lhc", "backfill", "--all", "--partitions-per-run", "1", "--retries", str(opts.retries),
                          "--no-wait")
        found = re.search(r"^backfill (\w+):", submitted.stdout, re.M)
        if submitted.returncode != 0 or not found:
            raise RuntimeError(f"lhc backfill failed:\n{submitted.stdout}\n{submitted.stderr[-3000:]}")
        backfill_id = found.group(1)
        keys = [f.key for f in backfill_files]
        loop = Soak(opts, d, instance, backfill_id, keys, bad_files + sensor_files)
        try:
            d.start_daemon(instance)
            loop.run()
            soak_s = time.monotonic() - t_submit
            loop.wait_for_orphans(ORPHAN_GRACE_S)

            # Whatever is still not materialized needs a hand: counted, and re-run so the checks see the rest.
            good = keys + [f.key for f in sensor_files]
            manual = sorted(set(good) - materialized_partitions(instance))
            if manual:
                d.cli("lhc", "backfill", "--partitions", *manual, "--partitions-per-run", "1", "--retries",
                      str(opts.retries), timeout=3600)
        finally:
            killed_at_stop = d.stop()
        left_alive = sorted({_describe(p) for p in alive(d.seen)} |
                            {_describe(p) for p in with_environment("DAGSTER_HOME", str(home))})

        runs = instance.get_runs()
        backfill = instance.get_backfill(backfill_id)
        mats = materializations(instance)
        storages = {name: type(getattr(instance, name)).__name__
                    for name in ("run_storage", "event_log_storage", "schedule_storage")}
        instance_runs = len(runs)

    listed_out = d.cli("lhc", "failures", "--json", timeout=600)
    if listed_out.returncode != 0:
        raise RuntimeError(f"lhc failures failed:\n{listed_out.stderr[-3000:]}")
    listed = [json.loads(line) for line in listed_out.stdout.splitlines() if line.startswith("{")]
    staging_after_runs = [str(p.relative_to(data)) for p in soak.staging_dirs(data)]
    gc_output = ""
    if staging_after_runs:
        gc_output = d.cli("lhc", "gc").stdout.strip().splitlines()[-1:]
    staging_left = [str(p.relative_to(data)) for p in soak.staging_dirs(data)]

    sensor_requests = [(r.tags.get("dagster/partition", ""), r.tags.get(INPUT_FILE_TAG)) for r in runs
                       if r.tags.get("dagster/sensor_name") == SENSOR and "dagster/parent_run_id" not in r.tags]
    leaked = [f"{k.run_id[:8]}: {_describe(p)}" for k in loop.kills for p in k.children
              if k.children_exit_s is None or k.children_exit_s > ORPHAN_GRACE_S]
    checks = soak.check_soak(
        good=good, bad=[f.key for f in bad_files], assets=INGESTION, reference=reference, materializations=mats,
        run_status={r.run_id: r.status.value for r in runs}, current=current_tables(data, good),
        sensor_files={f.key: f"{f.sample}/{f.path.name}" for f in sensor_files + bad_files},
        sensor_requests=sensor_requests,
        failures_listed=[row["partition"] for row in listed], staging_left=staging_left,
        processes_left=left_alive + leaked)
    checks["backfill_completed"] = {"ok": backfill is not None and backfill.status.value == "COMPLETED_SUCCESS",
                                    **({} if backfill is None else {"status": backfill.status.value})}
    checks["no_manual_rerun"] = {"ok": not manual, **({"problems": manual} if manual else {})}

    backfill_runs = [r for r in runs if r.tags.get("dagster/backfill") == backfill_id]
    with DagsterInstance.from_config(str(home)) as instance:
        records = {rec.dagster_run.run_id: rec for rec in instance.get_run_records()}
    run_seconds = [rec.end_time - rec.start_time for rec in records.values()
                   if rec.start_time and rec.end_time and rec.dagster_run.status.value == "SUCCESS"]
    child_exits = [k.children_exit_s for k in loop.kills if k.children and k.children_exit_s is not None]
    out.update({
        "partitions": len(good) + len(bad_files), "backfill_partitions": len(keys), "sensor_files": len(sensor_files),
        "bad_files": len(bad_files), "events_per_file": opts.events,
        "runs_launched": len(runs), "backfill_runs": len(backfill_runs),
        "sensor_runs": sum(r.tags.get("dagster/sensor_name") == SENSOR for r in runs),
        "retries": sum("dagster/retry_number" in r.tags for r in runs),
        "runs_killed": len(loop.kills), "runs_killed_during_writes": sum(k.during_write for k in loop.kills),
        "kills_while_daemon_down": sum(k.kind == "daemon_down" for k in loop.kills),
        "kills": [{"partition": k.partition, "run": k.run_id[:8], "kind": k.kind, "during_write": k.during_write,
                   "at_s": k.at_s, "children": len(k.children), "children_exit_s": k.children_exit_s}
                  for k in loop.kills],
        "kill_points_passed_on": loop.missed,
        "killed_worker_children_max_exit_s": max(child_exits) if child_exits else None,
        "daemon_restarts": 1 if loop.daemon_restarted_at is not None else 0,
        "daemon_down_s": round(loop.daemon_restarted_at - loop.daemon_killed_at, 1)
        if loop.daemon_restarted_at is not None else None,
        "backfill_status": backfill.status.value if backfill else None,
        "wall_seconds": round(soak_s, 1), "reference_run_seconds": round(reference_s, 1),
        "run_seconds_median": round(statistics.median(run_seconds), 1) if run_seconds else None,
        "manual_reruns": manual, "retries_never_launched": loop.stalled,
        "staging_left_after_runs": staging_after_runs, "lhc_gc": gc_output,
        "killed_at_stop": killed_at_stop,
        "failures_listed": [{"partition": row["partition"], "problem": row["problem"][:600]} for row in listed],
        "deployment": {"instance_yaml_from_template": is_template, "monitoring_interval_s": opts.monitoring_s,
                       "start_timeout_s": opts.start_timeout_s,
                       "storage": storages, "instance_runs": instance_runs,
                       "postgres_run_rows": int(pg.psql("SELECT count(*) FROM runs", db=pg.db)),
                       "sqlite_files": [str(p.relative_to(home)) for p in home.rglob("*.db")]},
        "failed_runs": sum(r.status.value == "FAILURE" for r in runs),
        # Every run, oldest first: id, partition, status, what launched it, the run it retries.
        "runs": [" ".join(filter(None, (
            r.run_id[:8], r.tags.get("dagster/asset_partition_range_start") or r.tags.get("dagster/partition"),
            r.status.value, "sensor" if r.tags.get("dagster/sensor_name") else "backfill",
            f"retry {r.tags['dagster/retry_number']} of {r.tags['dagster/parent_run_id'][:8]}"
            if "dagster/retry_number" in r.tags else "",
            f"killed ({next(k.kind for k in loop.kills if k.run_id == r.run_id)})"
            if any(k.run_id == r.run_id for k in loop.kills) else ""))) for r in reversed(runs)],
        "checks": checks,
    })
    return out


if __name__ == "__main__":
    sys.exit(main())
