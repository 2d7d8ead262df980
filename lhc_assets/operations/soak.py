"""The soak test's plan and verdict (``benchmarks/soak.py``), as plain functions: which runs to kill and when, and
what must hold at the end. Nothing here starts a process or reads an instance.

A run is killed the way the kernel's OOM killer does it: SIGKILL to the run worker alone (the process named by the
run's ``lhc/pid`` tag), at a point after it has started executing, either while it writes its Parquet files
(its staging directory, named after its pid, exists: ``resources.publisher``) or at a random time.
"""

from __future__ import annotations

import os
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from resources.publisher import OWNER_SEP, STAGING_PREFIX, VERSION_PREFIX

WRITE = "write"  # killed while its staging directory exists (the Parquet writes, then the publish)
RUNNING = "running"  # killed at a random time after it started executing
SUCCESS = "SUCCESS"
MAX_PROBLEMS = 10  # problems listed per check; the rest are counted


# A write kill comes this long at most after the staging directory appears (a small file's writes take a second);
# a running kill at this share at most of a run's expected time (so that it comes before the run ends).
MAX_WRITE_DELAY_S = 0.3
MAX_RUNNING_SHARE = 0.8


@dataclass(frozen=True)
class KillPoint:
    """Kill the ``ordinal``-th run to start executing (0-based, retries included): during its writes, ``at`` seconds
    after its staging directory appears (``WRITE``), or after ``at`` times its expected execution time (``RUNNING``)."""

    ordinal: int
    kind: str
    at: float

    def delay_s(self, expected_run_s: float) -> float:
        return self.at if self.kind == WRITE else self.at * expected_run_s


def plan_kills(runs: int, fraction: float, write_share: float, seed: int, minimum: int = 2) -> list[KillPoint]:
    """About ``fraction`` of ``runs`` runs to kill (at least ``minimum``, so a short soak has one of each kind),
    spread at random over the launch order; ``write_share`` of them during the writes. Deterministic by seed."""
    if not 0 <= fraction <= 1 or not 0 <= write_share <= 1:
        raise ValueError("fraction and write_share are shares between 0 and 1")
    if fraction == 0 or runs == 0:
        return []
    count = min(runs, max(minimum, round(fraction * runs)))
    rng = random.Random(seed)
    ordinals = sorted(rng.sample(range(runs), count))
    writes = max(1, round(write_share * count)) if write_share > 0 else 0
    kinds = [WRITE] * writes + [RUNNING] * (count - writes)
    rng.shuffle(kinds)
    return [KillPoint(o, k, round(rng.uniform(0, MAX_WRITE_DELAY_S if k == WRITE else MAX_RUNNING_SHARE), 3))
            for o, k in zip(ordinals, kinds, strict=True)]


def may_kill(tags: Mapping[str, str], retries: int) -> bool:
    """Whether a run may be a victim: it must be retried if killed (the soak tests recovery, not running out of
    retries), so the last retry of a run is spared and its kill goes to the next run."""
    return int(tags.get("dagster/retry_number", "0")) < retries


def staging_owner_pid(name: str) -> int | None:
    """The pid in a staging directory's name (``.staging-<host>~<pid>~<start>~<id>``), or None."""
    if not name.startswith(STAGING_PREFIX):
        return None
    parts = name[len(STAGING_PREFIX):].split(OWNER_SEP)
    return int(parts[1]) if len(parts) >= 4 and parts[1].isdigit() else None


def staging_dirs(root: Path) -> list[Path]:
    """Every staging directory under ``root`` (never descending into a version or a staging directory)."""
    found = []
    for directory, subdirs, _ in os.walk(root):
        found += [Path(directory) / d for d in subdirs if d.startswith(STAGING_PREFIX)]
        subdirs[:] = [d for d in subdirs if not d.startswith((STAGING_PREFIX, VERSION_PREFIX))]
    return sorted(found)


def version_run(version_name: str) -> str:
    """The run-id prefix in a version directory's name (``v-<time>-<run[:8]>-<id>``)."""
    parts = version_name.split("-")
    return parts[2] if len(parts) >= 4 and version_name.startswith(VERSION_PREFIX) else ""


@dataclass(frozen=True)
class Materialization:
    asset: str
    partition: str
    run_id: str
    rows: int | None  # rows_written in its metadata


