"""The Dagster code location: every asset, check, job, sensor and resource of the platform."""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from lhc_assets.assets.ingestion import ingestion_assets, ingestion_jobs
from resources import spark_resource_from_env, storage_from_env
from resources.io_manager import SparkParquetIOManager


def build_definitions() -> Definitions:
    spark = spark_resource_from_env()
    storage = storage_from_env()
    # One process per run, so one JVM per run: every Spark step of a run shares its SparkSession.
    return Definitions(
        assets=[*ingestion_assets],
        jobs=[*ingestion_jobs],
        resources={
            "spark": spark,
            "storage": storage,
            "warehouse_io_manager": SparkParquetIOManager(storage=storage, spark=spark),
        },
        executor=in_process_executor,
    )


defs = build_definitions()
