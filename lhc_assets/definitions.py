"""The Dagster code location: every asset, check, job, sensor and resource of the platform."""

from __future__ import annotations

import warnings

from dagster import BetaWarning, Definitions, in_process_executor, with_source_code_references

from lhc_assets.defs.automation import retrain_on_new_data, with_retrain_conditions
from lhc_assets.defs.datasets import dataset_asset_checks, dataset_assets, dataset_jobs
from lhc_assets.defs.deployment import deployment_assets, deployment_checks, deployment_jobs
from lhc_assets.defs.evaluation import evaluation_assets, evaluation_jobs, model_checks
from lhc_assets.defs.ingestion import ingestion_assets, ingestion_jobs
from lhc_assets.defs.models import model_assets, model_jobs
from lhc_assets.defs.monitoring import monitoring_assets, monitoring_checks, monitoring_jobs
from lhc_assets.defs.physics.assets import physics_assets
from lhc_assets.defs.sensors import sensors
from resources import spark_resource_from_env, storage_from_env
from resources.io_manager import SparkParquetIOManager
from resources.json_io_manager import JsonIOManager, ReportIOManager
from resources.model_io_manager import KerasModelIOManager


def build_definitions() -> Definitions:
    spark = spark_resource_from_env()
    storage = storage_from_env()
    # One process per run, so one JVM per run: every Spark step of a run shares its SparkSession.
    # Code references let the UI open each asset's source; the retraining condition is inert until its
    # sensor is turned on (lhc_assets/defs/automation.py).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)  # code references are beta in 1.13; the UI shows them fine
        assets = with_retrain_conditions(with_source_code_references(
            [*ingestion_assets, *dataset_assets, *model_assets, *evaluation_assets, *deployment_assets,
             *physics_assets, *monitoring_assets]))
    return Definitions(
        assets=assets,
        asset_checks=[*dataset_asset_checks, *model_checks, *deployment_checks, *monitoring_checks],
        jobs=[*ingestion_jobs, *dataset_jobs, *model_jobs, *evaluation_jobs, *deployment_jobs, *monitoring_jobs],
        sensors=[*sensors, retrain_on_new_data],
        resources={
            "spark": spark,
            "storage": storage,
            "warehouse_io_manager": SparkParquetIOManager(storage=storage, spark=spark),
            "json_io_manager": JsonIOManager(storage=storage),
            "report_io_manager": ReportIOManager(storage=storage),
            "model_io_manager": KerasModelIOManager(storage=storage),
        },
        executor=in_process_executor,
    )


defs = build_definitions()
