"""Stage 4a: the Keras classifiers' class probabilities computed inside Spark, for the test split and per file."""


import shutil
from typing import Any

import pyarrow.parquet as pq
from dagster import AssetExecutionContext, AssetIn, Config, Failure, MetadataValue, ResourceParam, asset
from pydantic import Field

from lhc_assets.defs.partitions import delphes_files
from lhc_assets.ml.contract import KERAS_MODELS
from lhc_assets.physics.schema import LABEL_NAMES
from lhc_assets.spark.metering import StageMeter
from resources.io_manager import SparkParquetIOManager, SparkTable, StagedParquet, staged_partition_dir
from resources.references import ModelRef, TableRef
from resources.spark import SparkResource

OWNERS = ["team:lhc-physics-ml"]
CLASS_NAMES = list(LABEL_NAMES)
SIGNAL = CLASS_NAMES.index("ttbar")
# Every registered Keras classifier, as a reference (its file): the Spark tasks load the models themselves.
MODEL_INS = {name: AssetIn(dagster_type=ModelRef) for name in KERAS_MODELS}


class EventScoresConfig(Config):
    efficiencies: list[float] = Field(default=[0.99, 0.95, 0.90],
                                      description="ttbar efficiencies of the trigger-style summary.")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _trigger_table(rows: list[dict]) -> str:
    backgrounds = [c for c in CLASS_NAMES if c != CLASS_NAMES[SIGNAL]]
    lines = ["| model | ttbar efficiency | " + " | ".join(f"{b} efficiency | {b} rejection" for b in backgrounds)
             + " |", "|---|---:|" + "---:|---:|" * len(backgrounds)]
    for r in rows:
        cells = [f"{_fmt(r['background'][b]['efficiency'])} | {_fmt(r['background'][b]['rejection'])}"
                 for b in backgrounds]
        lines.append(f"| {r['model']} | {r['signal_efficiency']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@asset(
    group_name="evaluation",
    kinds={"spark", "tensorflow", "parquet"},
    owners=OWNERS,
    tags={"stage": "evaluation"},
    ins=MODEL_INS,
    io_manager_key="warehouse_io_manager",
    description=("Class probabilities of every Keras classifier for each test_set event, computed inside Spark "
                 "(one mapInArrow pass; each Python worker loads each model once), with a trigger-style summary: "
                 "background rejection of QCD and W+jets at fixed ttbar efficiencies."),
)
def event_scores(config: EventScoresConfig, test_set, **models: ModelRef) -> SparkTable:
    from lhc_assets.spark.inference import score_events, trigger_summary

    meter = StageMeter(test_set.sparkSession.sparkContext.defaultParallelism)
    paths = {name: str(models[name].path) for name in KERAS_MODELS}
    scored = score_events(test_set, paths)

    def summary(written: TableRef) -> dict[str, Any]:
        cost = meter.metadata(sum(pq.read_metadata(f).num_rows for f in written.files()))
        rows = trigger_summary(written.read(scored.sparkSession), list(KERAS_MODELS), SIGNAL, config.efficiencies)
        return {"trigger_summary": MetadataValue.md(_trigger_table(rows)), "trigger": MetadataValue.json(rows),
                "models": MetadataValue.json(paths), **cost}

    return SparkTable(scored, after_write=summary)


@asset(
    partitions_def=delphes_files,
    group_name="evaluation",
    kinds={"spark", "tensorflow", "parquet"},
    owners=OWNERS,
    tags={"stage": "evaluation"},
    ins={"hlf_features": AssetIn(dagster_type=TableRef), "llf_features": AssetIn(dagster_type=TableRef),
         **MODEL_INS},
    io_manager_key="warehouse_io_manager",
    description=("Class probabilities of every Keras classifier for each selected event of an input file (any "
                 "partition of hlf_features/llf_features, not only the test split), the inputs scaled with "
                 "feature_scalers; one Spark task per file, each Python worker loading each model once."),
)
def file_event_scores(
    context: AssetExecutionContext, spark: SparkResource, warehouse_io_manager: ResourceParam[SparkParquetIOManager],
    feature_scalers: dict, hlf_features: TableRef, llf_features: TableRef, **models: ModelRef,
) -> StagedParquet:
    from lhc_assets.ml.scoring import FileScoreTask, score_file, scores_schema
    from lhc_assets.spark.tasks import run_tasks

    session = spark.get_session()
    meter = StageMeter(session.sparkContext.defaultParallelism)
    missing = [f"{key}: partition {key!r} of {ref.asset} has not been materialized"
               for ref in (hlf_features, llf_features) for key in ref.missing]
    if missing:
        raise Failure(description="feature tables missing; materialize the ingestion first:\n" + "\n".join(missing))
    paths = tuple((name, str(models[name].path)) for name in KERAS_MODELS)
    staging = warehouse_io_manager.new_staging_dir("file_event_scores")
    tasks = [FileScoreTask(key, tuple(map(str, hlf_features.files(key))), tuple(map(str, llf_features.files(key))),
                           paths, feature_scalers, str(staged_partition_dir(staging, key) / "part-00000.parquet"))
             for key in sorted(context.partition_keys)]
    try:
        results = run_tasks(session, score_file, tasks, description=f"scores of {len(tasks)} file(s)")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    rows = sum(r["rows"] for r in results)
    context.log.info(f"scored {rows} events of {len(results)} file(s) with {', '.join(KERAS_MODELS)}")
    return StagedParquet(staging, scores_schema(list(KERAS_MODELS)),
                         metadata={"events_scored": rows, "models": MetadataValue.json(dict(paths)),
                                   **meter.metadata(rows)})
