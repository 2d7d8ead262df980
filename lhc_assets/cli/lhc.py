"""``lhc``: the common operations on a running platform, against the Dagster instance in ``$DAGSTER_HOME``.

    lhc backfill --all                    every input file (new files under incoming/ are registered first)
    lhc backfill --sample ttbar [wjets]   the files of some samples
    lhc backfill --partitions KEY [KEY]   some partitions (keys as in the UI: <sample>/<file stem>)
    lhc backfill --failed                 the partitions `lhc failures` lists
        [--missing]       only partitions not materialized yet
        [--partitions-per-run N]  runs of at most N partitions (1: one per file; default 1,000)
        [--retries N]     the daemon retries a failed run up to N times (Dagster's dagster/max_retries)
        [--in-process]    run here instead of in the daemon (no `make ui` / dagster-daemon needed)
        [--no-wait]       submit and return; follow the backfill in the UI
        [--verbose]       with --in-process: Dagster's events and stack traces on the console too
    lhc failures [--all] [--json]         failed partitions not materialized since (--all: every failure)
    lhc gc [--keep N]                     remove staging left by dead runs and versions older than the
                                          N previous ones (default LHC_KEEP_VERSIONS, 1); report the space
    lhc trigger-menu [--source onnx] [--efficiency E] [--input-rate-hz R] [--composition ...]
                                          the ttbar cut per target efficiency and the rates per class it keeps

Failures are read from the Dagster instance's runs and events, whichever way the runs were executed. A run
that this machine executed in-process (``lhc backfill --in-process``, ``make run``) and whose process died is
marked failed the next time ``lhc backfill`` or ``lhc failures`` runs; a failed run the daemon decided to retry
but never did (``dagster_internals.missed_retries``) is handed back to it then too.

A backfill is submitted to the instance as an asset backfill of raw_events, hlf_features and llf_features and
executed by the daemon (one run per contiguous range of up to 1,000 partitions, i.e. one Spark job over many
files), then
followed here: each partition is reported as it is materialized or fails. Exit status: 0 when every partition
was materialized, 1 when some failed or did not finish, 2 on a usage problem.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime

from lhc_assets.cli import trigger_menu
from lhc_assets.physics.schema import SAMPLES

UI_URL_ENV = "LHC_UI_URL"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lhc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("backfill", help="materialize the ingestion assets for many input files")
    target = b.add_mutually_exclusive_group(required=True)
    target.add_argument("--all", action="store_true", help="every input file")
    target.add_argument("--sample", nargs="+", choices=sorted(SAMPLES), help="the files of these samples")
    target.add_argument("--partitions", nargs="+", metavar="KEY", help="these partition keys")
    target.add_argument("--failed", action="store_true", help="the partitions `lhc failures` lists")
    b.add_argument("--missing", action="store_true", help="skip partitions already materialized")
    b.add_argument("--partitions-per-run", type=_at_least(1), metavar="N", default=None,
                   help="at most N partitions per run (1: one run per file, each failed, killed or retried on its "
                   "own; default 1,000: one Spark job over many files, the fastest)")
    b.add_argument("--retries", type=_at_least(0), metavar="N", default=None,
                   help="the daemon retries a failed run up to N times (a run whose process died, too)")
    b.add_argument("--in-process", action="store_true", help="execute here rather than in the Dagster daemon")
    b.add_argument("--no-wait", action="store_true", help="submit to the daemon and return")
    b.add_argument("--timeout", type=float, default=None, help="stop following after this many seconds")
    b.add_argument("--verbose", action="store_true", help="with --in-process: Dagster's events on the console")

    f = sub.add_parser("failures", help="list failed partitions")
    f.add_argument("--all", action="store_true", help="every recorded failure, also those materialized since")
    f.add_argument("--json", action="store_true", help="one JSON object per line")

    g = sub.add_parser("gc", help="remove staging of dead runs and old versions under the data root")
    g.add_argument("--keep", type=int, default=None, help="previous versions kept per table/model/report "
                   "(default: LHC_KEEP_VERSIONS, else 1)")
    trigger_menu.add_parser(sub)
    return p


def _at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def _instance():
    from dagster import DagsterInstance

    from lhc_assets.cli.home import ensure_dagster_home

    ensure_dagster_home()
    return DagsterInstance.get()


def _storage():
    from resources.storage import storage_from_env

    return storage_from_env()


def _fail_dead_runs(instance) -> None:
    """Repairs of the instance's state: runs left started by a process that died, retries the daemon missed."""
    from lhc_assets.operations import dagster_internals, failures
    from resources.process import PID_TAG

    for run in failures.fail_dead_runs(instance):
        print(f"run {run.run_id[:8]} ({run.job_name}) was left started by a process that died "
              f"(pid {run.tags[PID_TAG]}): marked failed", file=sys.stderr)
    missed = dagster_internals.missed_retries(instance)
    if missed and dagster_internals.hand_back_missed_retries(instance, missed):
        names = ", ".join(r.run_id[:8] for r in missed)
        print(f"{len(missed)} failed run(s) the daemon was to retry but missed ({names}): handed back to it",
              file=sys.stderr)


