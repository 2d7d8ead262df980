"""hls4ml fixed-point emulation of the dense softmax classifiers (the HLF classifier) for the L1 FPGA trigger.

``convert`` turns a Keras model into an hls4ml design at one fixed-point precision and compiles its
bit-accurate C simulation with g++ (hls4ml's ``build_lib.sh``; no vendor HLS tool is run: the Vitis project
is only written). ``scan_precisions`` does that for several precisions and compares each with the float model
on the same events: AUC per class and background rejection at fixed ttbar efficiencies (computed by
``lhc_assets.ml.evaluation``), C-simulation throughput, the largest probability difference and a resource
count. ``choose_precision`` applies the configurable choice rule to the results.

What the scanned precision ``ap_fixed<W,I>`` covers: the data path of the network, i.e. the inputs, weights,
biases, hidden activations and logits. Two parts do not follow it, on purpose:

* accumulators are exact (hls4ml's inferred width: weight bits + input bits + log2(fan-in)), so a layer's
  output is rounded and saturated once, where it is stored. A sum of 50 products needs about 6 more integer
  bits than its terms, and wide adders cost LUTs, not DSPs.
* the softmax is a fixed output stage (``SOFTMAX_TYPES``) whose types are sized by its known ranges, not by
  the scan. hls4ml's defaults there are lossy: its table index takes the top 10 bits of an ``<18,8>`` sum,
  a 0.25 step on a sum that lies in [1, 3], and its max-subtracted input type has one integer bit fewer than
  the logits it subtracts, so a logit gap above half the logit range wraps around (at ``<8,3>`` logits
  (3, -2, 0) give (1, 0.34, 0.03) instead of (0.95, 0.006, 0.05)). On an HLF classifier at ``<16,6>`` the
  default softmax gave max |p - p_float| = 0.22 and a ttbar AUC of 0.9790 against float's 0.9841; this one
  gives 0.005 and 0.9841.

Several compiled designs can live in one process: hls4ml names each library with a random stamp and builds
it with ``-fno-gnu-unique``, so the softmax tables (function statics) are not shared between them. A
compiled design reads its weights from its project directory: keep the directory while you use it.

hls4ml and TensorFlow are imported lazily: the choice rule, the precision parser and the compiler check
import neither.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from lhc_assets.ml.evaluation import evaluate_model
from lhc_assets.physics.schema import LABEL_NAMES

if TYPE_CHECKING:
    import keras
    from hls4ml.model.graph import ModelGraph

DEFAULT_PRECISIONS: Final = ("ap_fixed<16,6>", "ap_fixed<12,4>", "ap_fixed<8,3>")
EFFICIENCIES: Final = (0.99, 0.95, 0.90)
SIGNAL: Final = LABEL_NAMES.index("ttbar")
COMPILER: Final = "g++"  # hard-coded in hls4ml's build_lib.sh (CC=g++)
BACKEND: Final = "Vitis"  # writes a Vitis HLS project; only its C simulation is built here
# The hls4ml default part: a Virtex UltraScale+ VU13P, the FPGA of the CMS Phase-2 L1 trigger boards.
PART: Final = "xcvu13p-flga2577-2-e"
CLOCK_PERIOD_NS: Final = 5.0
# Modes given to a precision string that names none. Rounding to nearest removes the -step/2 bias of
# truncation (free for the weights, which are rounded offline; one adder per stored activation), and
# saturation keeps an activation above the integer range at the maximum instead of wrapping it to a negative
# value (a few LUTs each). ``default_modes=None`` keeps hls4ml's AP_TRN, AP_WRAP.
DEFAULT_MODES: Final = ("AP_RND", "AP_SAT")

# The softmax stage (hls4ml's "stable" implementation: p_i = exp(-(x_max - x_i)) / sum_j exp(-(x_max - x_j))).
SOFTMAX_TABLE_SIZE: Final = 1024  # per table: 1024 x 18 bits fills one 18 kb block RAM
SOFTMAX_TYPES: Final = {
    # x_max - x_i in [0, 8) on a 1/128 grid, rounded; larger gaps saturate: e^-8 = 3.4e-4 is then the weight of a
    # class that should have less, which moves only the extreme tail of the signal score (the ranking at 90-99 %
    # ttbar efficiency lives at much smaller gaps). 10 bits = the table index, so every grid point has an entry.
    "inp_norm": "ap_ufixed<10,3,AP_RND,AP_SAT>",
    "exp_table": "ap_ufixed<18,1,AP_RND,AP_SAT>",  # e^-d in (0, 1]; 18 bits, the DSP's narrow port
    "inv_table": "ap_ufixed<18,1,AP_RND,AP_SAT>",  # 1 / sum in [1/n, 1]
    "result": "ap_ufixed<18,1,AP_RND,AP_SAT>",  # the probabilities the trigger cuts on
}

HLS4ML_ESTIMATE_NOTE: Final = (
    "hls4ml 1.3.0 gives no resource estimate without synthesis: hls4ml.report only parses the vendor tools' "
    "reports (after build()), and its one synthesis-free estimator, the DSP-aware pruning objective in "
    "hls4ml.optimization, imports keras_tuner and QKeras and calls Keras 2 APIs, so it does not run on this "
    "stack. The resources below are our count from the quantised weights."
)
OUR_COUNT: Final = (
    "our count from the model graph and the weights quantised to this precision (fully parallel, reuse factor 1); "
    "not a synthesis estimate. A product by a zero constant is removed by HLS; a product is counted as a DSP when "
    "the weight has 9 bits or more (narrower constant products go to LUTs: the rule hls4ml's DSP-aware pruning "
    "objective uses)."
)


class CompilerNotFoundError(RuntimeError):
    """The C++ compiler hls4ml's C simulation needs is not on PATH."""


