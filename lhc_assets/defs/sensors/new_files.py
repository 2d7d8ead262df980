"""A sensor on ``<data root>/incoming/<sample>/*.root``: one dynamic partition and one ingestion run per new file.

A file is *ready* when it is visible (hidden names are in-progress files by the generator's rename-into-place
convention), has the same (size, mtime_ns) as on the previous tick, and is older than a short settle time. The
second condition covers writers that copy in place (scp, cp): a file still being written changes between ticks.

A tick only lists directories (``os.scandir``) and stats candidate files; it never opens one, so a bad file is
requested like any other and the ingestion run reports it as bad input for its partition. A file is requested
once: files whose partition key is already registered are skipped, which survives daemon restarts and a lost
cursor, and the run key (partition key + size + mtime_ns) lets Dagster drop a duplicate request for the same
file version. Each tick requests at most ``max_runs_per_tick`` runs; the rest follow on later ticks.

The JSON cursor holds only what is needed between ticks, bounded: the pending files (at most
``PENDING_FACTOR * max_runs_per_tick``, oldest first) and the unsupported names already reported.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from lhc_assets.defs.partitions import INPUT_FILE_TAG, delphes_files
from lhc_assets.physics.partition_keys import UnsupportedFileName, partition_key
from lhc_assets.physics.schema import SAMPLES
from resources.storage import StorageResource

MAX_RUNS_ENV = "LHC_SENSOR_MAX_RUNS"
INTERVAL_ENV = "LHC_SENSOR_INTERVAL_S"
SETTLE_ENV = "LHC_SENSOR_SETTLE_S"
MAX_RUNS_PER_TICK = 25
DEFAULT_INTERVAL_S = 30
# A file must also be this old: two ticks can fall within one write burst of a slow writer.
DEFAULT_SETTLE_S = 5.0
# Pending files tracked in the cursor, as a multiple of the per-tick bound: enough to keep every tick at the
# bound while a large drop drains, small enough that the cursor stays a few kB whatever is in incoming/.
PENDING_FACTOR = 4
# Unsupported names remembered individually (so each is reported once); beyond that only a count is kept.
MAX_REPORTED = 1000
# Names listed in one warning; the rest of a large batch is counted.
MAX_LISTED = 20
CURSOR_VERSION = 1


def max_runs_per_tick() -> int:
    """The per-tick bound, read on every tick so the daemon's environment can change it without a code change."""
    return max(1, int(os.environ.get(MAX_RUNS_ENV, MAX_RUNS_PER_TICK)))


def settle_seconds() -> float:
    return max(0.0, float(os.environ.get(SETTLE_ENV, DEFAULT_SETTLE_S)))


@dataclass(frozen=True)
class Candidate:
    """A visible, supported, not yet registered input file, as seen by one stat."""

    file_id: str  # '<sample>/<file name>': the cursor's key for it
    key: str  # its partition key
    size: int
    mtime_ns: int

    @property
    def stamp(self) -> list[int]:
        return [self.size, self.mtime_ns]

    @property
    def run_key(self) -> str:
        return f"{self.key}:{self.size}:{self.mtime_ns}"


@dataclass
class Scan:
    candidates: list[Candidate]
    unsupported: dict[str, str]  # file id -> reason


def scan_incoming(storage: StorageResource, registered: set[str]) -> Scan:
    """Every candidate and unsupported name under incoming/: directory listings and one stat per candidate.

    Files already registered as partitions are skipped before their stat, so a steady-state tick over a large
    directory costs one listing and a string check per file.
    """
    candidates: list[Candidate] = []
    unsupported: dict[str, str] = {}
    try:
        top = list(os.scandir(storage.incoming))
    except FileNotFoundError:
        return Scan(candidates, unsupported)
    for sample_dir in top:
        if sample_dir.name.startswith("."):
            continue
        if not sample_dir.is_dir():
            unsupported[sample_dir.name] = f"{sample_dir.name}: not in a sample directory"
            continue
        sample = sample_dir.name
        if sample not in SAMPLES:  # reported as a whole, without listing it
            unsupported[f"{sample}/"] = f"{sample}/: unknown sample directory (expected one of {sorted(SAMPLES)})"
            continue
        with os.scandir(sample_dir.path) as entries:
            for entry in entries:
                name = entry.name
                # Hidden names are files being written (rename-into-place) or tool state: never candidates.
                if name.startswith(".") or not entry.is_file():
                    continue
                file_id = f"{sample}/{name}"
                try:
                    key = partition_key(sample, name)
                except UnsupportedFileName as exc:
                    unsupported[file_id] = str(exc)
                    continue
                if key in registered:
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:  # removed or renamed since the listing
                    continue
                candidates.append(Candidate(file_id, key, st.st_size, st.st_mtime_ns))
    return Scan(candidates, unsupported)


