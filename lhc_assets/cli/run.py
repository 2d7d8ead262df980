"""``lhc-run``: what ``make run`` does. Generate the sample under the data root (skipping files that
already exist), materialize the whole asset graph (ingestion, training data, models, evaluation), print a
summary with the model comparison. Safe to re-run: a stage runs only where Dagster reports its assets
missing or stale, and the summary's counts come from the materializations recorded in the Dagster instance.

``--source pythia`` (``make physics``) generates the sample with the Pythia engine instead of the toy and ends
with the HLF classifier's fixed-point FPGA emulation (``--fpga`` asks for it with the toy too);
``--models design`` trains with DESIGN.md's settings (learning rate 1e-3, whole particle lists) instead of
``make run``'s fast ones.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from lhc_assets.cli import generate
from lhc_assets.cli.home import ensure_dagster_home
from lhc_assets.ml.contract import FAST_SEQUENCE_STEPS, KERAS_MODELS
from lhc_assets.physics.schema import SAMPLES
from resources.storage import storage_from_env

if TYPE_CHECKING:
    from dagster import DagsterInstance, Definitions

    from lhc_assets.operations.dagster_internals import AssetStatus

# Sample sizes for `make run`, chosen so the whole graph fits in about ten minutes on two cores. QCD
# passes the selection about six times less often than ttbar and W+jets, and the training sets are
# balanced to the rarest class, so QCD gets more files.
DEFAULT_FILES_PER_SAMPLE = 3
QCD_FILE_FACTOR = 3
DEFAULT_EVENTS_PER_FILE = 3000
DEFAULT_SEED = 42
# `--source pythia` (`make physics`, about 30 minutes on two cores): 2,000 events per file. After the
# selection QCD keeps about 10 % of its (filtered) events, ttbar and W+jets about 45 %, and Pythia makes QCD
# three times slower (docs/physics.md); QCD gets five times the files, so the classes come out about even.
PYTHIA_FILES_PER_SAMPLE = 3
PYTHIA_QCD_FILE_FACTOR = 5
PYTHIA_EVENTS_PER_FILE = 2000
# The console shows this command's own lines (each stage, one line per failure naming the file or step); every
# Dagster event, stack traces included, stays in the instance (the UI shows it). `--verbose` prints them too.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
# `make run` uses a small search grid, and a learning rate of 3e-3 for the GRU and image models: with DESIGN.md's 1e-3
# their six epochs over this small sample (about 340 steps) leave them well short of the HLF classifier
# (docs/performance.md). The inclusive classifier reads the 128 particles nearest the lepton: 3.7x faster
# at the same test AUC here (docs/performance.md). Everything else is DESIGN.md's defaults.
MODELS_RUN_CONFIG = {"ops": {
    "hlf_hyperparameter_search": {"config": {"batch_sizes": [128], "epochs": [5],
                                             "hidden_units": [[50, 100], [20], [10]],
                                             "sample_fraction": 0.25, "folds": 3}},
    "particle_sequence_classifier": {"config": {"learning_rate": 3e-3}},
    "inclusive_classifier": {"config": {"learning_rate": 3e-3, "sequence_steps": FAST_SEQUENCE_STEPS}},
    "image_classifier": {"config": {"learning_rate": 3e-3}},
}}
# `--models design`: DESIGN.md's training settings for every model (the assets' defaults), with a small search
# grid: the full grid (243 points x folds) would take hours and does not change hlf_classifier's architecture.
DESIGN_MODELS_RUN_CONFIG = {"ops": {
    "hlf_hyperparameter_search": {"config": {"batch_sizes": [100], "epochs": [10],
                                             "hidden_units": [[50, 100], [20, 50], [10]], "folds": 3}},
}}
# `--quick`: every stage, tiny settings (a smoke test of the whole graph, not a result).
QUICK_MODELS_RUN_CONFIG = {"ops": {
    "hlf_hyperparameter_search": {"config": {"batch_sizes": [64], "epochs": [1], "hidden_units": [[8], [4], [4]],
                                             "sample_fraction": 1.0, "folds": 2}},
    "hlf_classifier": {"config": {"epochs": 2}},
    "particle_sequence_classifier": {"config": {"epochs": 1}},
    "inclusive_classifier": {"config": {"epochs": 1}},
    "image_classifier": {"config": {"epochs": 1, "eta_bins": 32, "phi_bins": 20, "filters": [4, 8]}},
    "random_forest_baseline": {"config": {"num_trees": 10, "max_depth": 5}},
    "onnx_models": {"config": {"timing_events": 64, "timing_seconds": 0.1}},
}}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lhc-run", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--source", choices=generate.ENGINES, default=os.environ.get("LHC_SOURCE", "toy"),
                   help="event engine of the generated sample (default: toy; LHC_SOURCE)")
    p.add_argument("--files-per-sample", type=int, default=_env_int("LHC_SAMPLE_FILES"),
                   help=f"files of ttbar and W+jets; QCD gets {QCD_FILE_FACTOR}x (pythia: {PYTHIA_QCD_FILE_FACTOR}x) "
                        f"(default {DEFAULT_FILES_PER_SAMPLE}; pythia {PYTHIA_FILES_PER_SAMPLE})")
    p.add_argument("--events-per-file", type=int, default=_env_int("LHC_SAMPLE_EVENTS"),
                   help=f"(default {DEFAULT_EVENTS_PER_FILE}; pythia {PYTHIA_EVENTS_PER_FILE})")
    p.add_argument("--seed", type=int, default=int(os.environ.get("LHC_SAMPLE_SEED", DEFAULT_SEED)))
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--models", choices=("fast", "design"), default="fast",
                   help="fast: make run's settings; design: DESIGN.md's (slower, for results)")
    p.add_argument("--quick", action="store_true", help="tiny model settings (smoke test of the whole graph)")
    p.add_argument("--fpga", action=argparse.BooleanOptionalAction, default=None,
                   help="also the HLF classifier's hls4ml fixed-point emulation (fpga_hlf_classifier; about a minute; "
                        "default: with --source pythia)")
    p.add_argument("--verbose", action="store_true", help="Dagster's events and stack traces on the console too")
    return p


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def sample_plan(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """(comma-separated samples, files per sample, events per file) to generate."""
    pythia = args.source == "pythia"
    files = args.files_per_sample
    if files is None:
        files = PYTHIA_FILES_PER_SAMPLE if pythia else DEFAULT_FILES_PER_SAMPLE
    events = args.events_per_file
    if events is None:
        events = PYTHIA_EVENTS_PER_FILE if pythia else DEFAULT_EVENTS_PER_FILE
    qcd_factor = PYTHIA_QCD_FILE_FACTOR if pythia else QCD_FILE_FACTOR
    return [("ttbar,wjets", files, events), ("qcd", files * qcd_factor, events)]


def models_run_config(args: argparse.Namespace) -> dict:
    if args.quick:
        return QUICK_MODELS_RUN_CONFIG
    return DESIGN_MODELS_RUN_CONFIG if args.models == "design" else MODELS_RUN_CONFIG


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        global QUIET
        QUIET = {}  # read by every stage below
    if args.source not in generate.ENGINES:  # a default from LHC_SOURCE is not checked by argparse
        parser.error(f"unknown source {args.source!r} (LHC_SOURCE); choose from {', '.join(generate.ENGINES)}")
    for name in ("files_per_sample", "events_per_file"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    ensure_dagster_home()
    storage = storage_from_env()
    storage.ensure_layout()
    print(f"data root: {storage.root_path} (source: {args.source})")

    t0 = time.perf_counter()
    rc = generate_sample(storage, args)
    if rc:
        return rc

    ok = materialize_ingestion(storage)
    if ok:
        ok = materialize_training_data()
    if ok:
        ok = materialize_models(models_run_config(args))
    if ok:
        ok = materialize_file_scores()
    if ok and (args.fpga if args.fpga is not None else args.source == "pythia"):
        ok = materialize_fpga()
    materialize_performance()

    print(f"\nsummary ({time.perf_counter() - t0:.0f} s)")
    print_summary(storage)
    return 0 if ok else 1


def generate_sample(storage, args: argparse.Namespace) -> int:
    """The input files of ``sample_plan`` under ``incoming/`` with the chosen engine; existing files are kept."""
    for samples, files, events in sample_plan(args):
        rc = generate.main([
            "--out", str(storage.incoming), "--engine", args.source, "--events-per-file", str(events),
            "--files-per-sample", str(files), "--samples", samples, "--seed", str(args.seed),
            "--jobs", str(max(1, args.jobs)), "--skip-existing",
        ])
        if rc:
            return rc
    return 0


def materialize_ingestion(storage) -> bool:
    """Register every input file as a partition and materialize the ingestion graph where it is missing."""
    from dagster import DagsterInstance

    from lhc_assets.operations import backfill

    instance = DagsterInstance.get()
    backfill.register_input_files(instance, storage)
    keys = sorted(storage.input_files())
    missing = set(keys) - backfill.materialized_partitions(instance)
    if not missing:
        print(f"ingestion: all {len(keys)} partitions already materialized")
        return True
    progress = backfill.materialize_in_process(instance, sorted(missing), print, verbose=not QUIET)
    return not progress.pending and not progress.counts()[backfill.FAILED]


def out_of_date(defs: Definitions, instance: DagsterInstance, job_name: str) -> dict[str, AssetStatus]:
    """The assets of the unpartitioned job ``job_name`` that Dagster reports missing or stale, upstream first
    (empty: the stage is up to date). Stale: a new code version, or an input (any partition of a partitioned
    one) materialized after the materialization the asset was computed from."""
    from lhc_assets.operations.dagster_internals import stale_statuses

    graph = defs.resolve_asset_graph()
    selected = defs.resolve_job_def(job_name).asset_layer.selected_asset_keys
    keys = [k for k in graph.toposorted_asset_keys if k in selected]
    statuses = stale_statuses(instance, graph, [(k, None) for k in keys])
    return {k.to_user_string(): s for (k, _), s in statuses.items() if not s.up_to_date}


def out_of_date_partitions(defs: Definitions, instance: DagsterInstance, job_name: str) -> list[str]:
    """The partitions, in the instance's order, in which an asset of the partitioned job ``job_name`` is
    missing or stale (Dagster's status per partition)."""
    from lhc_assets.operations.dagster_internals import stale_statuses

    job = defs.resolve_job_def(job_name)
    keys = sorted(job.asset_layer.selected_asset_keys)
    partitions = job.partitions_def.get_partition_keys(dynamic_partitions_store=instance)
    statuses = stale_statuses(instance, defs.resolve_asset_graph(), [(k, p) for p in partitions for k in keys])
    return [p for p in partitions if not all(statuses[(k, p)].up_to_date for k in keys)]


def _why(stale: dict[str, AssetStatus]) -> str:
    """The first reason of the most upstream asset, e.g. 'undersampled_dataset: has a new dependency
    materialization (hlf_features qcd/qcd_seed42_0009), and 3 more'."""
    name, status = next(iter(stale.items()))
    reason = status.causes[0] if status.causes else status.describe()
    return f"{name}: {reason}" + (f", and {len(stale) - 1} more" if len(stale) > 1 else "")


def _defs_and_instance(
        defs: Definitions | None, instance: DagsterInstance | None) -> tuple[Definitions, DagsterInstance]:
    """The code location and instance of the environment, unless given (the tests pass their own)."""
    if defs is None:
        from lhc_assets.definitions import defs
    if instance is None:
        from dagster import DagsterInstance

        instance = DagsterInstance.get()
    return defs, instance


def materialize_training_data(defs: Definitions | None = None, instance: DagsterInstance | None = None) -> bool:
    """Materialize the training-data assets unless Dagster reports every one of them up to date."""
    defs, instance = _defs_and_instance(defs, instance)
    stale = out_of_date(defs, instance, "training_data_job")
    if not stale:
        print("training data: up to date with the feature tables")
        return True
    print(f"training data: undersampling, scalers and the Petastorm datasets ({_why(stale)})")
    result = defs.resolve_job_def("training_data_job").execute_in_process(instance=instance, raise_on_error=False,
                                                                      run_config=QUIET)
    _report_failures(result)
    return result.success


def materialize_performance(defs: Definitions | None = None, instance: DagsterInstance | None = None) -> bool:
    """Collect what every stage recorded of its speed into pipeline_performance and print it per stage."""
    defs, instance = _defs_and_instance(defs, instance)
    result = defs.resolve_job_def("performance_job").execute_in_process(instance=instance, raise_on_error=False,
                                                                        run_config=QUIET)
    _report_failures(result)
    if not result.success:
        return False
    report = defs.load_asset_value("pipeline_performance", instance=instance)
    print(f"performance per stage (pipeline_performance): {'events/s per core':>18s} {'wall s':>8s}")
    for stage, s in report["stages"].items():
        latest = s["latest"]
        flag = "  slower than its recent runs" if s["slower"] else ""
        print(f"  {stage:42s} {latest['events_per_s_per_core']:18,.1f} {latest['wall_seconds']:8.1f}{flag}")
    return True


def _report_failures(result) -> None:
    for event in result.all_events:
        if event.is_step_failure:
            print(f"  FAILED {event.step_key}: {event.step_failure_data.error.message.strip()}")
        elif event.event_type_value == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed:
            print(f"  CHECK FAILED {event.event_specific_data.check_name}")


def materialize_models(run_config: dict, defs: Definitions | None = None,
                       instance: DagsterInstance | None = None) -> bool:
    """Materialize the models and their evaluation unless Dagster reports every one of them up to date."""
    defs, instance = _defs_and_instance(defs, instance)
    stale = out_of_date(defs, instance, "models_job")
    if not stale:
        print("models: up to date with the training data")
        return True
    print(f"models: hyperparameter search, {len(KERAS_MODELS)} Keras classifiers, random forest, Spark scoring, "
          f"evaluation, ONNX export ({_why(stale)})")
    result = defs.resolve_job_def("models_job").execute_in_process(
        instance=instance, raise_on_error=False, run_config={**QUIET, **run_config})
    _report_failures(result)
    return result.success


def materialize_fpga(defs: Definitions | None = None, instance: DagsterInstance | None = None) -> bool:
    """The HLF classifier's fixed-point emulation, unless Dagster reports it up to date with the classifier."""
    from dagster import AssetKey

    defs, instance = _defs_and_instance(defs, instance)
    stale = out_of_date(defs, instance, "deployment_job")
    if "fpga_hlf_classifier" not in stale:
        print("FPGA emulation: up to date with the HLF classifier")
        return True
    print(f"FPGA emulation: the HLF classifier in hls4ml's fixed-point C simulation, a precision scan "
          f"({_why({'fpga_hlf_classifier': stale['fpga_hlf_classifier']})})")
    result = defs.resolve_job_def("deployment_job").execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET, asset_selection=[AssetKey("fpga_hlf_classifier")])
    _report_failures(result)
    return result.success


