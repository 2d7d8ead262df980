"""``lhc trigger-menu``: the ttbar score cut for target efficiencies and the rates per class it lets through.

    lhc trigger-menu                                   every model of event_scores, 99 / 95 / 90 % of ttbar
    lhc trigger-menu --model inclusive_classifier --efficiency 0.99
    lhc trigger-menu --source onnx                     ONNX Runtime's scores (onnx_models) instead of Keras'
    lhc trigger-menu --source fpga                     the HLF classifier at each scanned fixed-point precision
    lhc trigger-menu --input-rate-hz 400 --composition qcd=36.2,ttbar=0.4,wjets=63.4 [--json]

Efficiencies are measured on the test split; rates are the input stream's (default: the study's single-lepton
stream composition at an illustrative 1 kHz, see lhc_assets.ml.deployment.trigger) times them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lhc_assets.physics.schema import LABEL_NAMES, SAMPLES

# Where scores come from: the Keras scores computed in Spark, or an export asset's test-split scores.
SOURCES = {"event_scores": None, "onnx": "onnx_models", "fpga": "fpga_hlf_classifier"}
SIGNAL = LABEL_NAMES[SAMPLES["ttbar"]]
SAMPLE_TO_CLASS = {sample: LABEL_NAMES[index] for sample, index in SAMPLES.items()}
# numpy and the trigger module (which brings matplotlib through ml.evaluation) are imported by run() only: every
# `lhc` command builds this parser, and `lhc backfill` should not pay half a second for them.


def add_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("trigger-menu", help="ttbar score cuts for target efficiencies and the rates they let through",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--source", choices=list(SOURCES), default="event_scores",
                   help="event_scores (Keras, in Spark; default), onnx (ONNX Runtime, from onnx_models) or fpga "
                   "(hls4ml's C simulation per precision, from fpga_hlf_classifier)")
    t.add_argument("--model", action="append", help="a model (repeatable; default: every model of the source)")
    t.add_argument("--efficiency", action="append", type=float, help="target ttbar efficiency (repeatable; "
                   "default 0.99, 0.95, 0.90)")
    t.add_argument("--input-rate-hz", type=float, default=None,
                   help="total rate of the stream before the cut (default 1000 Hz)")
    t.add_argument("--composition", help="the stream by class, class=weight pairs (qcd, ttbar, wjets or QCD, "
                   "ttbar, W+jets; any scale); default: the study's")
    t.add_argument("--json", action="store_true", help="one JSON object per working point")


def _event_scores(storage) -> dict[str, tuple[Any, Any]]:
    import numpy as np
    import pyarrow.parquet as pq

    from resources.io_manager import materialized_path

    path = materialized_path(storage, "event_scores")
    if path is None:
        raise LookupError("event_scores has not been materialized: run `make run` (or materialize models_job)")
    table = pq.read_table(path)
    labels = table.column("label").to_numpy()
    models = [c for c in table.column_names if c not in ("sample", "file", "entry", "label")]
    return {m: (labels, np.asarray(table.column(m).to_pylist(), np.float64)) for m in models}


def _exported_scores(storage, asset: str) -> dict[str, tuple[Any, Any]]:
    """The test-split scores an export asset published beside its models (its manifest's "models")."""
    import numpy as np
    import pyarrow.parquet as pq

    from resources.model_io_manager import ModelNotTrained, model_ref

    try:
        manifest_path: Path = model_ref(storage, asset).path
    except ModelNotTrained:
        raise LookupError(f"{asset} has not been materialized: materialize it (deployment_job)") from None
    manifest = json.loads(manifest_path.read_text())
    out = {}
    for name, entry in manifest["models"].items():
        table = pq.read_table(manifest_path.parent / entry["scores"])
        out[name] = (table.column("label").to_numpy(), np.asarray(table.column("probabilities").to_pylist()))
    return out


def run(args: argparse.Namespace, storage) -> int:
    from lhc_assets.ml.deployment.trigger import (
        DEFAULT_INPUT_RATE_HZ,
        InputStream,
        headline,
        menu_table,
        parse_composition,
        trigger_menu,
    )

    try:
        rate = DEFAULT_INPUT_RATE_HZ if args.input_rate_hz is None else args.input_rate_hz
        stream = InputStream(rate, parse_composition(args.composition, SAMPLE_TO_CLASS)
                             if args.composition else InputStream().composition)
        asset = SOURCES[args.source]
        scores = _exported_scores(storage, asset) if asset else _event_scores(storage)
    except (ValueError, LookupError) as exc:
        print(f"lhc trigger-menu: {exc}", file=sys.stderr)
        return 2
    unknown = sorted(set(args.model or ()) - set(scores))
    if unknown:
        print(f"lhc trigger-menu: no scores of {', '.join(unknown)} in {args.source}; it has {', '.join(scores)}",
              file=sys.stderr)
        return 2
    efficiencies = args.efficiency or [0.99, 0.95, 0.90]
    menu = []
    try:
        for name in args.model or list(scores):
            labels, probabilities = scores[name]
            menu += trigger_menu(labels, {name: probabilities}, LABEL_NAMES, SIGNAL, efficiencies, stream)
    except ValueError as exc:
        print(f"lhc trigger-menu: {exc}", file=sys.stderr)
        return 2
    if args.json:
        for point in menu:
            print(json.dumps({"source": args.source, **point.as_dict()}))
        return 0
    mix = ", ".join(f"{k} {100 * v:.3g} %" for k, v in stream.composition.items())
    print(f"input stream: {stream.rate_hz:g} Hz ({mix}); efficiencies on the test split ({args.source})\n")
    print(menu_table(menu, LABEL_NAMES))
    print()
    for point in menu:
        if point.target_efficiency == max(efficiencies):
            print(headline(point, SIGNAL))
    return 0


def print_headlines(storage, efficiencies: list[float], indent: str = "") -> None:
    """One line per model of event_scores at each efficiency, with the default stream (for lhc-run's summary)."""
    from lhc_assets.ml.deployment.trigger import headline, trigger_menu

    try:
        scores = _event_scores(storage)
    except LookupError:
        return
    for name, (labels, probabilities) in scores.items():
        try:
            menu = trigger_menu(labels, {name: probabilities}, LABEL_NAMES, SIGNAL, efficiencies)
        except ValueError as exc:  # e.g. a class without test events: say why instead of a rate
            print(f"{indent}{name}: {exc}")
            continue
        for point in menu:
            print(indent + headline(point, SIGNAL))