def _load_cursor(raw: str | None) -> dict:
    try:
        cursor = json.loads(raw) if raw else {}
    except ValueError:
        cursor = {}
    if not isinstance(cursor, dict) or cursor.get("v") != CURSOR_VERSION:
        # A lost or foreign cursor only delays new files by one tick and may repeat a warning: the registered
        # partitions, not the cursor, are what prevents a second request.
        cursor = {}
    return {
        "pending": {k: v for k, v in cursor.get("pending", {}).items() if isinstance(v, list) and len(v) == 2},
        "reported": set(cursor.get("reported", [])),
        "unreported": int(cursor.get("unreported", 0)),
    }


def evaluate(context: SensorEvaluationContext, storage: StorageResource, now: float | None = None) -> SensorResult:
    """One tick (a plain function, so tests can pass a clock)."""
    now = time.time() if now is None else now
    limit = max_runs_per_tick()
    settle = settle_seconds()
    state = _load_cursor(context.cursor)
    registered = set(context.instance.get_dynamic_partitions(delphes_files.name))
    scan = scan_incoming(storage, registered)

    # Report each unsupported name once; forget names whose files are gone, so the cursor stays bounded.
    reported = state["reported"] & scan.unsupported.keys()
    fresh = sorted(k for k in scan.unsupported if k not in reported)
    room = max(0, MAX_REPORTED - len(reported))
    to_report, overflow = fresh[:room], len(fresh) - min(len(fresh), room)
    reported |= set(to_report)
    if to_report:
        listed = "\n".join(f"  {scan.unsupported[k]}" for k in to_report[:MAX_LISTED])
        more = f"\n  ... and {len(to_report) - MAX_LISTED} more" if len(to_report) > MAX_LISTED else ""
        context.log.warning(
            f"Skipping {len(to_report)} unsupported name(s) under {storage.incoming} (expected "
            f"<sample>/<name>.root with sample one of the known samples):\n{listed}{more}"
        )
    if overflow and overflow != state["unreported"]:
        context.log.warning(f"{overflow} further unsupported name(s) under {storage.incoming} (not listed)")

    # Ready: unchanged since the previous tick and past the settle time. Oldest first, at most `limit`.
    pending = state["pending"]
    ready = sorted(
        (c for c in scan.candidates if pending.get(c.file_id) == c.stamp and now - c.mtime_ns / 1e9 >= settle),
        key=lambda c: (c.mtime_ns, c.file_id),
    )
    requested: list[Candidate] = []
    keys: set[str] = set()
    for c in ready:
        if len(requested) >= limit:
            break
        if c.key not in keys:  # two names mapping to one key would be one partition: request it once
            requested.append(c)
            keys.add(c.key)

    # Track the rest for the next tick: files already tracked first (so a large drop drains in order), then the
    # oldest new ones, up to the bound; untracked files are picked up on a later tick.
    rest = [c for c in scan.candidates if c.key not in keys]
    rest.sort(key=lambda c: (c.file_id not in pending, c.mtime_ns, c.file_id))
    new_pending = {c.file_id: c.stamp for c in rest[: PENDING_FACTOR * limit]}

    cursor = json.dumps(
        {"v": CURSOR_VERSION, "pending": new_pending, "reported": sorted(reported), "unreported": overflow},
        separators=(",", ":"),
    )
    if not requested:
        waiting = len(rest)
        reason = (f"{waiting} new file(s) waiting to be seen unchanged on two ticks" if waiting
                  else f"no new files under {storage.incoming}")
        return SensorResult(skip_reason=reason, cursor=cursor)
    new_keys = [c.key for c in requested]
    context.log.info(f"Requesting ingestion of {len(new_keys)} new file(s); {len(rest)} more waiting")
    return SensorResult(
        run_requests=[RunRequest(partition_key=c.key, run_key=c.run_key, tags={INPUT_FILE_TAG: c.file_id})
                      for c in requested],
        dynamic_partitions_requests=[delphes_files.build_add_request(new_keys)],
        cursor=cursor,
    )


@sensor(
    name="new_delphes_files_sensor",
    job_name="ingestion_job",
    minimum_interval_seconds=int(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S)),
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Watches <data root>/incoming/<sample>/*.root. Each new file becomes a partition of delphes_files and one "
        "ingestion_job run (raw_events, hlf_features, llf_features) once its size and mtime are unchanged across "
        f"two ticks and it is older than {DEFAULT_SETTLE_S:g} s (${SETTLE_ENV}); hidden names (rename-into-place "
        f"temporaries) are ignored. At most {MAX_RUNS_PER_TICK} runs per tick (${MAX_RUNS_ENV}), the rest on later "
        "ticks. Files already registered as partitions are never requested again; unsupported names are skipped "
        "with one warning each. Never opens a file."
    ),
)
def new_delphes_files_sensor(context: SensorEvaluationContext, storage: StorageResource) -> SensorResult:
    return evaluate(context, storage)