def materialize_file_scores(defs: Definitions | None = None, instance: DagsterInstance | None = None) -> bool:
    """Score the input files whose scores are missing or stale (new file, new features or new models), one run
    per contiguous range of partitions."""
    from lhc_assets.operations.backfill import contiguous_ranges

    defs, instance = _defs_and_instance(defs, instance)
    job = defs.resolve_job_def("file_scores_job")
    keys = job.partitions_def.get_partition_keys(dynamic_partitions_store=instance)
    if not keys:
        return True
    todo = out_of_date_partitions(defs, instance, "file_scores_job")
    if not todo:
        print("file scores: up to date with the models")
        return True
    which = f"the {len(keys)}" if len(todo) == len(keys) else f"{len(todo)} of the {len(keys)}"
    print(f"file scores: the Keras classifiers over every selected event of {which} input files")
    ok = True
    for first, last in contiguous_ranges(keys, set(todo)):
        result = job.execute_in_process(
            instance=instance, raise_on_error=False, run_config=QUIET,
            tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last})
        _report_failures(result)
        ok = ok and result.success
    return ok


def print_model_comparison() -> None:
    """The model_evaluation report, loaded through its IO manager as any asset value."""
    from dagster import AssetKey, DagsterInstance

    from lhc_assets.definitions import defs

    instance = DagsterInstance.get()
    latest = instance.get_latest_materialization_event(AssetKey("model_evaluation"))
    if latest is None:
        return
    report = defs.load_asset_value("model_evaluation", instance=instance)
    classes = report["classes"]
    path = latest.asset_materialization.metadata.get("report")
    print(f"\n  model comparison on the test split (model_evaluation{f': {path.value}' if path else ''})")
    print(f"  {'model':30s} " + " ".join(f"{'AUC ' + c:>11s}" for c in classes) + f" {'accuracy':>9s}")
    for name, r in report["models"].items():
        print(f"  {name:30s} " + " ".join(f"{r['auc'][c]:11.4f}" for c in classes) + f" {r['accuracy']:9.4f}")
    signal = report["models"][next(iter(report["models"]))]["signal"]
    print(f"\n  background rejection (1 / efficiency) at fixed {signal} efficiency")
    for name, r in report["models"].items():
        cells = [f"{row['signal_efficiency_target']:.0%}: " + ", ".join(
            f"{b} {_rejection(v['rejection'])}" for b, v in row["background"].items()) for row in r["rejection"] or []]
        print(f"  {name:30s} " + " | ".join(cells))


