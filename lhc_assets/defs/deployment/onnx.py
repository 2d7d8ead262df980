"""Stage 5a: every Keras classifier exported to ONNX for the high-level trigger, checked against Keras."""


import shutil

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetIn,
    Config,
    MetadataValue,
    asset,
    asset_check,
)
from pydantic import Field

from lhc_assets.defs.evaluation.scores import CLASS_NAMES, MODEL_INS, OWNERS
from lhc_assets.defs.metadata import markdown_table
from lhc_assets.ml.contract import KERAS_MODELS
from lhc_assets.spark.metering import StageMeter
from resources.model_io_manager import ExportedModels, export_staging
from resources.references import TableRef
from resources.storage import StorageResource

PARITY_TOLERANCE = 1e-5
SCORES_SUFFIX = ".scores.parquet"  # ONNX Runtime's probabilities on the test split, beside each .onnx
TEST_SETS = sorted({spec.test_set for spec in KERAS_MODELS.values()})


class OnnxExportConfig(Config):
    max_events: int | None = Field(default=20_000, ge=1, description=(
        "Test events each model is checked on (the first ones of its test split); unset: the whole split. The "
        "particle lists take 61 kB per event in memory."))
    timing_events: int = Field(default=256, ge=1, description="Test events the latency and throughput cycle over.")
    timing_seconds: float = Field(default=1.0, gt=0.0, description="Minimum seconds of batch-1,024 calls per runtime.")


def scores_table(labels, probabilities) -> pa.Table:
    """Class index and (N, classes) probabilities as a Parquet-ready table (what lhc trigger-menu reads)."""
    flat = pa.array(probabilities.astype("float32").ravel())
    return pa.table({"label": pa.array(labels.astype("int32")),
                     "probabilities": pa.FixedSizeListArray.from_arrays(flat, probabilities.shape[1]).cast(
                         pa.list_(pa.float32()))})


@asset(
    group_name="deployment",
    kinds={"onnx", "tensorflow"},
    owners=OWNERS,
    tags={"stage": "deployment"},
    ins={**MODEL_INS, **{name: AssetIn(dagster_type=TableRef) for name in TEST_SETS}},
    deps=["model_evaluation"],
    io_manager_key="model_io_manager",
    description=("Every Keras classifier exported to ONNX (opset 17, Keras 3's export through tf2onnx) for the "
                 "high-level trigger, as evaluated by model_evaluation; checked against Keras on its test split "
                 "(largest absolute difference of any class probability), with ONNX Runtime's CPU latency per event "
                 "(batch 1, one thread) and throughput (batch 1,024) next to Keras'. One versioned directory: "
                 "<model>.onnx, <model>.scores.parquet (ONNX probabilities on the test split, for lhc trigger-menu "
                 "--source onnx) and manifest.json."),
)
def onnx_models(context: AssetExecutionContext, config: OnnxExportConfig, storage: StorageResource,
                **inputs: TableRef) -> ExportedModels:
    from lhc_assets.ml.deployment.onnx_export import OPSET, export_classifier
    from lhc_assets.ml.models import load
    from lhc_assets.ml.readers import load_arrays

    meter = StageMeter(1)
    manifest: dict = {"opset": OPSET, "classes": CLASS_NAMES, "models": {}}
    out, events = export_staging(storage, "onnx_models"), 0
    try:
        for name, spec in KERAS_MODELS.items():
            x, labels = load_arrays(inputs[spec.test_set].path, spec.inputs, config.max_events)
            exported = export_classifier(name, load(inputs[name].path), x, labels, out, config.timing_events,
                                         config.timing_seconds)
            pq.write_table(scores_table(exported.labels, exported.probabilities), out / f"{name}{SCORES_SUFFIX}")
            manifest["models"][name] = {**exported.summary(), "scores": f"{name}{SCORES_SUFFIX}",
                                        "keras_model": str(inputs[name].path), "test_set": spec.test_set}
            events += exported.events
            context.log.info(f"{name}: exported, max |ONNX - Keras| = {exported.max_abs_difference:.2e} on "
                             f"{exported.events} events; batch 1 {exported.onnx.latency_ms_batch1:.3f} ms")
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return ExportedModels(out, manifest, metadata=_metadata(manifest, meter.metadata(events)))


def _metadata(manifest: dict, cost: dict) -> dict:
    models = manifest["models"]
    rows = [[name, m["events"], f"{m['max_abs_difference']:.1e}", f"{m['onnx']['latency_ms_batch1']:.3f}",
             f"{m['keras']['latency_ms_batch1']:.3f}", f"{m['onnx']['events_per_s_batch1024']:,.0f}",
             f"{m['keras']['events_per_s_batch1024']:,.0f}", f"{m['speedup_batch1']:.1f}x",
             f"{m['speedup_batch1024']:.1f}x"] for name, m in models.items()]
    return {
        "export": markdown_table(["model", "test events", "max abs diff", "ONNX ms (batch 1)", "Keras ms (batch 1)",
                                  "ONNX events/s (1,024)", "Keras events/s (1,024)", "speedup 1", "speedup 1,024"],
                                 rows),
        "max_abs_difference": MetadataValue.float(max(m["max_abs_difference"] for m in models.values())),
        "opset": manifest["opset"],
        **{f"latency_ms_batch1_{name}": MetadataValue.float(m["onnx"]["latency_ms_batch1"])
           for name, m in models.items()},
        **{f"events_per_s_batch1024_{name}": MetadataValue.float(m["onnx"]["events_per_s_batch1024"])
           for name, m in models.items()},
        **cost,
    }


@asset_check(asset=onnx_models, description=(
    f"ONNX Runtime reproduces Keras: the largest absolute difference of any class probability of any test event "
    f"is below {PARITY_TOLERANCE:g} for every exported model."))
def onnx_matches_keras(onnx_models: dict) -> AssetCheckResult:
    diffs = {name: m["max_abs_difference"] for name, m in onnx_models["models"].items()}
    return AssetCheckResult(passed=all(d < PARITY_TOLERANCE for d in diffs.values()), metadata={
        "max_abs_difference": MetadataValue.json(diffs), "tolerance": PARITY_TOLERANCE})