class CSimulationBuildError(RuntimeError):
    """hls4ml's build of the C simulation failed (the compiler's output was printed above)."""


def require_compiler(compiler: str = COMPILER) -> str:
    """The compiler's path; CompilerNotFoundError saying what to install when it is missing."""
    path = shutil.which(compiler)
    if path is None:
        raise CompilerNotFoundError(
            f"{compiler} is not on PATH: hls4ml compiles its bit-accurate C simulation with it (no vendor HLS tool is "
            f"needed). Install it, e.g. `sudo apt-get install -y g++` on Debian/Ubuntu, and run again."
        )
    return path


# ---- fixed-point types ----------------------------------------------------------------------------------

_FIXED = re.compile(
    r"^\s*(?:ap_)?(u?)fixed\s*<\s*(\d+)\s*,\s*(-?\d+)\s*(?:,\s*(AP_\w+)\s*)?(?:,\s*(AP_\w+)\s*)?(?:,\s*(\d+)\s*)?>\s*$"
)


@dataclass(frozen=True)
class FixedPoint:
    """An ``ap_[u]fixed<width, integer[, rounding[, overflow[, saturation bits]]]>`` type."""

    width: int
    integer: int
    signed: bool = True
    rounding: str | None = None  # None: the type's default, AP_TRN
    overflow: str | None = None  # None: AP_WRAP
    saturation_bits: int | None = None

    @classmethod
    def parse(cls, text: str) -> FixedPoint:
        match = _FIXED.match(text)
        if match is None:
            raise ValueError(f"not a fixed-point type: {text!r}; expected e.g. 'ap_fixed<16,6>' or "
                             "'ap_fixed<8,3,AP_RND,AP_SAT>'")
        unsigned, width, integer, rounding, overflow, bits = match.groups()
        if rounding is not None and not rounding.startswith(("AP_RND", "AP_TRN")):
            raise ValueError(f"{text!r}: the third parameter is the rounding mode (AP_RND, AP_TRN, ...)")
        if overflow is not None and not overflow.startswith(("AP_SAT", "AP_WRAP")):
            raise ValueError(f"{text!r}: the fourth parameter is the overflow mode (AP_SAT, AP_WRAP, ...)")
        if int(width) < 1:
            raise ValueError(f"{text!r}: the width must be at least 1 bit")
        return cls(int(width), int(integer), not unsigned, rounding, overflow, None if bits is None else int(bits))

    def with_default_modes(self, modes: tuple[str, str] | None) -> FixedPoint:
        """The same type with ``modes`` (rounding, overflow) when it names none; unchanged otherwise."""
        if modes is None or self.rounding is not None or self.overflow is not None:
            return self
        return replace(self, rounding=modes[0], overflow=modes[1])

    @property
    def fraction(self) -> int:
        return self.width - self.integer

    def __str__(self) -> str:
        params = [str(self.width), str(self.integer)]
        if self.rounding is not None or self.overflow is not None:
            params.append(self.rounding or "AP_TRN")
        if self.overflow is not None:
            params.append(self.overflow)
        if self.saturation_bits is not None:
            params.append(str(self.saturation_bits))
        return f"ap_{'' if self.signed else 'u'}fixed<{','.join(params)}>"

    def quantize(self, values: np.ndarray) -> np.ndarray:
        """``values`` as this type would hold them (float64), for counting; the C simulation is the reference."""
        step = 2.0 ** -self.fraction
        scaled = np.asarray(values, dtype=np.float64) / step
        rounding = self.rounding or "AP_TRN"
        if rounding == "AP_TRN":
            units = np.floor(scaled)
        elif rounding == "AP_TRN_ZERO":
            units = np.trunc(scaled)
        else:  # the AP_RND family differs only on exact halves
            units = np.floor(scaled + 0.5)
        lo = -(2.0 ** (self.integer - 1)) if self.signed else 0.0
        span = 2.0 ** self.integer
        q = units * step
        if (self.overflow or "AP_WRAP") == "AP_WRAP":
            return lo + np.mod(q - lo, span)
        return np.clip(q, lo, lo + span - step)