def _rejection(value: float | None) -> str:
    return "inf" if value is None else f"{value:.1f}"




def partition_event_counts(instance: DagsterInstance, keys: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(events read, events selected) of each partition of ``keys`` with a materialized hlf_features, from
    the metadata of its latest materialization (the ingestion records each partition's own counts there)."""
    from dagster import AssetKey, AssetRecordsFilter

    wanted, metadata, cursor = set(keys), {}, None
    while wanted - metadata.keys():  # newest first: the first record seen of a partition is its latest
        page = instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey("hlf_features")),
                                               limit=1000, cursor=cursor)
        for record in page.records:
            if record.partition_key in wanted:
                metadata.setdefault(record.partition_key, record.asset_materialization.metadata)
        if not page.has_more:
            break
        cursor = page.cursor
    counts = {}
    for key, meta in metadata.items():
        if "events_read" in meta and "events_selected" in meta:
            counts[key] = (meta["events_read"].value, meta["events_selected"].value)
    return counts


def dataset_sizes(instance: DagsterInstance) -> dict[str, int] | None:
    """Events of train_set and test_set, from their latest materializations' metadata (None: not built)."""
    from dagster import AssetKey

    sizes = {}
    for name in ("train_set", "test_set"):
        event = instance.get_latest_materialization_event(AssetKey(name))
        events = event and event.asset_materialization.metadata.get("events")
        if events is None:
            return None
        sizes[name] = events.value
    return sizes


