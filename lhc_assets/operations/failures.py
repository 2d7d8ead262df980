"""Failed partitions: which partitions a failed run did not materialize, and why; the ledger that keeps them.

A run over several files fails as a whole when one file is bad, but the ingestion multi-asset publishes the
good partitions and names the bad ones in its step failure's ``failed_partitions`` metadata ({key: problem}).
For any other failure every partition the run targeted counts as failed, with the step's error message.

The ``record_failed_partitions`` sensor appends one JSON line per failed partition to
``<data root>/reports/failed_partitions.jsonl``; ``lhc failures`` lists the partitions whose latest failure
has not been followed by a materialization of every asset the failed run planned for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from dagster import AssetKey, DagsterEvent, DagsterEventType, DagsterInstance, DagsterRun

# Every partitioned asset of the platform is partitioned by input file.
from lhc_assets.defs.partitions import PARTITIONS_DEF_NAME

FAILED_PARTITIONS_METADATA = "failed_partitions"
LEDGER_NAME = "failed_partitions.jsonl"
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


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

    @classmethod
    def from_json(cls, line: str) -> FailedPartition:
        d = json.loads(line)
        return cls(partition=d["partition"], problem=d["problem"], run_id=d["run_id"], job=d["job"],
                   assets=tuple(d["assets"]), failed_at=float(d["failed_at"]))


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
                             failed_at: float) -> list[FailedPartition]:
    """The partitions a failed run did not materialize, each with its problem. Empty for unpartitioned runs."""
    partitions = run_partitions(instance, run)
    if not partitions:
        return []
    per_key, message = _step_problems(step_failures)
    if per_key and not message:
        # Only bad inputs failed: the run's other partitions were published.
        problems = per_key
    else:
        fallback = message or "the run failed before its steps ran (see the run's logs)"
        problems = {k: per_key.get(k, fallback) for k in partitions}
    assets = planned_assets(instance, run.run_id)
    return [FailedPartition(partition=k, problem=p, run_id=run.run_id, job=run.job_name, assets=assets,
                            failed_at=failed_at) for k, p in sorted(problems.items())]


def ledger_path(reports_dir: Path) -> Path:
    return Path(reports_dir) / LEDGER_NAME


def append(path: Path, records: Sequence[FailedPartition]) -> None:
    """Append records as whole lines in one write, so a reader never sees half a record."""
    if not records:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(r.to_json() + "\n" for r in records).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: Path) -> list[FailedPartition]:
    """Every recorded failure, oldest first, once per (run, partition); unreadable lines are skipped."""
    if not path.exists():
        return []
    seen, out = set(), []
    for line in path.read_text().splitlines():
        try:
            record = FailedPartition.from_json(line)
        except (ValueError, KeyError, TypeError):
            continue
        if (record.run_id, record.partition) not in seen:
            seen.add((record.run_id, record.partition))
            out.append(record)
    return sorted(out, key=lambda r: r.failed_at)


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