def _ui_url() -> str:
    return os.environ.get(UI_URL_ENV, f"http://127.0.0.1:{os.environ.get('LHC_UI_PORT', '3000')}")


def _select(args, instance, storage) -> list[str] | None:
    """The partition keys the arguments name, in the instance's order; None after printing a usage problem."""
    from lhc_assets.operations import backfill, failures

    new = backfill.register_input_files(instance, storage)
    if new:
        print(f"registered {len(new)} new input file(s) as partitions")
    ordered = list(instance.get_dynamic_partitions(backfill.PARTITIONS_DEF_NAME))
    known = set(ordered)  # membership per key: a list would make --partitions with many keys quadratic
    if args.all:
        wanted = set(ordered)
    elif args.sample:
        wanted = {k for k in ordered if k.split("/", 1)[0] in args.sample}
    elif args.partitions:
        unknown = [k for k in args.partitions if k not in known]
        if unknown:
            print(f"lhc backfill: unknown partition(s): {', '.join(unknown)} (no such file under "
                  f"{storage.incoming}; keys are <sample>/<file stem>, listed in the UI)", file=sys.stderr)
            return None
        wanted = set(args.partitions)
    else:
        wanted = {r.partition for r in failures.outstanding(instance, failures.recorded_failures(instance))}
        wanted &= known
    if args.missing:
        wanted -= backfill.materialized_partitions(instance)
    return [k for k in ordered if k in wanted]


