"""Backfills in one process and the failed-partitions ledger: which partitions failed and why, recorded by the
run-failure sensor and listed until they are materialized again. The daemon-driven CLI is in tests/cli."""

from __future__ import annotations

import pytest
from dagster import DagsterEventType, build_run_status_sensor_context

from lhc_assets.defs.sensors.run_failures import record_failed_partitions
from lhc_assets.operations import backfill, failures
from resources.storage import StorageResource
from tests.physics import badfiles


def _failure_context(platform, run_id: str):
    run = platform.instance.get_run_by_id(run_id)
    failure = platform.instance.get_records_for_run(run_id=run_id, of_type=DagsterEventType.RUN_FAILURE).records
    return build_run_status_sensor_context(
        sensor_name="record_failed_partitions", dagster_instance=platform.instance, dagster_run=run,
        dagster_event=failure[0].event_log_entry.dagster_event, resources={"storage": StorageResource(
            root=str(platform.root))},
    ).for_run_failure()


@pytest.mark.slow  # materializes through Spark
def test_in_process_backfill_reports_each_partition_and_the_sensor_records_only_the_bad_one(platform, generated_files):
    good = [platform.add_file(s, generated_files[s]) for s in ("qcd", "ttbar")]
    bad = platform.add_file("wjets", name="garbage.root", maker=badfiles.not_root)
    lines: list[str] = []

    progress = backfill.materialize_in_process(platform.instance, [*good, bad], lines.append, defs=platform.defs)

    assert progress.state[bad][0] == backfill.FAILED
    assert "garbage.root" in progress.state[bad][1] and "not a readable ROOT file" in progress.state[bad][1]
    assert all(progress.state[k] == (backfill.MATERIALIZED, "") for k in good)
    assert not progress.pending and progress.counts() == {"materialized": 2, "failed": 1}
    assert any(line.startswith(f"  FAILED {bad}: ") for line in lines), lines

    # The run failed as a whole; the sensor records only the partition that was not materialized.
    run = platform.instance.get_runs()[0]
    record_failed_partitions(_failure_context(platform, run.run_id))
    ledger = failures.ledger_path(platform.root / "reports")
    recorded = failures.read(ledger)
    assert [(r.partition, r.run_id) for r in recorded] == [(bad, run.run_id)]
    assert "garbage.root" in recorded[0].problem
    assert set(recorded[0].assets) == {"raw_events", "hlf_features", "llf_features"}
    # Recording the same run again (a sensor re-delivery) does not duplicate it.
    record_failed_partitions(_failure_context(platform, run.run_id))
    assert len(failures.read(ledger)) == 1
    assert [r.partition for r in failures.outstanding(platform.instance, recorded)] == [bad]

    # Fixed file, re-materialized: no longer outstanding, still in the history.
    (platform.root / "incoming" / "wjets" / "garbage.root").write_bytes(generated_files["wjets"].read_bytes())
    again = backfill.materialize_in_process(platform.instance, [bad], lines.append, defs=platform.defs)
    assert again.state == {bad: (backfill.MATERIALIZED, "")}
    assert failures.outstanding(platform.instance, failures.read(ledger)) == []
    assert len(failures.read(ledger)) == 1


@pytest.mark.slow  # materializes through Spark
def test_a_failure_without_partition_detail_fails_every_partition_of_the_run(platform, generated_files, monkeypatch):
    import lhc_assets.spark.tasks

    def lost_executor(*args, **kwargs):
        raise RuntimeError("executor lost")

    keys = [platform.add_file(s, generated_files[s]) for s in ("qcd", "ttbar")]
    monkeypatch.setattr(lhc_assets.spark.tasks, "run_tasks", lost_executor)
    result = platform.materialize(keys)
    assert not result.success
    run = platform.instance.get_run_by_id(result.run_id)
    steps = [e for e in result.all_events if e.is_step_failure]
    found = failures.failed_partitions_of_run(platform.instance, run, steps, failed_at=0.0)
    assert failures.run_partitions(platform.instance, run) == keys
    assert [f.partition for f in found] == sorted(keys)
    assert all("executor lost" in f.problem for f in found)


def test_ledger_skips_torn_lines_and_duplicates(tmp_path):
    path = tmp_path / "failed_partitions.jsonl"
    one = failures.FailedPartition("ttbar/a", "bad", "run-1", "ingestion_job", ("raw_events",), 10.0)
    two = failures.FailedPartition("qcd/b", "worse", "run-2", "ingestion_job", ("raw_events",), 5.0)
    failures.append(path, [one, two])
    failures.append(path, [one])
    with path.open("a") as f:
        f.write('{"partition": "half')
    assert failures.read(path) == [two, one]