@dataclass
class Check:
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    count: int = 0

    def fail(self, problem: str) -> None:
        self.ok = False
        self.count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    def as_dict(self) -> dict:
        out: dict = {"ok": self.ok}
        if self.count:
            out["problems"] = self.problems + ([f"... {self.count - len(self.problems)} more"]
                                               if self.count > len(self.problems) else [])
        return out


def check_soak(*, good: Iterable[str], bad: Iterable[str], assets: Sequence[str],
               reference: Mapping[tuple[str, str], int], materializations: Iterable[Materialization],
               run_status: Mapping[str, str], current: Mapping[tuple[str, str], tuple[int, str]],
               sensor_files: Mapping[str, str], sensor_requests: Iterable[tuple[str, str | None]],
               failures_listed: Iterable[str],
               staging_left: Iterable[str], processes_left: Iterable[str]) -> dict[str, dict]:
    """The soak's verdict, one entry per property (``ok`` and the first problems):

    * ``materialized_once``: every good partition of every asset has exactly one materialization by a successful
      run (none twice, none missing); a bad file's partition none.
    * ``killed_runs_published_whole``: what a run that did not succeed (killed) materialized before dying has the
      clean run's row count: a partition is published whole or not at all.
    * ``rows_equal_clean_run``: the current version of every good partition holds the clean run's rows, its
      successful materialization recorded them, and that version is the one the successful run published.
    * ``sensor_requested_once``: each file dropped for the sensor (``sensor_files``: partition -> file
      ``<sample>/<name>``) got exactly one sensor request, naming that file, and no other partition got one
      (``sensor_requests``: (partition, file tag) of each run the sensor requested; retries are not requests).
    * ``failures_listed``: ``lhc failures`` lists exactly the bad files' partitions (nothing outstanding otherwise).
    * ``no_staging_left``, ``no_process_left``: nothing of a write or of a process outlived the soak.
    """
    good, bad = set(good), set(bad)
    once, whole, rows, sensor, listed = Check(), Check(), Check(), Check(), Check()

    successful: dict[tuple[str, str], list[Materialization]] = defaultdict(list)
    for m in materializations:
        if run_status.get(m.run_id) == SUCCESS:
            successful[(m.asset, m.partition)].append(m)
        elif m.partition in good and m.rows != reference.get((m.asset, m.partition)):
            whole.fail(f"{m.asset} {m.partition}: run {m.run_id[:8]} ({run_status.get(m.run_id)}) recorded "
                       f"{m.rows} rows, the clean run {reference.get((m.asset, m.partition))}")
    for asset in assets:
        for key in sorted(good):
            found = successful.get((asset, key), [])
            if len(found) != 1:
                once.fail(f"{asset} {key}: {len(found)} materializations by successful runs "
                          f"({', '.join(m.run_id[:8] for m in found) or 'none'})")
            expected = reference.get((asset, key))
            on_disk, version = current.get((asset, key), (None, ""))
            if expected is None or on_disk != expected:
                rows.fail(f"{asset} {key}: {on_disk} rows in the current version, the clean run {expected}")
            elif found and (found[-1].rows != expected or found[-1].run_id[:8] != version_run(version)):
                rows.fail(f"{asset} {key}: the successful run {found[-1].run_id[:8]} recorded {found[-1].rows} rows "
                          f"and the current version is {version}")
        for key in sorted(bad):
            if successful.get((asset, key)):
                once.fail(f"{asset} {key}: the bad file's partition was materialized")

    requests = list(sensor_requests)
    requested = Counter(key for key, _ in requests)
    for key in sorted(set(sensor_files) | set(requested)):
        want = 1 if key in sensor_files else 0
        if requested.get(key, 0) != want:
            sensor.fail(f"{key}: {requested.get(key, 0)} sensor request(s), expected {want}")
    for key, tag in requests:
        if key in sensor_files and tag != sensor_files[key]:
            sensor.fail(f"{key}: requested for file {tag}, expected {sensor_files[key]}")

    listed_set = set(failures_listed)
    for key in sorted(listed_set ^ bad):
        listed.fail(f"{key}: {'listed by lhc failures' if key in listed_set else 'not listed by lhc failures'}")

    staging, processes = Check(), Check()
    for path in staging_left:
        staging.fail(path)
    for proc in processes_left:
        processes.fail(proc)

    return {"materialized_once": once.as_dict(), "killed_runs_published_whole": whole.as_dict(),
            "rows_equal_clean_run": rows.as_dict(), "sensor_requested_once": sensor.as_dict(),
            "failures_listed": listed.as_dict(), "no_staging_left": staging.as_dict(),
            "no_process_left": processes.as_dict()}