def cmd_backfill(args) -> int:
    from lhc_assets.defs.ingestion.assets import MAX_PARTITIONS_PER_RUN
    from lhc_assets.operations import backfill

    if args.in_process and args.retries is not None:
        print("lhc backfill: --retries needs the daemon (retries are Dagster's run retries); without --in-process "
              "the daemon executes the backfill", file=sys.stderr)
        return 2
    instance, storage = _instance(), _storage()
    _fail_dead_runs(instance)
    keys = _select(args, instance, storage)
    if keys is None:
        return 2
    if not keys:
        print("nothing to backfill")
        return 0
    if args.in_process:
        progress = backfill.materialize_in_process(instance, keys, print, verbose=args.verbose,
                                                   partitions_per_run=args.partitions_per_run)
        return _summary(progress, backfill_id=None)

    age = backfill.daemon_heartbeat_age(instance)
    daemon_up = age is not None and age < backfill.HEARTBEAT_MAX_AGE_S
    if not daemon_up and not args.no_wait:
        print(f"lhc backfill: no Dagster daemon is running for DAGSTER_HOME={os.environ['DAGSTER_HOME']} "
              "(start it with `make ui`, `dagster dev` or `dagster-daemon run -w workspace.yaml`), "
              "or run here with --in-process", file=sys.stderr)
        return 2
    since = time.time()
    # Runs planned here, never by the assets' single-run policy: a run over more than about 10,000 files takes the
    # daemon longer to create than run monitoring lets a run take to start (docs/performance.md, "Many partitions").
    per_run = args.partitions_per_run or MAX_PARTITIONS_PER_RUN
    backfill_id = backfill.submit(instance, keys, partitions_per_run=per_run, retries=args.retries)
    ordered = instance.get_dynamic_partitions(backfill.PARTITIONS_DEF_NAME)
    runs = f" in {len(backfill.plan_runs(ordered, set(keys), per_run))} run(s)"
    retries = f", each retried up to {args.retries} time(s)" if args.retries else ""
    print(f"backfill {backfill_id}: {len(keys)} partition(s) of raw_events, hlf_features, llf_features{runs}"
          f"{retries}; in the UI: {_ui_url()}/runs/b/{backfill_id}")
    if args.retries and not instance.run_retries_enabled:
        print("  warning: run retries are disabled in this instance's dagster.yaml (run_retries: enabled): failed "
              "runs will not be retried", file=sys.stderr)
    if args.no_wait:
        if not daemon_up:
            print("  no daemon is running: the backfill starts when one does")
        return 0
    try:
        progress = backfill.watch(instance, backfill_id, keys, since, print, timeout_s=args.timeout)
    except KeyboardInterrupt:
        print(f"\nstopped following; backfill {backfill_id} goes on in the daemon")
        return 1
    return _summary(progress, backfill_id)


def _summary(progress, backfill_id: str | None) -> int:
    counts = progress.counts()
    pending = progress.pending
    head = f"backfill {backfill_id}" if backfill_id else "backfill"
    print(f"{head}: {counts['materialized']} materialized, {counts['failed']} failed"
          + (f", {len(pending)} not finished" if pending else ""))
    if counts["failed"]:
        print("  list them with `lhc failures`; after fixing the files, `lhc backfill --failed`")
    return 0 if not pending and not counts["failed"] else 1


def cmd_failures(args) -> int:
    from lhc_assets.operations import failures

    instance = _instance()
    _fail_dead_runs(instance)
    recorded = failures.recorded_failures(instance)
    rows = recorded if args.all else failures.outstanding(instance, recorded)
    if args.json:
        for r in rows:
            print(r.to_json())
        return 0
    if not rows:
        print("no failed partitions" + ("" if args.all else " outstanding (lhc failures --all shows the history)"))
        return 0
    width = max(len(r.partition) for r in rows)
    print(f"{'partition':<{width}}  {'failed at':<19}  {'run':<8}  {'job':<16}  problem")
    for r in rows:
        when = datetime.fromtimestamp(r.failed_at).strftime("%Y-%m-%d %H:%M:%S")
        problem = " ".join(r.problem.split())
        job = "materialization" if r.job.startswith("__ASSET_JOB") else r.job  # as the UI names asset runs
        print(f"{r.partition:<{width}}  {when}  {r.run_id[:8]}  {job[:16]:<16}  {problem}")
    return 0


def cmd_gc(args) -> int:
    from resources.publisher import collect_garbage

    storage = _storage()
    try:
        reclaimed = collect_garbage(storage.root_path, args.keep)
    except ValueError as exc:  # a malformed LHC_KEEP_VERSIONS
        print(f"lhc gc: {exc}", file=sys.stderr)
        return 2
    for base, (staging, versions) in sorted(reclaimed.items()):
        where = base.relative_to(storage.root_path)
        print(f"{where}: {_size(staging)} of dead staging, {_size(versions)} of old versions")
    total = sum(a + b for a, b in reclaimed.values())
    print(f"reclaimed {_size(total)} under {storage.root_path}")
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "trigger-menu":
        return trigger_menu.run(args, _storage())
    return {"backfill": cmd_backfill, "failures": cmd_failures, "gc": cmd_gc}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
