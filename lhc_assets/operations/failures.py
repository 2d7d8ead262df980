"""Failed partitions: which partitions a failed run did not materialize, and why — read from the instance.

A run over several files fails as a whole when one file is bad, but the ingestion multi-asset publishes the
good partitions and names the bad ones in its step failure's ``failed_partitions`` metadata ({key: problem}).
For any other failure every partition the run targeted counts as failed, with the step's error message (or the
run's, when it died before a step failed).

``recorded_failures`` derives the list from the instance's own run and event records, so every way of running
the ingestion (the daemon, ``lhc backfill --in-process``, ``make run``, ``dagster job execute``, a test) is
covered by the same code; ``lhc failures`` lists the partitions whose latest failure has not been followed by a
materialization of every asset the failed run planned for it.

Every run carries the host, pid and start time of the process executing it in its tags
(``resources.process``): if that process is gone while the run is still marked started (SIGKILL, out of memory,
a restart), ``fail_dead_runs`` marks it failed (``lhc`` calls it); in the daemon, Dagster's run monitoring does
the same through ``dagster_internals.LocalRunLauncher``. A retry or re-execution starts with a copy of its parent
run's tags, the dead parent's process included, until its own resources replace them (``own_process_tags``).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass

from dagster import (
    AssetKey,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunRecord,
    RunsFilter,
)

# Every partitioned asset of the platform is partitioned by input file.
from lhc_assets.defs.partitions import PARTITIONS_DEF_NAME
from lhc_assets.operations.dagster_internals import PARENT_RUN_ID_TAG, report_dead_run
from resources.process import HOST_TAG, PID_START_TAG, PID_TAG, process_gone

FAILED_PARTITIONS_METADATA = "failed_partitions"
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
GENERIC_RUN_FAILURE = "marked as failed from outside the execution context"
PROCESS_TAGS = (HOST_TAG, PID_TAG, PID_START_TAG)
NOT_FINISHED = (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING)


@dataclass(frozen=True)
class FailedPartition:
    partition: str
    problem: str
    run_id: str
    job: str
    assets: tuple[str, ...]
    failed_at: float

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "assets": list(self.assets)}, sort_keys=True)


def run_partitions(instance: DagsterInstance, run: DagsterRun) -> list[str]:
    """The partition keys a run targeted, from its tags (one key, or a range in the instance's key order)."""
    if PARTITION_TAG in run.tags:
        return [run.tags[PARTITION_TAG]]
    start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    if start is None or end is None:
        return []
    ordered = list(instance.get_dynamic_partitions(PARTITIONS_DEF_NAME))
    if start not in ordered or end not in ordered:
        return [start] if start == end else [start, end]
    return ordered[ordered.index(start):ordered.index(end) + 1]


def planned_assets(instance: DagsterInstance, run_id: str) -> tuple[str, ...]:
    """The assets a run planned to materialize (its selection, as executed)."""
    records = instance.get_records_for_run(run_id=run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
    keys = {r.event_log_entry.dagster_event.asset_key for r in records.records}
    return tuple(sorted(k.to_user_string() for k in keys if k is not None))


def _step_problems(step_failures: Iterable[DagsterEvent]) -> tuple[dict[str, str], str]:
    """Per-partition problems from the failures' metadata, and the first error message (for the rest)."""
    per_key, message = {}, ""
    for event in step_failures:
        data = event.step_failure_data
        if data is None:
            continue
        metadata = data.user_failure_data.metadata if data.user_failure_data else {}
        value = metadata.get(FAILED_PARTITIONS_METADATA)
        if value is not None:
            per_key.update({str(k): str(v) for k, v in value.value.items()})
        elif not message and data.error is not None:
            # Dagster wraps user errors ("Error occurred while executing op ..."); the root cause says what.
            error = data.error
            while error.cause is not None:
                error = error.cause
            message = f"{event.step_key}: {error.message.strip()}"
    return per_key, message


def failed_partitions_of_run(instance: DagsterInstance, run: DagsterRun, step_failures: Sequence[DagsterEvent],
                             failed_at: float, run_message: str = "") -> list[FailedPartition]:
    """The partitions a failed run did not materialize, each with its problem. Empty for unpartitioned runs."""
    partitions = run_partitions(instance, run)
    if not partitions:
        return []
    per_key, message = _step_problems(step_failures)
    if per_key and not message:
        # Only bad inputs failed: the run's other partitions were published.
        problems = per_key
    else:
        fallback = message or " ".join(run_message.split()) or "the run failed before its steps ran (see its logs)"
        problems = {k: per_key.get(k, fallback) for k in partitions}
    assets = planned_assets(instance, run.run_id)
    return [FailedPartition(partition=k, problem=p, run_id=run.run_id, job=run.job_name, assets=assets,
                            failed_at=failed_at) for k, p in sorted(problems.items())]


def _events(instance: DagsterInstance, run_id: str, kind: DagsterEventType) -> list[DagsterEvent]:
    records = instance.get_records_for_run(run_id=run_id, of_type=kind).records
    return [r.event_log_entry.dagster_event for r in records if r.event_log_entry.dagster_event is not None]


def step_failures(instance: DagsterInstance, run_id: str) -> list[DagsterEvent]:
    return _events(instance, run_id, DagsterEventType.STEP_FAILURE)


def _failed_runs(instance: DagsterInstance, page: int = 500) -> Iterator[RunRecord]:
    cursor = None
    while True:
        records = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.FAILURE]), limit=page, cursor=cursor)
        yield from records
        if len(records) < page:
            return
        cursor = records[-1].dagster_run.run_id