def _slug(text: str) -> str:
    """``text`` as a C identifier (hls4ml's project name) and directory name: ap_fixed<16,6> -> ap_fixed_16_6."""
    slug = re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_") or "model"
    return f"m_{slug}" if slug[0].isdigit() else slug


# ---- conversion -----------------------------------------------------------------------------------------


def _softmax_layers(model: keras.Model) -> tuple[str, str, int]:
    """(hls4ml name of the logits layer, of the softmax layer, number of classes) of a model ending in softmax."""
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not layers:
        raise ValueError(f"model {model.name!r} has no layers")
    last = layers[-1]
    n_classes = int(last.output.shape[-1])
    if isinstance(last, keras.layers.Dense) and last.get_config().get("activation") == "softmax":
        return last.name, f"{last.name}_softmax", n_classes  # hls4ml splits Dense(activation=softmax) in two
    is_softmax = isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and last.get_config().get("activation") == "softmax")
    previous = [layer for layer in layers[:-1] if not isinstance(layer, keras.layers.Dropout)]
    if is_softmax and previous and isinstance(previous[-1], keras.layers.Dense):
        return previous[-1].name, last.name, n_classes
    raise ValueError(f"model {model.name!r} must end in a Dense layer followed by a softmax (the trigger cuts on "
                     f"class probabilities); its last layer is {type(last).__name__} {last.name!r}")


