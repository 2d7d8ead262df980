"""Backfills in one process and the failed partitions read back from the instance: which partitions failed and
why, listed until they are materialized again. The daemon-driven CLI is in tests/cli."""

from __future__ import annotations

import pytest

from lhc_assets.operations import backfill, failures
from resources.process import PID_TAG, process_tags
from tests.physics import badfiles


@pytest.mark.slow  # materializes through Spark
def test_in_process_backfill_reports_each_partition_and_the_instance_lists_only_the_bad_one(platform, generated_files):
    good = [platform.add_file(s, generated_files[s]) for s in ("qcd", "ttbar")]
    bad = platform.add_file("wjets", name="garbage.root", maker=badfiles.not_root)
    lines: list[str] = []

    progress = backfill.materialize_in_process(platform.instance, [*good, bad], lines.append, defs=platform.defs)

    assert progress.state[bad][0] == backfill.FAILED
    assert "garbage.root" in progress.state[bad][1] and "not a readable ROOT file" in progress.state[bad][1]
    assert all(progress.state[k] == (backfill.MATERIALIZED, "") for k in good)
    assert not progress.pending and progress.counts() == {"materialized": 2, "failed": 1}
    # One line for the run, one per partition (the console's quietness is tested on `lhc` in tests/cli).
    assert lines[0].startswith("ingestion: 3 partition(s)") and len(lines) == 4, lines
    assert any(line.startswith("[3/3] failed") and bad in line and "garbage.root" in line for line in lines), lines

    # The run failed as a whole; the instance's records name only the partition that was not materialized.
    run = platform.instance.get_runs()[0]
    assert run.tags[PID_TAG] == process_tags()[PID_TAG]
    recorded = failures.recorded_failures(platform.instance)
    assert [(r.partition, r.run_id) for r in recorded] == [(bad, run.run_id)]
    assert "garbage.root" in recorded[0].problem
    assert set(recorded[0].assets) == {"raw_events", "hlf_features", "llf_features"}
    assert [r.partition for r in failures.outstanding(platform.instance, recorded)] == [bad]

    # Fixed file, re-materialized: no longer outstanding, still in the history.
    (platform.root / "incoming" / "wjets" / "garbage.root").write_bytes(generated_files["wjets"].read_bytes())
    again = backfill.materialize_in_process(platform.instance, [bad], lines.append, defs=platform.defs)
    assert again.state == {bad: (backfill.MATERIALIZED, "")}
    assert failures.outstanding(platform.instance, failures.recorded_failures(platform.instance)) == []
    assert len(failures.recorded_failures(platform.instance)) == 1


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
