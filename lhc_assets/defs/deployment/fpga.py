"""Stage 5b: the HLF classifier in hls4ml's bit-accurate fixed-point emulation for the L1 FPGA trigger."""


import shutil

import pyarrow.parquet as pq
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    Config,
    MetadataValue,
    asset,
    asset_check,
)
from pydantic import Field

from lhc_assets.defs.deployment.onnx import SCORES_SUFFIX, scores_table
from lhc_assets.defs.evaluation.scores import OWNERS
from lhc_assets.defs.metadata import markdown_table
from lhc_assets.spark.metering import StageMeter
from resources.model_io_manager import ExportedModels, export_staging, model_scratch
from resources.references import ModelRef, TableRef
from resources.storage import StorageResource

MODEL = "hlf_classifier"
HLS_PROJECT = "hls_project"  # the chosen precision's HLS project: the C++ a vendor tool would synthesise


class FpgaEmulationConfig(Config):
    precisions: list[str] = Field(default=["ap_fixed<16,6>", "ap_fixed<12,4>", "ap_fixed<8,3>"], description=(
        "Fixed-point types of the data path (inputs, weights, biases, activations, logits); rounding to nearest and "
        "saturation unless the type names its modes."))
    efficiency: float = Field(default=0.95, gt=0.0, le=1.0, description=(
        "The rule's ttbar efficiency: the chosen precision is the smallest whose background rejection there is "
        "within `tolerance` of the float model's for every background."))
    tolerance: float = Field(default=0.02, ge=0.0, description="Relative rejection loss allowed by the rule.")
    two_sided: bool = Field(default=False, description=(
        "Also refuse a precision whose rejection beats float's by more than the tolerance (a chance gain on a "
        "finite sample); off: only losses count."))
    max_events: int | None = Field(default=None, ge=1, description="Test events (first ones); unset: all.")


def _slug(precision: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in precision).strip("_")


@asset(
    group_name="deployment",
    kinds={"hls4ml", "cpp"},
    owners=OWNERS,
    tags={"stage": "deployment"},
    ins={MODEL: AssetIn(dagster_type=ModelRef), "hlf_test_set": AssetIn(dagster_type=TableRef)},
    deps=["model_evaluation"],
    io_manager_key="model_io_manager",
    description=("The HLF classifier converted with hls4ml 1.3.0 and compiled in its bit-accurate C simulation "
                 "(g++; no vendor tool): a scan of fixed-point precisions with, per precision, the AUC per class, "
                 "the background rejection at 99 / 95 / 90 % ttbar efficiency against the float model, the "
                 "largest probability difference, the C simulation's events/s and a count of multipliers, DSPs "
                 "and weight bits (hls4ml gives no resource estimate without synthesis). The precision chosen by "
                 "the configured rule (default: the smallest whose rejection at 95 % is within 2 % of float's); "
                 "its HLS project, the scan (manifest.json) and the test-split scores of every precision, versioned."),
)
def fpga_hlf_classifier(context: AssetExecutionContext, config: FpgaEmulationConfig, storage: StorageResource,
                        hlf_classifier: ModelRef, hlf_test_set: TableRef) -> ExportedModels:
    from lhc_assets.ml.deployment.fpga import ChoiceRule, scan_precisions
    from lhc_assets.ml.models import load
    from lhc_assets.ml.readers import load_arrays

    meter = StageMeter(1)
    x, labels = load_arrays(hlf_test_set.path, "hlf", config.max_events)
    rule = ChoiceRule(config.efficiency, config.tolerance, config.two_sided)
    out = export_staging(storage, "fpga_hlf_classifier")
    try:
        with model_scratch(storage, "fpga_hlf_classifier") as scratch:
            model = load(hlf_classifier.path)
            scan = scan_precisions(model, x, labels, config.precisions, work_dir=scratch, rule=rule,
                                   log=context.log.info)
            models = {}
            for precision, graph in [("float", None), *scan.designs.items()]:
                probabilities = (model.predict(x, batch_size=4096, verbose=0) if graph is None
                                 else graph.predict(x).reshape(len(x), -1))
                name = f"{MODEL}@{precision}"
                pq.write_table(scores_table(labels.argmax(axis=1), probabilities),
                               out / f"{_slug(precision)}{SCORES_SUFFIX}")
                models[name] = {"precision": precision, "scores": f"{_slug(precision)}{SCORES_SUFFIX}"}
            if scan.choice.precision is not None:
                shutil.copytree(scan.result(scan.choice.precision).project_dir, out / HLS_PROJECT,
                                ignore=shutil.ignore_patterns("*.so", "*.o"))
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    report = scan.to_dict()
    for result in report["fixed"]:  # the scratch projects are gone; the chosen one is published as hls_project/
        result["project_dir"] = HLS_PROJECT if result["precision"] == scan.choice.precision else None
    context.log.info(f"chosen precision: {scan.choice.precision} ({scan.choice.reason})")
    manifest = {"model": MODEL, "keras_model": str(hlf_classifier.path), "chosen_precision": scan.choice.precision,
                "hls_project": HLS_PROJECT if scan.choice.precision else None, "models": models, "scan": report}
    return ExportedModels(out, manifest, metadata={**_metadata(scan), **meter.metadata(len(x) * len(models))})


def _rejections(result, efficiency: float) -> str:
    return ", ".join("inf" if r is None else f"{r:.3g}" for r in result.rejection_at(efficiency).values())


def _metadata(scan) -> dict:
    rows = []
    for r in [scan.float_model, *scan.fixed]:
        res = r.resources
        rows.append([r.precision, *(f"{r.auc[c]:.4f}" for c in scan.class_names),
                     *(_rejections(r, e) for e in scan.efficiencies),
                     "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.4f}", f"{r.events_per_second:,.0f}",
                     "-" if res is None else res.dsp_multiplications, "-" if res is None else f"{res.weight_bits:,}"])
    backgrounds = [c for c in scan.class_names if c != scan.signal]
    return {
        "precision_scan": markdown_table(
            ["precision", *(f"AUC {c}" for c in scan.class_names),
             *(f"rejection at {e:.0%} ({', '.join(backgrounds)})" for e in scan.efficiencies),
             "max abs diff", "events/s", "DSPs (our count)", "weight bits"], rows),
        "chosen_precision": scan.choice.precision or "none",
        "choice_rule": scan.choice.rule,
        "choice_reason": scan.choice.reason,
        "test_events": scan.n_events,
        "hls4ml_version": scan.hls4ml_version,
        "resource_note": scan.hls4ml_resource_note,
        "compile_wall_seconds": MetadataValue.float(round(scan.timings.get("compile_wall_seconds", 0.0), 1)),
    }


@asset_check(asset=fpga_hlf_classifier, description=(
    "Some scanned fixed-point precision passes the choice rule (its background rejection at the rule's ttbar "
    "efficiency within the tolerance of the float model's); warns otherwise: scan wider types."))
def fixed_point_precision_found(fpga_hlf_classifier: dict) -> AssetCheckResult:
    chosen = fpga_hlf_classifier["chosen_precision"]
    scan = fpga_hlf_classifier["scan"]
    return AssetCheckResult(passed=chosen is not None, severity=AssetCheckSeverity.WARN, metadata={
        "chosen_precision": chosen or "none", "reason": scan["choice"]["reason"]})