def hls_config(model: keras.Model, precision: str | FixedPoint, *, backend: str = BACKEND,
               default_modes: tuple[str, str] | None = DEFAULT_MODES) -> dict[str, Any]:
    """The hls4ml configuration ``convert`` uses: ``precision`` on the data path, exact accumulators, the
    ``SOFTMAX_TYPES`` output stage; fully parallel (Latency strategy, reuse factor 1), as an L1 trigger needs."""
    import hls4ml
    import keras

    fixed = precision if isinstance(precision, FixedPoint) else FixedPoint.parse(precision)
    fixed = fixed.with_default_modes(default_modes)
    _, softmax, n_classes = _softmax_layers(model)
    dense = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    # "name" granularity sets every type to "auto": hls4ml then gives the input, weights, biases and
    # activations the model default (the precision) and a Dense layer's accumulator and output the exact width.
    config = hls4ml.utils.config_from_keras_model(model, granularity="name", backend=backend,
                                                  default_precision=str(fixed))
    layers = config["LayerName"]
    missing = {softmax, *dense} - set(layers)
    if missing:
        raise ValueError(f"hls4ml's layer names {sorted(layers)} lack {sorted(missing)}: unsupported model layout")
    # A Dense output (and so the logits) is stored at the precision: the accumulator is rounded once, there.
    # Before a ReLU this is the same as rounding after it; without one, the output would otherwise stay wide.
    for name in dense:
        layers[name]["Precision"]["result"] = str(fixed)
    sum_bits = n_classes.bit_length()  # the sum of n exponentials, each <= 1, lies in [1, n]
    # hls4ml 1.3.0 reads only "accum" and "result" from a softmax's "Precision"; its table types are taken from
    # layer config keys ending in _t (which become types of the layer), else they keep the <18,8> defaults.
    precision_config = layers[softmax]["Precision"]
    for ignored in ("exp_table", "inv_table", "inv_inp", "table"):
        precision_config.pop(ignored, None)
    precision_config.update({
        "result": SOFTMAX_TYPES["result"],
        # Exact sum of the n table values (17 fractional bits each): no rounding, no overflow.
        "accum": f"ap_ufixed<{17 + sum_bits},{sum_bits}>",
    })
    layers[softmax].update({
        "Implementation": "stable",
        "TableSize": SOFTMAX_TABLE_SIZE,
        # Setting both sizes keeps hls4ml from shrinking the tables to the logit width (its FixSoftmaxTableSize).
        "exp_table_size": SOFTMAX_TABLE_SIZE,
        "inv_table_size": SOFTMAX_TABLE_SIZE,
        "exp_table_t": SOFTMAX_TYPES["exp_table"],
        "inv_table_t": SOFTMAX_TYPES["inv_table"],
        # The inverse table's index is this type's 10 bits: the sum rounded to a 2^-(10 - sum_bits) grid
        # (1/256 for three classes) instead of hls4ml's default 0.25.
        "inv_inp_t": f"ap_ufixed<10,{sum_bits},AP_RND,AP_SAT>",
        # The max-subtracted logits; without it hls4ml derives a type from the logits that can wrap.
        "inp_norm_t": SOFTMAX_TYPES["inp_norm"],
    })
    return config


def convert(
    model: keras.Model,
    precision: str | FixedPoint,
    output_dir: str | os.PathLike[str],
    *,
    project_name: str | None = None,
    backend: str = BACKEND,
    part: str = PART,
    clock_period: float = CLOCK_PERIOD_NS,
    default_modes: tuple[str, str] | None = DEFAULT_MODES,
    compile_csim: bool = True,
) -> ModelGraph:
    """The hls4ml design of ``model`` at ``precision``, its project written to ``output_dir`` (created) and,
    with ``compile_csim``, its C simulation compiled and loaded: ``.predict(x)`` then gives the fixed-point
    probabilities. ``project_name`` (the C++ top function and library name) defaults to the model's name.
    CompilerNotFoundError without g++; CSimulationBuildError if the build fails."""
    if compile_csim:
        require_compiler()
    import hls4ml

    config = hls_config(model, precision, backend=backend, default_modes=default_modes)
    directory = Path(output_dir).resolve()  # absolute: hls4ml builds there, never in the cwd
    directory.mkdir(parents=True, exist_ok=True)
    graph = hls4ml.converters.convert_from_keras_model(
        model, output_dir=str(directory), project_name=_slug(project_name or model.name), backend=backend,
        hls_config=config, part=part, clock_period=clock_period, io_type="io_parallel")
    if compile_csim:
        _compile(graph, str(precision))
    return graph


def _compile(graph: ModelGraph, label: str) -> float:
    """Writes the project and builds and loads its C simulation; returns the seconds it took."""
    start = time.perf_counter()
    try:
        graph.compile()
    except Exception as exc:  # hls4ml raises a bare Exception after printing the compiler output
        directory = graph.config.get_output_dir()
        if shutil.which(COMPILER) is None:
            raise CompilerNotFoundError(f"{COMPILER} disappeared from PATH while building {label}") from exc
        raise CSimulationBuildError(
            f"building the C simulation of {label} in {directory} failed: {exc}. The compiler output is printed "
            f"above; {directory}/build_lib.sh reproduces it.") from exc
    return time.perf_counter() - start


# ---- resources ------------------------------------------------------------------------------------------


@dataclass
class ResourceCount:
    """Arithmetic of one inference at one precision, counted from the graph (see ``source``)."""

    multiplications: int  # Dense products per inference
    nonzero_multiplications: int  # of those, with a weight that is not zero at this precision
    dsp_multiplications: int  # nonzero products with a weight of 9 bits or more
    lut_multiplications: int  # nonzero products with a narrower weight
    weight_bits: int  # nonzero weights and biases x their width: the constants that become logic
    softmax_multiplications: int  # probabilities = exponential x inverse sum, at the softmax's fixed width
    softmax_table_bits: int  # exponential and inverse tables
    source: str = OUR_COUNT


