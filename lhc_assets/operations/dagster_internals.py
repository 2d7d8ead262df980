"""The one place that uses Dagster's internal API (``dagster._core``), for what its public API cannot do.

Written against the pinned Dagster (``PINNED_DAGSTER``; pyproject.toml); tests/operations/test_dagster_internals.py
fails when another version is installed, so an upgrade re-checks these calls before anything else runs.

* Submitting an asset backfill from code: the UI's "Launch backfill" creates a ``PartitionBackfill``; the
  public API has no constructor for one (``dagster job backfill`` is op-job only and needs the CLI). Its runs are
  planned by the assets' backfill policy (the ingestion's ``single_run``: one run per contiguous range), or here,
  when a backfill is to run in smaller runs (``planned_runs``, below).
* Knowing when a backfill is over: the set of terminal bulk-action statuses is internal.
* Whether an asset is missing or stale (what the UI shows): ``CachingStaleStatusResolver`` has no public
  entry point. Dagster 1.13 does not check an edge from a partitioned parent to its child when the child
  depends on ``SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD`` (100) or more parent partitions, so an
  unpartitioned asset over the per-file feature tables would never turn stale once 100 files are registered;
  ``stale_statuses`` adds that edge from the event log, with the cursor Dagster records in the child's
  provenance.
* Noticing runs whose process died: Dagster's run monitoring asks the run launcher about the run's worker, and
  the ``DefaultRunLauncher`` cannot answer, so a SIGKILLed run would stay STARTED forever. ``LocalRunLauncher``
  (named in dagster.yaml) answers from the process identity every run records in its tags
  (``resources.process``); the health-check result types are internal.
* Failing such a run so that Dagster's retry daemon cannot miss it (``report_dead_run``), and handing back to it the
  retries it missed anyway (``hand_back_missed_retries``): both touch the run storage and the daemon's cursor.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, DagsterRun, DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

from resources.process import PID_TAG, process_gone

PINNED_DAGSTER = "1.13.27"

# Dagster's run tags of its retry machinery (dagster._core.storage.tags; the adapter's test pins them).
MAX_RETRIES_TAG = "dagster/max_retries"  # on a run (or its backfill): how many times the daemon may retry it
WILL_RETRY_TAG = "dagster/will_retry"  # set on a failed run: "true" when the daemon is going to retry it
AUTO_RETRY_RUN_ID_TAG = "dagster/auto_retry_run_id"  # set on a failed run once its retry exists
RETRY_NUMBER_TAG = "dagster/retry_number"  # on a retry: 1, 2, ...
PARENT_RUN_ID_TAG = "dagster/parent_run_id"  # on a retry or re-execution: the run it repeats


def add_asset_backfill(instance: DagsterInstance, asset_graph: Any, partition_keys: Sequence[str],
                       assets: Sequence[str], title: str, tags: Mapping[str, str],
                       runs: Sequence[tuple[str, str]] | None = None) -> str:
    """Add an asset backfill of ``assets`` over ``partition_keys`` to the instance (the daemon executes it,
    as a backfill launched from the UI); returns its id.

    ``runs``, the (first, last) partition range of each run in the instance's key order, replaces the runs the
    assets' backfill policy would make (one per contiguous range): see ``planned_runs``."""
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    backfill_id = make_new_backfill_id()
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=backfill_id, asset_graph=asset_graph, partition_names=list(partition_keys),
        asset_selection=[AssetKey(a) for a in assets], backfill_timestamp=time.time(), tags=dict(tags),
        dynamic_partitions_store=instance, all_partitions=False, title=title, description=None, run_config=None,
    )
    if runs is not None:
        backfill = planned_runs(instance, asset_graph, backfill, assets, runs)
    instance.add_backfill(backfill)
    return backfill_id


def planned_runs(instance: DagsterInstance, asset_graph: Any, backfill: Any, assets: Sequence[str],
                 runs: Sequence[tuple[str, str]]) -> Any:
    """``backfill`` (a new asset backfill) with its runs decided here: one run per (first, last) range.

    A ``single_run`` policy makes one run of a contiguous range, however long; a backfill whose runs must fail,
    be killed and be retried file by file needs smaller runs, and the policy is the asset's, not the backfill's.
    The daemon creates an asset backfill's runs from ``submitting_run_requests`` (with the run ids reserved in
    ``reserved_run_ids``, so a daemon that dies while submitting them resumes without duplicates: this is how it
    recovers an interrupted tick) before it plans anything itself; with ``requested_runs_for_target_roots`` set, it
    then only follows them: materializations after ``latest_storage_id``, failures, retries (the backfill waits
    for the retries of its failed runs), completion. So these runs are the backfill's, as if planned by a policy."""
    from dagster import RunRequest
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
    from dagster._core.utils import make_new_run_id

    # What a BackfillPolicy.multi_run(N) builds: a range, also for one partition.
    selection = [AssetKey(a) for a in assets]
    requests = [RunRequest(asset_selection=selection,
                           tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last})
                for first, last in runs]
    data = backfill.asset_backfill_data._replace(
        requested_runs_for_target_roots=True,
        # Materializations are counted after this event; none of the backfill's runs exists yet.
        latest_storage_id=instance.event_log_storage.get_maximum_record_id() or 0,
    )
    return (backfill.with_asset_backfill_data(data, dynamic_partitions_store=instance, asset_graph=asset_graph)
            .with_submitting_run_requests(requests, [make_new_run_id() for _ in requests]))


