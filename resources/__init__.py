"""Dagster resources: the Spark session and the on-disk storage layout."""

from resources.spark import SparkResource, spark_resource_from_env
from resources.storage import StorageResource, storage_from_env

__all__ = ["SparkResource", "StorageResource", "spark_resource_from_env", "storage_from_env"]
