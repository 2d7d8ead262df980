"""The platform watching itself: per-stage performance over runs (``pipeline_performance``, "operations" group)."""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetSelection,
    Config,
    Failure,
    MetadataValue,
    asset,
    asset_check,
    define_asset_job,
)
from pydantic import Field

from lhc_assets.defs.metadata import png_markdown
from lhc_assets.operations import performance
from resources.json_io_manager import Report


class PipelinePerformanceConfig(Config):
    history: int = Field(default=20, ge=1, description="Runs per stage kept in the table and the plot.")
    max_drop: float = Field(default=0.3, gt=0.0, lt=1.0, description=(
        "A stage whose latest events/s per core is below (1 - max_drop) x the median of its recent runs is "
        "flagged, and the check warns."))
    baseline_runs: int = Field(default=5, ge=1, description="Earlier runs whose median is the baseline.")


@asset(
    group_name="operations",
    kinds={"python", "json", "png"},
    owners=["team:lhc-data-engineering"],
    tags={"stage": "operations"},
    io_manager_key="report_io_manager",
    description=("How fast each stage ran, from what every stage records in its materialization metadata: events "
                 "(or training samples) processed, wall and CPU seconds of the process tree, cores, events/s per "
                 "core, peak memory; the latest and past runs of each stage as a table, a PNG (throughput per "
                 "stage, history over runs) and report.json under <data root>/reports/pipeline_performance."),
)
def pipeline_performance(context: AssetExecutionContext, config: PipelinePerformanceConfig) -> Report:
    data = performance.report(performance.collect(context.instance, config.history), config.max_drop,
                              config.baseline_runs)
    if not data["stages"]:
        raise Failure(description="no stage has recorded its performance yet: materialize the pipeline first")
    png = performance.plot(data)
    slower = sorted(s for s, v in data["stages"].items() if v["slower"])
    return Report(data, {"throughput.png": png}, metadata={
        "stages": MetadataValue.md(performance.table(data)),
        "throughput": png_markdown(png, "events/s per core per stage, and over runs"),
        "stages_measured": len(data["stages"]),
        "stages_slower": MetadataValue.json(slower),
    })


@asset_check(asset=pipeline_performance, description=(
    "Warns (does not fail) when a stage's latest events/s per core is more than max_drop below the median of "
    "its recent runs."))
def stages_not_slower(pipeline_performance: dict) -> AssetCheckResult:
    slower = {s: v["regression"] for s, v in pipeline_performance["stages"].items() if v["slower"]}
    return AssetCheckResult(passed=not slower, severity=AssetCheckSeverity.WARN, metadata={
        "slower": MetadataValue.json(slower), "max_drop": pipeline_performance["max_drop"]})


monitoring_assets = [pipeline_performance]
monitoring_checks = [stages_not_slower]
performance_job = define_asset_job(
    "performance_job", selection=AssetSelection.assets(pipeline_performance),
    description="Every stage's recorded performance into pipeline_performance (a second; lhc-run ends with it).")
monitoring_jobs = [performance_job]