def backfill_finished(backfill: Any) -> bool:
    """Whether a backfill read from the instance (``instance.get_backfill``) has reached a terminal status."""
    from dagster._core.execution.backfill import BULK_ACTION_TERMINAL_STATUSES

    return backfill.status in BULK_ACTION_TERMINAL_STATUSES


class AssetStatus(NamedTuple):
    """Whether one asset (partition) is up to date: ``status`` is the name of Dagster's ``StaleStatus``
    (``MISSING``, ``STALE`` or ``FRESH``), ``causes`` say why it is stale."""

    status: str
    causes: tuple[str, ...] = ()

    @property
    def up_to_date(self) -> bool:
        return self.status == "FRESH"

    def describe(self) -> str:
        return "missing" if self.status == "MISSING" else "; ".join(self.causes) or self.status.lower()


def stale_statuses(
        instance: DagsterInstance, asset_graph: Any, asset_partitions: Iterable[tuple[AssetKey, str | None]],
) -> dict[tuple[AssetKey, str | None], AssetStatus]:
    """Dagster's stale status of each (asset, partition key or None), as the UI computes it (code version,
    upstream data versions, upstream materializations), plus the partitioned-parent edge Dagster skips for
    large partition counts (module docstring). One resolver answers every query, so shared parents are
    read once. A partitioned asset must be asked per partition: Dagster calls it FRESH otherwise."""
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.definitions.temporal_context import TemporalContext

    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=datetime.now(UTC), last_event_id=None),
                          instance=instance, asset_graph=asset_graph)
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=asset_graph, loading_context=view)
    statuses = {}
    for key, partition in asset_partitions:
        partitioned = asset_graph.get(key).is_partitioned
        if partitioned and partition is None:
            raise ValueError(f"{key.to_user_string()} is partitioned: ask for its status per partition")
        if resolver.get_status(key, partition) == StaleStatus.MISSING:
            statuses[(key, partition)] = AssetStatus("MISSING")
            continue
        found = resolver.get_stale_causes(key, partition)
        causes = [_describe_cause(c) for c in found]
        if not partitioned:
            seen = {c.dependency_asset_key for c in found}
            causes += [f"has a new dependency materialization ({parent.to_user_string()} {parent_partition})"
                       for parent, parent_partition in _partitioned_parents_updated(instance, asset_graph, key)
                       if parent not in seen]
        statuses[(key, partition)] = AssetStatus("STALE" if causes else "FRESH", tuple(causes))
    return statuses


def _describe_cause(cause: Any) -> str:
    if cause.dependency is None:
        return cause.reason
    dependency = cause.dependency_asset_key.to_user_string()
    if cause.dependency_partition_key is not None:
        dependency += f" {cause.dependency_partition_key}"
    return f"{cause.reason} ({dependency})"


def _partitioned_parents_updated(instance: DagsterInstance, asset_graph: Any,
                                 key: AssetKey) -> Iterator[tuple[AssetKey, str | None]]:
    """(parent, partition) for each partitioned parent of the unpartitioned ``key`` with a materialization
    after the one ``key`` last consumed: the cursor is the parent's storage id in ``key``'s data provenance
    (the parent's latest materialization when ``key`` ran), as Dagster's resolver uses it below the threshold."""
    from dagster._core.definitions.data_version import DataProvenance

    latest = instance.fetch_materializations(key, limit=1).records
    if not latest:
        return
    record = latest[0]
    provenance = DataProvenance.from_tags(record.asset_materialization.tags or {})
    for parent in sorted(asset_graph.get(key).parent_keys):
        if not asset_graph.get(parent).is_partitioned:
            continue
        if provenance is not None and provenance.has_input_asset(parent):
            after = provenance.input_storage_ids[parent]  # None: the parent had no materialization then
        else:  # no provenance (e.g. a runless event): the key's own materialization is the reference
            after = record.storage_id
        newer = instance.fetch_materializations(AssetRecordsFilter(asset_key=parent, after_storage_id=after),
                                                limit=1).records
        if newer:
            yield parent, newer[0].partition_key


