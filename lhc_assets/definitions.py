"""The Dagster code location: every asset, check, job, sensor and resource of the platform."""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from resources import spark_resource_from_env, storage_from_env

# One process per run, so one JVM per run: Spark steps share the run's SparkSession.
defs = Definitions(
    assets=[],
    resources={
        "spark": spark_resource_from_env(),
        "storage": storage_from_env(),
    },
    executor=in_process_executor,
)