def _is_partitioned(run: DagsterRun) -> bool:
    return PARTITION_TAG in run.tags or RANGE_START_TAG in run.tags


def own_process_tags(instance: DagsterInstance, run: DagsterRun) -> Mapping[str, str]:
    """The run's tags if the process they name is its own, else none of them.

    Dagster gives a retry (or a re-execution) a copy of its parent's tags, and so the parent's process, which is
    dead when the parent was killed; the retry's own resources replace them once its process runs. Read as the
    retry's, they made run monitoring fail a retry that had just started, and retry it again while it ran on.
    An unknown parent counts as the same process: never fail a run on tags that may not be its own."""
    parent_id = run.tags.get(PARENT_RUN_ID_TAG)
    if parent_id is None or PID_TAG not in run.tags:
        return run.tags
    parent = instance.get_run_by_id(parent_id)
    if parent is None or all(parent.tags.get(t) == run.tags.get(t) for t in PROCESS_TAGS):
        return {k: v for k, v in run.tags.items() if k not in PROCESS_TAGS}
    return run.tags


def run_failure_message(instance: DagsterInstance, run: DagsterRun) -> str:
    """Why a failed run failed, from its run-failure events ("" when none says): for a run whose process died, that."""
    messages = [e.message for e in _events(instance, run.run_id, DagsterEventType.RUN_FAILURE) if e.message]
    # A run can be failed twice (run monitoring, then the code server); Dagster's default message says nothing.
    specific = [m for m in messages if GENERIC_RUN_FAILURE not in m]
    message = (specific or messages or [""])[0]
    tags = own_process_tags(instance, run)
    if not specific and process_gone(tags):
        message = _died(tags)
    return message


def recorded_failures(instance: DagsterInstance) -> list[FailedPartition]:
    """Every failed partition of every failed partitioned run in the instance, oldest first."""
    out: list[FailedPartition] = []
    for record in _failed_runs(instance):
        run = record.dagster_run
        if not _is_partitioned(run):
            continue
        failed_at = record.end_time or record.update_timestamp.timestamp()
        out += failed_partitions_of_run(instance, run, step_failures(instance, run.run_id), failed_at,
                                        run_failure_message(instance, run))
    return sorted(out, key=lambda r: (r.failed_at, r.partition))


def fail_dead_runs(instance: DagsterInstance) -> list[DagsterRun]:
    """Mark failed the unfinished runs whose in-process executor on this host has died; returns them."""
    unfinished = instance.get_runs(RunsFilter(statuses=list(NOT_FINISHED), tags={HOST_TAG: socket.gethostname()}))
    dead = [r for r in unfinished if process_gone(own_process_tags(instance, r))]
    for run in dead:
        report_dead_run(instance, run, _died(run.tags) + "; marked failed by lhc")
    return dead


def _died(tags: Mapping[str, str]) -> str:
    return (f"the process that ran it (pid {tags[PID_TAG]} on {tags[HOST_TAG]}) ended without finishing the "
            "run (killed, out of memory or a restart)")


def materialized_since(instance: DagsterInstance, asset: str, partition: str, timestamp: float) -> bool:
    from dagster import AssetRecordsFilter

    result = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey.from_user_string(asset), asset_partitions=[partition],
                           after_timestamp=timestamp), limit=1)
    return bool(result.records)


def outstanding(instance: DagsterInstance, records: Sequence[FailedPartition]) -> list[FailedPartition]:
    """The latest failure of every partition that has not been materialized since (for every planned asset)."""
    latest = {}
    for r in records:
        latest[r.partition] = r
    return [r for r in latest.values()
            if not r.assets or not all(materialized_since(instance, a, r.partition, r.failed_at) for a in r.assets)]