RETRY_CURSOR_KEY = "EVENT_LOG_CONSUMER_CURSOR-PIPELINE_FAILURE"  # the retry daemon's place in the event log
# A failed run tagged to be retried whose retry does not exist after this long was missed by the retry daemon
# (which looks every 5 s).
MISSED_RETRY_S = 60.0


def report_dead_run(instance: DagsterInstance, run: DagsterRun, message: str) -> None:
    """Mark a run whose process died failed, in an order Dagster's retry daemon cannot misread.

    ``instance.report_run_failed`` stores the failure event first and changes the run's status after it; Dagster's
    retry daemon reads new failure events every few seconds, and one that lands between the two writes sees a run
    still STARTED, decides it is not to be retried and moves its cursor past the event for good. The run is then
    tagged ``dagster/will_retry=true`` without ever being retried, and an asset backfill waits for that retry
    forever (the soak test met it once in 110 runs). Here the status and the retry decision are written first,
    then the event, which is what the retry daemon reacts to."""
    import logging

    from dagster._core.events import DagsterEvent, DagsterEventType
    from dagster._core.execution.retries import auto_reexecution_should_retry_run

    current = instance.get_run_by_id(run.run_id)
    if current is None or current.is_finished:  # it ended meanwhile (run monitoring checks the same)
        return
    event = DagsterEvent(event_type_value=DagsterEventType.PIPELINE_FAILURE.value, job_name=run.job_name,
                         message=message)
    instance.run_storage.handle_run_event(run.run_id, event)
    failed = instance.get_run_by_id(run.run_id)
    if instance.run_retries_enabled and failed is not None:
        retry = auto_reexecution_should_retry_run(instance, failed, None)
        instance.add_run_tags(run.run_id, {WILL_RETRY_TAG: str(retry).lower()})
    instance.report_dagster_event(event, run_id=run.run_id, log_level=logging.ERROR)


def missed_retries(instance: DagsterInstance, older_than_s: float = MISSED_RETRY_S) -> list[DagsterRun]:
    """Failed runs Dagster decided to retry (``dagster/will_retry=true``) whose retry still does not exist."""
    from dagster import DagsterRunStatus, RunsFilter

    records = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.FAILURE],
                                                  tags={WILL_RETRY_TAG: "true"}))
    now = time.time()
    return [r.dagster_run for r in records if AUTO_RETRY_RUN_ID_TAG not in r.dagster_run.tags
            and now - (r.end_time or r.update_timestamp.timestamp()) > older_than_s]


def hand_back_missed_retries(instance: DagsterInstance, runs: Sequence[DagsterRun]) -> bool:
    """Move the retry daemon's cursor back before the failures of ``runs`` (from ``missed_retries``), so that it
    reads them again and retries them; True if it moved. Safe for the other failures it reads again: the daemon
    never retries a run twice (it finds the retry it made) and never retries a run of a finished backfill."""
    from dagster import DagsterEventType

    ids = [record.storage_id for run in runs
           for record in instance.get_records_for_run(run.run_id, of_type=DagsterEventType.RUN_FAILURE).records]
    cursor = instance.daemon_cursor_storage.get_cursor_values({RETRY_CURSOR_KEY}).get(RETRY_CURSOR_KEY)
    if not ids or cursor is None or int(cursor) < min(ids):
        return False
    instance.daemon_cursor_storage.set_cursor_values({RETRY_CURSOR_KEY: str(min(ids) - 1)})
    return True


class LocalRunLauncher(DefaultRunLauncher):
    """Dagster's default launcher (runs in processes of the code server), plus a health check for run monitoring:
    a run whose process is gone is reported FAILED, so the daemon marks it failed within ``poll_interval_seconds``.
    A run not yet tagged, or executed on another host, counts as running (run monitoring's timeouts still apply);
    so does a retry whose tags are still its parent's (``failures.own_process_tags``). A dead run is failed here, by
    ``report_dead_run`` (run monitoring then sees it failed and leaves it), so that its retry cannot be missed.

    In dagster.yaml::

        run_launcher:
          module: lhc_assets.operations.dagster_internals
          class: LocalRunLauncher
    """

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        from lhc_assets.operations.failures import own_process_tags

        tags = own_process_tags(self._instance, run) if self.has_instance else run.tags
        if process_gone(tags):
            message = (f"the process that ran it (pid {tags[PID_TAG]}) has ended without finishing the run "
                       "(killed, out of memory or a restart)")
            if self.has_instance:
                report_dead_run(self._instance, run, f"Run worker died: {message}.")
            return CheckRunHealthResult(WorkerStatus.FAILED, message)
        return CheckRunHealthResult(WorkerStatus.RUNNING)