def print_summary(storage, instance: DagsterInstance | None = None) -> None:
    """Events read and selected per sample and the training data's size, from the materializations
    recorded in the Dagster instance; then the model comparison."""
    if instance is None:
        from dagster import DagsterInstance

        instance = DagsterInstance.get()
    inputs = storage.input_files()
    counts = partition_event_counts(instance, inputs)
    print(f"  {'sample':8s} {'files':>5s} {'events':>8s} {'selected':>9s} {'efficiency':>10s}")
    for sample in SAMPLES:
        keys = [k for k, (s, _) in inputs.items() if s == sample]
        read = sum(counts.get(k, (0, 0))[0] for k in keys)
        selected = sum(counts.get(k, (0, 0))[1] for k in keys)
        eff = f"{selected / read:.3f}" if read else "-"
        print(f"  {sample:8s} {len(keys):5d} {read:8d} {selected:9d} {eff:>10s}")
    sizes = dataset_sizes(instance)
    if sizes:
        print(f"  training data: {sizes['train_set']} train / {sizes['test_set']} test events, balanced over "
              f"{len(SAMPLES)} classes (Petastorm datasets: train_set, test_set, hlf_train_set, hlf_test_set)")
    print(f"  warehouse: {storage.warehouse}")
    print_model_comparison()
    print_deployment(storage)