def count_resources(model: keras.Model, precision: str | FixedPoint,
                    default_modes: tuple[str, str] | None = DEFAULT_MODES) -> ResourceCount:
    """Our resource count of ``model``'s Dense layers and softmax at ``precision`` (no synthesis)."""
    import keras

    fixed = precision if isinstance(precision, FixedPoint) else FixedPoint.parse(precision)
    fixed = fixed.with_default_modes(default_modes)
    total = nonzero = nonzero_params = 0
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Dense):
            continue
        kernel = np.count_nonzero(fixed.quantize(np.asarray(layer.kernel)))
        total += int(np.prod(layer.kernel.shape))
        nonzero += int(kernel)
        nonzero_params += int(kernel)
        if layer.use_bias:
            nonzero_params += int(np.count_nonzero(fixed.quantize(np.asarray(layer.bias))))
    _, _, n_classes = _softmax_layers(model)
    dsp = nonzero if fixed.width >= 9 else 0
    table_bits = SOFTMAX_TABLE_SIZE * sum(FixedPoint.parse(SOFTMAX_TYPES[t]).width for t in ("exp_table", "inv_table"))
    return ResourceCount(
        multiplications=total, nonzero_multiplications=nonzero, dsp_multiplications=dsp,
        lut_multiplications=nonzero - dsp, weight_bits=nonzero_params * fixed.width,
        softmax_multiplications=n_classes, softmax_table_bits=table_bits)


# ---- the scan -------------------------------------------------------------------------------------------


@dataclass
class PrecisionResult:
    """One model version on the test events: ``precision`` "float" for the Keras model."""

    precision: str  # as requested
    hls_type: str | None  # the data-path type used, with its modes; None for float
    total_bits: int | None
    integer_bits: int | None
    auc: dict[str, float | None]  # one-vs-rest per class
    accuracy: float
    rejection: list[dict[str, Any]]  # lhc_assets.ml.evaluation.background_rejection, one entry per efficiency
    events_per_second: float
    throughput: str  # what events_per_second measures
    compile_seconds: float | None = None
    max_abs_diff: float | None = None  # max |p_fixed - p_float| over events and classes
    argmax_agreement: float | None = None  # fraction of events with the float model's predicted class
    resources: ResourceCount | None = None
    project_dir: str | None = None

    def rejection_at(self, efficiency: float) -> dict[str, float | None]:
        """Background class -> rejection (None: no background event passes) at a scanned signal efficiency."""
        for point in self.rejection:
            if abs(point["signal_efficiency_target"] - efficiency) < 1e-9:
                return {name: b["rejection"] for name, b in point["background"].items()}
        scanned = [p["signal_efficiency_target"] for p in self.rejection]
        raise ValueError(f"{self.precision}: efficiency {efficiency} was not scanned ({scanned})")


@dataclass(frozen=True)
class ChoiceRule:
    """The smallest total bit width whose background rejection at ``efficiency`` signal efficiency is within
    ``tolerance`` (relative) of the float model's for every background. One-sided by default: a precision may
    do better than float (on a finite sample it sometimes does, by chance) but lose at most ``tolerance``;
    ``two_sided`` also rejects a gain above it."""

    efficiency: float = 0.95
    tolerance: float = 0.02
    two_sided: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.efficiency <= 1.0:
            raise ValueError(f"efficiency must be in (0, 1], got {self.efficiency}")
        if self.tolerance < 0.0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}")

    def describe(self) -> str:
        within = "within" if self.two_sided else "at most"
        loss = "" if self.two_sided else " below"
        return (f"smallest total bit width whose background rejection at {self.efficiency:.0%} signal efficiency is "
                f"{within} {self.tolerance:.0%}{loss} the float model's for every background")

    def change(self, float_rejection: float | None, fixed_rejection: float | None) -> float | None:
        """Relative change of rejection (fixed / float - 1); None when it is not a finite number (an infinite
        rejection, i.e. no background event passing, on one side only)."""
        if float_rejection is None or fixed_rejection is None:
            return 0.0 if float_rejection is None and fixed_rejection is None else None
        return fixed_rejection / float_rejection - 1.0

    def passes(self, float_rejection: float | None, fixed_rejection: float | None) -> bool:
        change = self.change(float_rejection, fixed_rejection)
        if change is None:  # infinite on one side: a pass only when the fixed model is the infinite one
            return fixed_rejection is None and not self.two_sided
        return (abs(change) if self.two_sided else -change) <= self.tolerance + 1e-12


