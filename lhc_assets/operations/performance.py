"""Per-stage performance over runs, read back from the Dagster instance (issue 20).

Every metered stage records ``lhc_assets.spark.metering`` figures in its materialization metadata: events (or
training samples) processed, wall and CPU seconds of the process tree, cores, peak memory. This module collects
them per stage and per run, newest first, and says whether the latest run of a stage is slower per core than
the median of the runs before it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from lhc_assets.ml.contract import KERAS_MODELS, RANDOM_FOREST
from lhc_assets.spark import metering as M

# (stage, the asset whose materializations carry its figures): the study's stages in pipeline order.
STAGES: tuple[tuple[str, str], ...] = (
    ("ingestion and features", "raw_events"),
    ("training data: selection", "undersampled_dataset"),
    ("training data: datasets", "train_set"),
    ("hyperparameter search", "hlf_hyperparameter_search"),
    *((f"training: {name}", name) for name in KERAS_MODELS),
    ("training: random forest", RANDOM_FOREST),
    ("scoring: test split", "event_scores"),
    ("scoring: per file", "file_event_scores"),
    ("evaluation", "model_evaluation"),
    ("deployment: ONNX export", "onnx_models"),
)


@dataclass(frozen=True)
class StageRun:
    """One run of one stage, as recorded in its materialization metadata."""

    stage: str
    asset: str
    run_id: str
    timestamp: float
    events: int
    wall_seconds: float
    cpu_seconds: float
    cores: int
    events_per_s_per_core: float
    driver_peak_rss_mb: float
    workers_peak_rss_mb: float
    bytes_read: int = 0
    bytes_written: int = 0
    started_at: float = 0.0  # epoch seconds (0 for runs recorded before it was)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _value(metadata: dict, key: str, default: float = 0.0) -> float:
    entry = metadata.get(key)
    return default if entry is None else entry.value


def stage_runs(instance: DagsterInstance, stage: str, asset: str, limit: int) -> list[StageRun]:
    """The ``limit`` latest runs of a stage, newest first. A run that materialized several partitions records
    the stage's figures on each of them: it counts once."""
    runs: dict[str, StageRun] = {}
    cursor = None
    while len(runs) < limit:
        page = instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey(asset)), limit=500,
                                               cursor=cursor)
        for record in page.records:
            metadata = record.asset_materialization.metadata
            if record.run_id in runs or M.EVENTS not in metadata:
                continue
            runs[record.run_id] = StageRun(
                stage=stage, asset=asset, run_id=record.run_id, timestamp=record.timestamp,
                events=int(_value(metadata, M.EVENTS)), wall_seconds=float(_value(metadata, M.WALL)),
                cpu_seconds=float(_value(metadata, M.CPU)), cores=int(_value(metadata, M.CORES, 1)),
                events_per_s_per_core=float(_value(metadata, M.PER_CORE)),
                driver_peak_rss_mb=float(_value(metadata, M.DRIVER_PEAK)),
                workers_peak_rss_mb=float(_value(metadata, M.WORKERS_PEAK)),
                bytes_read=int(_value(metadata, M.BYTES_READ)), bytes_written=int(_value(metadata, M.BYTES_WRITTEN)),
                started_at=float(_value(metadata, M.STARTED_AT)))
            if len(runs) == limit:
                break
        if not page.has_more:
            break
        cursor = page.cursor
    return sorted(runs.values(), key=lambda r: -r.timestamp)


def collect(instance: DagsterInstance, history: int = 20,
            stages: Sequence[tuple[str, str]] = STAGES) -> dict[str, list[StageRun]]:
    """stage -> its runs, newest first (stages never run are left out)."""
    found = {stage: stage_runs(instance, stage, asset, history) for stage, asset in stages}
    return {stage: runs for stage, runs in found.items() if runs}


def regression(runs: Sequence[StageRun], baseline_runs: int = 5) -> dict[str, Any] | None:
    """The latest run's events/s per core against the median of up to ``baseline_runs`` runs before it;
    None without an earlier run."""
    if len(runs) < 2:
        return None
    median = statistics.median(r.events_per_s_per_core for r in runs[1:1 + baseline_runs])
    latest = runs[0].events_per_s_per_core
    return {"latest": latest, "median_before": median, "ratio": latest / median if median > 0 else None,
            "runs_compared": min(baseline_runs, len(runs) - 1)}


def report(runs_by_stage: dict[str, list[StageRun]], max_drop: float, baseline_runs: int = 5) -> dict[str, Any]:
    """The JSON report: per stage its latest figures, its history and whether it slowed down by more than
    ``max_drop`` (a fraction) against its recent median."""
    stages = {}
    for stage, runs in runs_by_stage.items():
        compared = regression(runs, baseline_runs)
        ratio = compared and compared["ratio"]
        stages[stage] = {"latest": runs[0].to_dict(), "history": [r.to_dict() for r in runs],
                         "regression": compared,
                         "slower": bool(ratio is not None and ratio < 1.0 - max_drop)}
    return {"max_drop": max_drop, "baseline_runs": baseline_runs, "stages": stages}


def table(data: dict[str, Any]) -> str:
    """Markdown: one row per stage, its latest run."""
    lines = ["| stage | events | wall s | CPU s | cores | events/s per core | vs recent median | driver / workers "
             "peak MB | MB read / written |", "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for stage, s in data["stages"].items():
        r, compared = s["latest"], s["regression"]
        versus = "-" if not compared or compared["ratio"] is None else f"{compared['ratio']:.2f}x"
        lines.append(f"| {stage} | {r['events']:,} | {r['wall_seconds']:.1f} | {r['cpu_seconds']:.1f} | {r['cores']} "
                     f"| {r['events_per_s_per_core']:,.1f} | {versus}{' (slower)' if s['slower'] else ''} | "
                     f"{r['driver_peak_rss_mb']:.0f} / {r['workers_peak_rss_mb']:.0f} | "
                     f"{r['bytes_read'] / 1e6:,.1f} / {r['bytes_written'] / 1e6:,.1f} |")
    return "\n".join(lines)


def plot(data: dict[str, Any]) -> bytes:
    """PNG: events/s per core of each stage's latest run (log scale), and each stage's history over runs."""
    from matplotlib.figure import Figure

    from lhc_assets.ml.evaluation import png_bytes

    stages = list(data["stages"])
    fig = Figure(figsize=(11, 4.5 + 0.1 * len(stages)), layout="constrained")
    bars, lines = fig.subplots(1, 2)
    values = [data["stages"][s]["latest"]["events_per_s_per_core"] for s in stages]
    bars.barh(stages, values, color="tab:blue")
    bars.set_xscale("log")
    bars.invert_yaxis()
    bars.set_xlabel("events (samples) / s per core, latest run")
    bars.tick_params(axis="y", labelsize=7)
    for stage in stages:
        history = list(reversed(data["stages"][stage]["history"]))
        lines.plot(range(1, len(history) + 1), [h["events_per_s_per_core"] for h in history], marker="o",
                   label=stage)
    lines.set_yscale("log")
    lines.set_xlabel("run (oldest to newest)")
    lines.set_ylabel("events / s per core")
    lines.legend(fontsize=6)
    return png_bytes(fig)
