"""A run-failure sensor that records the partitions a failed run did not materialize (``lhc failures`` lists them).

It runs in the daemon for every job of this code location, including the runs of UI and CLI backfills and of
``new_delphes_files_sensor``. Unpartitioned runs are not recorded: the UI's run list already shows them.
"""

from __future__ import annotations

import os
import time

from dagster import DefaultSensorStatus, RunFailureSensorContext, run_failure_sensor

from lhc_assets.operations import failures
from resources.storage import StorageResource

INTERVAL_ENV = "LHC_FAILURE_SENSOR_INTERVAL_S"
DEFAULT_INTERVAL_S = 30


@run_failure_sensor(
    name="record_failed_partitions",
    minimum_interval_seconds=int(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S)),
    default_status=DefaultSensorStatus.RUNNING,
    description="Appends the partitions of every failed run, with the problem, to "
                "<data root>/reports/failed_partitions.jsonl; `lhc failures` lists those not materialized since.",
)
def record_failed_partitions(context: RunFailureSensorContext, storage: StorageResource) -> None:
    run = context.dagster_run
    record = context.instance.get_run_record_by_id(run.run_id)
    failed_at = (record.end_time if record and record.end_time else None) or time.time()
    records = failures.failed_partitions_of_run(context.instance, run, context.get_step_failure_events(), failed_at)
    failures.append(failures.ledger_path(storage.reports), records)
    if records:
        context.log.info(f"run {run.run_id}: recorded {len(records)} failed partition(s): "
                         + ", ".join(r.partition for r in records))