def _manifest(storage, asset: str) -> dict | None:
    """An export asset's manifest.json (onnx_models, fpga_hlf_classifier), None if it was never materialized."""
    import json

    from resources.model_io_manager import ModelNotTrained, model_ref

    try:
        return json.loads(model_ref(storage, asset).path.read_text())
    except ModelNotTrained:
        return None


def print_deployment(storage) -> None:
    """The ONNX export's parity and latency per model, the trigger menu's headline at 99 % ttbar efficiency, and the
    FPGA emulation's chosen precision."""
    from lhc_assets.cli import trigger_menu

    onnx = _manifest(storage, "onnx_models")
    if onnx:
        print(f"\n  ONNX export (onnx_models; ONNX Runtime, one thread): {'max |ONNX - Keras|':>18s} "
              f"{'ms/event':>9s} {'events/s (1,024)':>17s}")
        for name, m in onnx["models"].items():
            print(f"  {name:30s} {m['max_abs_difference']:18.1e} {m['onnx']['latency_ms_batch1']:9.3f} "
                  f"{m['onnx']['events_per_s_batch1024']:17,.0f}")
        print("\n  trigger menu at 99 % ttbar efficiency (lhc trigger-menu; the study's single-lepton stream, "
              "1 kHz):")
        trigger_menu.print_headlines(storage, [0.99], indent="  ")
    fpga = _manifest(storage, "fpga_hlf_classifier")
    if fpga:
        print(f"\n  FPGA emulation of the HLF classifier (fpga_hlf_classifier): chosen precision "
              f"{fpga['chosen_precision'] or 'none'}: {fpga['scan']['choice']['reason']}")


if __name__ == "__main__":
    sys.exit(main())