@dataclass
class Choice:
    precision: str | None  # None: no scanned precision passes the rule
    rule: str
    reason: str
    passing: list[str] = field(default_factory=list)  # every precision that passes, in scan order


def _bits(result: PrecisionResult) -> int:
    return result.total_bits if result.total_bits is not None else FixedPoint.parse(result.precision).width


def _changes_text(changes: dict[str, float | None]) -> str:
    return ", ".join(f"{name} {'infinite on one side' if c is None else f'{c:+.1%}'}" for name, c in changes.items())


def choose_precision(float_result: PrecisionResult, results: Sequence[PrecisionResult],
                     rule: ChoiceRule | None = None) -> Choice:
    """The precision ``rule`` picks among the fixed-point ``results`` against ``float_result``, and why. Equal
    widths are taken in scan order. ``precision`` is None, and ``reason`` says so, when none passes."""
    rule = rule or ChoiceRule()
    reference = float_result.rejection_at(rule.efficiency)
    judged = []
    for result in results:
        rejection = result.rejection_at(rule.efficiency)
        changes = {name: rule.change(ref, rejection.get(name)) for name, ref in reference.items()}
        ok = all(rule.passes(ref, rejection.get(name)) for name, ref in reference.items())
        judged.append((ok, result, changes))
    passing = [(result, changes) for ok, result, changes in judged if ok]
    names = [result.precision for result, _ in passing]
    if passing:
        chosen, changes = min(passing, key=lambda item: _bits(item[0]))  # min keeps the first of equal widths
        return Choice(chosen.precision, rule.describe(),
                      f"{chosen.precision} ({_bits(chosen)} bits) is the smallest that passes; rejection change at "
                      f"{rule.efficiency:.0%}: {_changes_text(changes) or 'no background class'}", names)
    if not results:
        return Choice(None, rule.describe(), "no fixed-point precision was scanned")
    detail = "; ".join(f"{result.precision}: {_changes_text(changes)}" for _, result, changes in judged)
    return Choice(None, rule.describe(), f"none of the scanned precisions passes; rejection changes at "
                                         f"{rule.efficiency:.0%}: {detail}")


@dataclass
class PrecisionScan:
    """``scan_precisions``' result; ``to_dict`` gives its JSON-serialisable form."""

    class_names: list[str]
    signal: str
    efficiencies: list[float]
    n_events: int
    float_model: PrecisionResult
    fixed: list[PrecisionResult]
    choice: Choice
    hls4ml_version: str
    backend: str
    part: str
    softmax_types: dict[str, str]
    hls4ml_resource_estimate: None = None  # hls4ml gives none without synthesis: see hls4ml_resource_note
    hls4ml_resource_note: str = HLS4ML_ESTIMATE_NOTE
    timings: dict[str, float] = field(default_factory=dict)
    # The compiled designs by precision (their .predict runs the C simulation); not part of to_dict.
    designs: dict[str, ModelGraph] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        report = asdict(replace(self, designs={}))
        del report["designs"]
        return report

    def result(self, precision: str) -> PrecisionResult:
        for r in self.fixed:
            if r.precision == precision:
                return r
        raise KeyError(precision)


def _summarise(precision: str, y: np.ndarray, p: np.ndarray, class_names: Sequence[str], signal: int,
               efficiencies: Sequence[float], events_per_second: float, throughput: str) -> PrecisionResult:
    report = evaluate_model(y, p, class_names, signal=signal, efficiencies=efficiencies)
    return PrecisionResult(precision=precision, hls_type=None, total_bits=None, integer_bits=None,
                           auc=report["auc"], accuracy=report["accuracy"], rejection=report["rejection"],
                           events_per_second=events_per_second, throughput=throughput)


