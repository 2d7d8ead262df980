"""Benchmark of the trigger-ready models: ONNX Runtime against Keras per model, and the hls4ml C simulation.

Prints one JSON object. Per Keras classifier: exported to ONNX (``lhc_assets.ml.deployment.onnx_export``), the
largest |ONNX - Keras| probability on the test events, the latency of one event (batch 1, median and p99 of many
calls) and the throughput with batches of 1,024 events, for ONNX Runtime and for Keras (the model as one
tf.function), both on ONE thread (TensorFlow's intra-op pool is set to 1 before it starts), so the speedup is per
core. Events are the test split's, each particle list cut to its real rows (the longest in a batch), as the
trigger would feed them. For the HLF classifier, hls4ml's bit-accurate C simulation (``lhc_assets.ml.deployment.
fpga``) at the scanned precisions: events/s of the compiled emulation.

    python benchmarks/deployment.py [--quick] [--data-root PATH]

``--data-root``: a data root with trained models and test sets (e.g. data-physics-study, or data after
``make run``): its models are measured. Without it, a small sample is generated and ingested in a temporary root
and the models are built untrained (the timings do not depend on the weights; the parity is then on untrained
models).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _one_thread() -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def _trained(root: Path) -> tuple[dict, dict]:
    from lhc_assets.ml.contract import KERAS_MODELS
    from lhc_assets.ml.models import load
    from resources.io_manager import materialized_path
    from resources.model_io_manager import model_path
    from resources.storage import StorageResource

    storage = StorageResource(root=str(root))
    models = {name: load(model_path(storage, name)) for name in KERAS_MODELS}
    tests = {spec.test_set: materialized_path(storage, spec.test_set) for spec in KERAS_MODELS.values()}
    missing = [name for name, path in tests.items() if path is None]
    if missing:
        raise SystemExit(f"{root}: {', '.join(missing)} not materialized")
    return models, tests


def _untrained(root: Path) -> tuple[dict, dict]:
    from _pipeline import prepare_training_data

    from lhc_assets.ml.contract import FAST_SEQUENCE_STEPS, KERAS_MODELS

    prepared = prepare_training_data(root, events_per_file=1000, files=2)
    scalers = json.loads(Path(prepared["feature_scalers_file"]).read_text())
    models = {}
    for name, spec in KERAS_MODELS.items():
        kwargs = {"scalers": scalers} if spec.needs_scalers else {}
        if name == "inclusive_classifier":  # as make run trains it
            kwargs["sequence_steps"] = FAST_SEQUENCE_STEPS
        models[name] = spec.build(seed=1, **kwargs)
    return models, {name: Path(prepared[name]) for name in ("test_set", "hlf_test_set")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer calls, shorter timings")
    p.add_argument("--data-root", type=Path, help="a data root with trained models (default: generate a sample)")
    args = p.parse_args()
    _one_thread()
    from lhc_assets.ml.contract import KERAS_MODELS
    from lhc_assets.ml.deployment.onnx_export import export_classifier
    from lhc_assets.ml.readers import load_arrays

    timing = ({"timing_events": 256, "timing_seconds": 0.3, "latency_calls": 50} if args.quick else
              {"timing_events": 1024, "timing_seconds": 3.0, "latency_calls": 1000})
    max_events = 2000 if args.quick else 20_000
    with tempfile.TemporaryDirectory(prefix="lhc-deployment-") as tmp:
        tmp = Path(tmp)
        models, tests = _trained(args.data_root) if args.data_root else _untrained(tmp / "data")
        out = {"benchmark": "deployment", "quick": args.quick, "threads": 1,
               "models_from": str(args.data_root) if args.data_root else "untrained, generated sample", "onnx": {}}
        hlf_test = None
        for name, spec in KERAS_MODELS.items():
            x, labels = load_arrays(tests[spec.test_set], spec.inputs, max_events)
            exported = export_classifier(name, models[name], x, labels, tmp, **timing)
            out["onnx"][name] = {**exported.summary(), "parameters": models[name].count_params()}
            if name == "hlf_classifier":
                hlf_test = (x, labels)
        out["fpga"] = _fpga(models["hlf_classifier"], *hlf_test, tmp / "hls", args.quick)
    print(json.dumps(out))


def _fpga(model, x, labels, directory: Path, quick: bool) -> dict:
    """hls4ml's C simulation of the HLF classifier at the scanned precisions: compile seconds, events/s, and the
    physics figures of the scan (AUC and rejection against float) on the same events."""
    from lhc_assets.ml.deployment.fpga import DEFAULT_PRECISIONS, scan_precisions

    precisions = DEFAULT_PRECISIONS[:1] if quick else DEFAULT_PRECISIONS
    scan = scan_precisions(model, x, labels, precisions, work_dir=directory)
    return {
        "events": scan.n_events, "chosen_precision": scan.choice.precision, "choice": scan.choice.reason,
        "compile_wall_seconds": round(scan.timings["compile_wall_seconds"], 1),
        "float": {"events_per_s": round(scan.float_model.events_per_second), "auc": scan.float_model.auc,
                  "rejection": _rejections(scan.float_model)},
        "precisions": {r.precision: {"c_simulation_events_per_s": round(r.events_per_second),
                                     "compile_seconds": round(r.compile_seconds, 1), "auc": r.auc,
                                     "rejection": _rejections(r), "max_abs_diff": r.max_abs_diff,
                                     "dsp_multiplications": r.resources.dsp_multiplications,
                                     "weight_bits": r.resources.weight_bits}
                       for r in scan.fixed},
    }


def _rejections(result) -> dict[str, list]:
    """efficiency -> rejection of each background (None: no background event passes)."""
    return {f"{p['signal_efficiency_target']:.2f}": [b["rejection"] for b in p["background"].values()]
            for p in result.rejection}


if __name__ == "__main__":
    main()
