"""Backfills of the ingestion assets over many input files, for ``lhc backfill`` and ``make run``.

Two ways to run one:

* **Through the instance** (``submit`` then ``watch``): an asset backfill of raw_events, hlf_features and
  llf_features is added to the Dagster instance and executed by the daemon (``make ui``, ``dagster dev`` or
  ``dagster-daemon run``), exactly like a backfill launched from the UI. Without ``partitions_per_run`` the
  assets' ``BackfillPolicy.single_run()`` makes one run per contiguous range of partitions: one Spark job over
  many files (``lhc backfill`` always passes it, 1,000 by default: a run over more than about 10,000 files takes
  the daemon longer to create than run monitoring lets a run take to start). ``watch`` follows it from the
  instance and reports every partition as it is materialized or fails.
* **In this process** (``materialize_in_process``): the same runs executed here, one per contiguous range of up
  to 1,000 partitions, for when no daemon is running.

Either way ``partitions_per_run`` bounds a run to that many partitions (1: one run per file): a failed or killed run
then costs, and its retry repeats, only its own files, at the price of a process and a Spark start per run. Runs the
daemon executes are retried when they fail if the backfill asks for it (``retries``: Dagster's
``dagster/max_retries`` tag, which its runs inherit); an asset backfill waits for the retries of its failed runs
before it finishes, also across a restart of the daemon. (``dagster job backfill`` does not: it marks its backfill
finished as soon as it has submitted the runs, and Dagster never retries a run of a finished backfill.)

Either way a bad file fails only its own partition: the ingestion step publishes the good partitions of a
run and names the bad ones (``failures.FAILED_PARTITIONS_METADATA``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, DagsterRunStatus, Definitions, RunsFilter

from lhc_assets.defs.ingestion.tables import INGESTION_ASSETS
from lhc_assets.operations import failures
from lhc_assets.operations.dagster_internals import (
    AUTO_RETRY_RUN_ID_TAG,
    MAX_RETRIES_TAG,
    MISSED_RETRY_S,
    WILL_RETRY_TAG,
    add_asset_backfill,
    backfill_finished,
    hand_back_missed_retries,
    missed_retries,
)
from resources.process import process_tags
from resources.storage import StorageResource

PARTITIONS_DEF_NAME = failures.PARTITIONS_DEF_NAME  # re-exported for the CLI
BACKFILL_TAG = "dagster/backfill"
# A daemon whose last heartbeat is older than this is taken as not running.
HEARTBEAT_MAX_AGE_S = 120.0
TERMINAL_RUN_STATUSES = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}

MATERIALIZED = "materialized"
FAILED = "failed"
# What follows a failed run of a backfill: the daemon retries it, it is final, or not decided yet (Dagster tags a
# failed run with WILL_RETRY_TAG just after marking it failed).
RETRYING, FINAL, UNDECIDED = "retrying", "final", "undecided"
# A failed run still without the tag after this long is taken as final.
RETRY_DECISION_S = 30.0
# In-process runs: Dagster's events (DEBUG, stack traces) go to the instance (the UI shows them), not the console.
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def register_input_files(instance: DagsterInstance, storage: StorageResource) -> list[str]:
    """Add a partition for every input file under ``incoming/`` that has none yet; returns the new keys."""
    known = set(instance.get_dynamic_partitions(PARTITIONS_DEF_NAME))
    new = sorted(k for k in storage.input_files() if k not in known)
    if new:
        instance.add_dynamic_partitions(PARTITIONS_DEF_NAME, new)
    return new


def materialized_partitions(instance: DagsterInstance, assets: Sequence[str] = INGESTION_ASSETS) -> set[str]:
    """Partitions materialized for every one of ``assets``."""
    return set.intersection(*(set(instance.get_materialized_partitions(AssetKey(a))) for a in assets))


def contiguous_ranges(ordered: Sequence[str], wanted: set[str], max_size: int | None = None
                      ) -> list[tuple[str, str]]:
    """Partition ranges (first, last) covering exactly ``wanted`` in the instance's key order, each of at most
    ``max_size`` partitions (None: unbounded)."""
    ranges, start, prev, size = [], None, None, 0
    for key in ordered:
        if key in wanted:
            if start is not None and max_size is not None and size == max_size:
                ranges.append((start, prev))
                start = None
            if start is None:
                start, size = key, 0
            prev, size = key, size + 1
        elif start is not None:
            ranges.append((start, prev))
            start = None
    if start is not None:
        ranges.append((start, prev))
    return ranges


def plan_runs(ordered: Sequence[str], wanted: set[str], partitions_per_run: int | None = None) -> list[tuple[str, str]]:
    """The runs (first, last) of a backfill of ``wanted``: one per contiguous range in the instance's key order,
    each cut into runs of at most ``partitions_per_run`` partitions when it is given."""
    if partitions_per_run is not None and partitions_per_run < 1:
        raise ValueError(f"partitions per run must be at least 1, got {partitions_per_run}")
    return contiguous_ranges(ordered, wanted, partitions_per_run)


def retry_state(tags: Mapping[str, str], retries_enabled: bool, failed_for_s: float) -> str:
    """What follows a failed run, from its tags: RETRYING (the daemon retries it), FINAL, or UNDECIDED while
    Dagster has not tagged it yet (it does so just after marking the run failed; ``failed_for_s`` bounds the wait)."""
    if not retries_enabled:
        return FINAL
    decided = tags.get(WILL_RETRY_TAG)
    if decided == "true":
        return RETRYING
    if decided is None and failed_for_s < RETRY_DECISION_S:
        return UNDECIDED
    return FINAL


def daemon_heartbeat_age(instance: DagsterInstance, daemon_type: str = "BACKFILL") -> float | None:
    """Seconds since the daemon that executes backfills last reported, or None if it never has."""
    beat = instance.get_daemon_heartbeats().get(daemon_type)
    return None if beat is None else max(0.0, time.time() - beat.timestamp)


def submit(instance: DagsterInstance, keys: Sequence[str], assets: Sequence[str] = INGESTION_ASSETS,
           title: str | None = None, partitions_per_run: int | None = None, retries: int | None = None) -> str:
    """Add an asset backfill of ``assets`` over ``keys`` to the instance (the daemon executes it); its id.

    ``partitions_per_run`` bounds the runs (default: the assets' policy, one run per contiguous range);
    ``retries``: how many times the daemon retries a failed run (Dagster's ``dagster/max_retries``)."""
    from lhc_assets.definitions import defs

    if retries is not None and retries < 0:
        raise ValueError(f"retries must not be negative, got {retries}")
    tags = {"lhc/launched_by": "lhc backfill"}
    if retries is not None:
        tags[MAX_RETRIES_TAG] = str(retries)
    runs = None
    if partitions_per_run is not None:
        runs = plan_runs(instance.get_dynamic_partitions(PARTITIONS_DEF_NAME), set(keys), partitions_per_run)
    return add_asset_backfill(instance, defs.resolve_asset_graph(), keys, assets,
                              title=title or f"lhc backfill: {len(keys)} partition(s)", tags=tags, runs=runs)


@dataclass
class Progress:
    """What is known of every partition of a backfill: materialized, failed (with the problem) or pending."""

    keys: list[str]
    assets: tuple[str, ...]
    since: float
    state: dict[str, tuple[str, str]] = field(default_factory=dict)
    _seen: dict[str, set[str]] = field(default_factory=dict)
    _cursors: dict[str, int | None] = field(default_factory=dict)
    _runs_done: set[str] = field(default_factory=set)
    retried: set[str] = field(default_factory=set)  # failed runs the daemon retries
    handed_back: set[str] = field(default_factory=set)  # ... whose retry it missed and was given again
    _failed_since: dict[str, float] = field(default_factory=dict)
    # The keys as a set: a failed run over N partitions is checked key by key (the list would make it N^2).
    _wanted: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._wanted = frozenset(self.keys)

    @property
    def pending(self) -> list[str]:
        return [k for k in self.keys if k not in self.state]

    def counts(self) -> dict[str, int]:
        out = {MATERIALIZED: 0, FAILED: 0}
        for status, _ in self.state.values():
            out[status] += 1
        return out

    def poll_materializations(self, instance: DagsterInstance) -> list[str]:
        """Partitions newly materialized for every asset since the backfill started."""
        wanted, newly = self._wanted, []
        for asset in self.assets:
            seen = self._seen.setdefault(asset, set())
            while True:
                page = instance.fetch_materializations(
                    AssetRecordsFilter(asset_key=AssetKey(asset), after_timestamp=self.since,
                                       after_storage_id=self._cursors.get(asset)), limit=1000, ascending=True)
                for record in page.records:
                    self._cursors[asset] = record.storage_id
                    if record.partition_key in wanted:
                        seen.add(record.partition_key)
                if not page.has_more:
                    break
        for key in self.pending:
            if all(key in self._seen.get(a, ()) for a in self.assets):
                self.state[key] = (MATERIALIZED, "")
                newly.append(key)
        return newly

    def seen_run(self, run_id: str) -> bool:
        return run_id in self._runs_done

    def failed_for(self, run_id: str) -> float:
        """Seconds since this failed run was first seen."""
        return time.monotonic() - self._failed_since.setdefault(run_id, time.monotonic())

    def record_failed_run(self, instance: DagsterInstance, run, step_failures, run_message: str = "") -> list[str]:
        """Mark the partitions a finished, failed run did not materialize; returns the newly failed keys."""
        if self.seen_run(run.run_id):
            return []
        self._runs_done.add(run.run_id)
        newly = []
        for f in failures.failed_partitions_of_run(instance, run, step_failures, failed_at=time.time(),
                                                   run_message=run_message):
            if f.partition in self._wanted and f.partition not in self.state:
                self.state[f.partition] = (FAILED, f.problem)
                newly.append(f.partition)
        return newly


@dataclass
class Announcer:
    """Reports each partition of a backfill once, as ``[i/N] materialized KEY`` or ``[i/N] failed KEY: problem``."""

    progress: Progress
    report: Callable[[str], None]
    announced: list[str] = field(default_factory=list)

    def __call__(self, key: str) -> None:
        self.announced.append(key)
        status, problem = self.progress.state[key]
        width = len(str(len(self.progress.keys)))
        line = f"[{len(self.announced):>{width}}/{len(self.progress.keys)}] {status:<12} {key}"
        self.report(line + (f": {' '.join(problem.split())}" if problem else ""))


def watch(instance: DagsterInstance, backfill_id: str, keys: Sequence[str], since: float,
          report: Callable[[str], None], poll_s: float = 2.0, timeout_s: float | None = None,
          assets: Sequence[str] = INGESTION_ASSETS) -> Progress:
    """Follow a backfill in the instance until it and its runs are finished (or ``timeout_s`` passes),
    reporting each partition once as it is materialized or fails. A failed run that the daemon retries is
    reported as such; its partitions are reported when the retry ends (Dagster's retries carry the backfill's tag)."""
    progress = Progress(keys=list(keys), assets=tuple(assets), since=since)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last_note = time.monotonic()
    announce = Announcer(progress, report)
    retries_enabled = bool(instance.run_retries_enabled)

    while True:
        backfill = instance.get_backfill(backfill_id)
        runs = instance.get_runs(RunsFilter(tags={BACKFILL_TAG: backfill_id}))
        for key in progress.poll_materializations(instance):
            announce(key)
        _follow_failed_runs(instance, progress, runs, retries_enabled, announce, report)
        _hand_back_missed_retries(instance, progress, runs, report)
        runs_done = all(r.status in TERMINAL_RUN_STATUSES for r in runs)
        if backfill is not None and backfill_finished(backfill) and runs_done:
            # A last look: materializations of the final run may land just before its status changes, and a
            # failed run whose retry never came is final now.
            for key in progress.poll_materializations(instance):
                announce(key)
            _follow_failed_runs(instance, progress, runs, False, announce, report)
            if backfill.status.value in ("FAILED", "CANCELED"):
                error = backfill.error.message.strip() if backfill.error else "no error recorded"
                report(f"backfill {backfill_id} {backfill.status.value.lower()}: {error}")
            return progress
        if not progress.pending and runs_done:
            return progress
        if deadline is not None and time.monotonic() > deadline:
            return progress
        if time.monotonic() - last_note > 30:
            active = sum(r.status not in TERMINAL_RUN_STATUSES for r in runs)
            status = backfill.status.value if backfill else "unknown"
            report(f"  ... backfill {status}, {active} run(s) in progress, {len(progress.pending)} partition(s) "
                   "pending")
            last_note = time.monotonic()
        time.sleep(poll_s)


def _hand_back_missed_retries(instance: DagsterInstance, progress: Progress, runs,
                              report: Callable[[str], None]) -> None:
    """A retry the daemon announced but never launched (``dagster_internals.missed_retries``) would keep the backfill
    waiting for ever: it is handed back to the daemon, once per run."""
    overdue = [r for r in runs if r.run_id in progress.retried and r.run_id not in progress.handed_back
               and AUTO_RETRY_RUN_ID_TAG not in r.tags and progress.failed_for(r.run_id) > MISSED_RETRY_S]
    if not overdue:
        return
    missed = {r.run_id for r in missed_retries(instance)}
    overdue = [r for r in overdue if r.run_id in missed]
    if overdue and hand_back_missed_retries(instance, overdue):
        progress.handed_back.update(r.run_id for r in overdue)
        report(f"  the daemon missed the retry of run(s) {', '.join(r.run_id[:8] for r in overdue)}: handed back")


def _follow_failed_runs(instance: DagsterInstance, progress: Progress, runs, retries_enabled: bool,
                        announce: Announcer, report: Callable[[str], None]) -> None:
    """Failed runs: those the daemon retries are noted once; the others fail their partitions (read once)."""
    for run in runs:
        if run.status != DagsterRunStatus.FAILURE or progress.seen_run(run.run_id):
            continue
        state = retry_state(run.tags, retries_enabled, progress.failed_for(run.run_id))
        if state == UNDECIDED or (state == RETRYING and run.run_id in progress.retried):
            continue
        message = failures.run_failure_message(instance, run)
        if state == RETRYING:
            progress.retried.add(run.run_id)
            partitions = failures.run_partitions(instance, run)
            what = partitions[0] if len(partitions) == 1 else f"{len(partitions)} partitions"
            report(f"  run {run.run_id[:8]} ({what}) failed, the daemon retries it: {' '.join(message.split())}")
            continue
        for key in progress.record_failed_run(instance, run, failures.step_failures(instance, run.run_id), message):
            announce(key)


def materialize_in_process(instance: DagsterInstance, keys: Sequence[str], report: Callable[[str], None],
                           run_config: dict | None = None, defs: Definitions | None = None,
                           verbose: bool = False, partitions_per_run: int | None = None) -> Progress:
    """Materialize the ingestion assets for ``keys`` here, one run per contiguous range of partitions (cut into runs
    of at most ``partitions_per_run``), reporting each partition as it is materialized or fails (one line each).
    Dagster's own events reach the console only with ``verbose``; they are always in the instance. The runs carry
    this process's identity (``failures.process_tags``), so a later ``lhc`` marks them failed if this process dies
    mid-run.

    ``defs`` defaults to the code location as loaded from the environment (its data root)."""
    if defs is None:
        from lhc_assets.definitions import defs

    progress = Progress(keys=list(keys), assets=INGESTION_ASSETS, since=time.time())
    announce = Announcer(progress, report)
    config = dict(run_config or {})
    if not verbose:
        config.update(QUIET_CONSOLE)
    job = defs.resolve_job_def("ingestion_job")
    from lhc_assets.defs.ingestion.assets import MAX_PARTITIONS_PER_RUN

    ordered = instance.get_dynamic_partitions(PARTITIONS_DEF_NAME)
    position = {key: i for i, key in enumerate(ordered)}  # list.index per range would be quadratic
    per_run = min(partitions_per_run or MAX_PARTITIONS_PER_RUN, MAX_PARTITIONS_PER_RUN)
    for first, last in plan_runs(ordered, set(keys), per_run):
        span = position[last] - position[first] + 1
        report(f"ingestion: {span} partition(s), {first} ... {last}" if span > 1 else f"ingestion: {first}")
        result = job.execute_in_process(
            instance=instance, raise_on_error=False, run_config=config,
            tags={failures.RANGE_START_TAG: first, failures.RANGE_END_TAG: last, **process_tags()},
        )
        for key in progress.poll_materializations(instance):
            announce(key)
        if not result.success:
            run = instance.get_run_by_id(result.run_id)
            for key in progress.record_failed_run(instance, run, [e for e in result.all_events if e.is_step_failure],
                                                  failures.run_failure_message(instance, run)):
                announce(key)
    return progress