def scan_precisions(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    precisions: Sequence[str] = DEFAULT_PRECISIONS,
    *,
    work_dir: str | os.PathLike[str],
    class_names: Sequence[str] = LABEL_NAMES,
    signal: int = SIGNAL,
    efficiencies: Sequence[float] = EFFICIENCIES,
    rule: ChoiceRule | None = None,
    jobs: int | None = None,
    default_modes: tuple[str, str] | None = DEFAULT_MODES,
    backend: str = BACKEND,
    part: str = PART,
    clock_period: float = CLOCK_PERIOD_NS,
    log: Callable[[str], None] | None = None,
) -> PrecisionScan:
    """The float model and each fixed-point precision on the test events ``x`` (float32 [N, features], scaled as
    the model expects) with one-hot labels ``y`` [N, classes]: AUC per class, background rejection at each
    ``efficiencies`` of class ``signal``, throughput, max probability difference, our resource count; and the
    precision ``rule`` chooses. Each precision's project goes to ``work_dir/<model name>_<precision>``; ``jobs``
    builds compile that many at once (threads running g++; default: one per core, at most one per precision;
    measured on 2 cores, three builds took 12.7 s two at a time against 17.6 s one by one)."""
    require_compiler()
    import hls4ml

    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"x must be [N, features] and y one-hot [N, classes], got {x.shape} and {y.shape}")
    if len(set(precisions)) != len(precisions):
        raise ValueError(f"precisions repeat: {list(precisions)}")
    if jobs is None:
        jobs = max(1, min(len(precisions), os.cpu_count() or 1))
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    say = log or (lambda _message: None)
    work = Path(work_dir).resolve()
    timings: dict[str, float] = {}

    model.predict(x[:1], verbose=0)  # builds Keras' predict function outside the timing
    start = time.perf_counter()
    p_float = np.asarray(model.predict(x, batch_size=4096, verbose=0), dtype=np.float64)
    float_rate = len(x) / (time.perf_counter() - start)
    float_result = _summarise("float", y, p_float, class_names, signal, efficiencies, float_rate,
                              "Keras predict, batches of 4096, CPU")

    fixed_types = [FixedPoint.parse(p).with_default_modes(default_modes) for p in precisions]
    start = time.perf_counter()
    graphs = [convert(model, fixed, work / f"{_slug(model.name)}_{_slug(p)}", backend=backend, part=part,
                      clock_period=clock_period, default_modes=None, compile_csim=False)
              for p, fixed in zip(precisions, fixed_types, strict=True)]
    timings["convert_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    # g++ runs in a subprocess, so threads overlap the builds (hls4ml's Python writing part holds the GIL).
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        compile_seconds = list(pool.map(_compile, graphs, precisions))
    timings["compile_wall_seconds"] = time.perf_counter() - start
    say(f"compiled {len(graphs)} C simulations in {timings['compile_wall_seconds']:.1f} s ({jobs} at once)")

    results = []
    for precision, fixed, graph, seconds in zip(precisions, fixed_types, graphs, compile_seconds, strict=True):
        start = time.perf_counter()
        p_fixed = np.asarray(graph.predict(x), dtype=np.float64).reshape(len(x), -1)
        rate = len(x) / (time.perf_counter() - start)
        result = _summarise(precision, y, p_fixed, class_names, signal, efficiencies, rate,
                            "hls4ml C simulation, one ctypes call per event")
        diff = np.abs(p_fixed - p_float)
        result.hls_type, result.total_bits, result.integer_bits = str(fixed), fixed.width, fixed.integer
        result.compile_seconds = seconds
        result.max_abs_diff = float(diff.max())
        result.argmax_agreement = float(np.mean(p_fixed.argmax(axis=1) == p_float.argmax(axis=1)))
        result.resources = count_resources(model, fixed, default_modes=None)
        result.project_dir = graph.config.get_output_dir()
        say(f"{precision}: compile {seconds:.1f} s, {rate:,.0f} events/s, max |dp| {result.max_abs_diff:.4f}")
        results.append(result)

    rule = rule or ChoiceRule()
    return PrecisionScan(
        class_names=list(class_names), signal=class_names[signal], efficiencies=[float(e) for e in efficiencies],
        n_events=len(x), float_model=float_result, fixed=results, choice=choose_precision(float_result, results, rule),
        hls4ml_version=hls4ml.__version__, backend=backend, part=part, softmax_types=dict(SOFTMAX_TYPES),
        timings=timings, designs=dict(zip(precisions, graphs, strict=True)))
