"""Spark DataFrames in and out of the warehouse as Parquet, one directory per asset and partition.

Layout of a partition (or of an unpartitioned asset)::

    <warehouse>/<asset>/<sample>/<file stem>/
        v-20261125T101500-1a2b3c4d/part-*.parquet     one complete version per successful write
        CURRENT                                       name of the version readers use

Writes are atomic: Spark writes into a hidden staging directory; only when the whole job succeeded
is each partition's data moved to a new version directory and ``CURRENT`` replaced by an atomic
rename. A failed or killed materialization leaves ``CURRENT`` pointing at the previous good version,
which is removed only after the new one is in place.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableIOManager, Failure, InputContext, OutputContext

from lhc_assets.physics.partition_keys import key_path
from lhc_assets.spark.errors import input_error_message
from resources.spark import SparkResource
from resources.storage import StorageResource

CURRENT = "CURRENT"
PARTITION_COLUMN = "partition_key"
_STAGING_PREFIX = ".staging-"
_STALE_STAGING_S = 6 * 3600

# parquet-mr settings that matter for tables of long float arrays: dictionary encoding of
# high-cardinality floats costs time and then falls back anyway; page checksums and size
# statistics are per-value work nobody reads here. Identity strings keep their dictionaries.
PARQUET_OPTIONS = {
    "parquet.enable.dictionary": "false",
    "parquet.enable.dictionary#sample": "true",
    "parquet.enable.dictionary#file": "true",
    "parquet.enable.dictionary#partition_key": "true",
    "parquet.page.write-checksum.enabled": "false",
    "parquet.size.statistics.enabled": "false",
}


@dataclass
class SparkTable:
    """What an asset returns when its metadata can only be known after the write (Spark is lazy).

    ``after_write`` runs once the IO manager has written the table; the metadata it returns is
    added to the materialization.
    """

    df: Any  # pyspark.sql.DataFrame
    after_write: Callable[[], dict[str, Any]] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class PartitionNotMaterialized(Exception):
    pass


def _spark_escape(value: str) -> str:
    """How Spark names a ``partitionBy`` directory value (partition keys use a safe alphabet plus '/')."""
    return value.replace("%", "%25").replace("/", "%2F")


def _write_pointer(directory: Path, version: str) -> None:
    tmp = directory / f".{CURRENT}.{uuid.uuid4().hex}"
    tmp.write_text(version + "\n")
    os.replace(tmp, directory / CURRENT)


def current_version(directory: Path) -> Path | None:
    """The version directory ``CURRENT`` points at, or None if nothing was materialized."""
    try:
        name = (directory / CURRENT).read_text().strip()
    except FileNotFoundError:
        return None
    path = directory / name
    return path if path.is_dir() else None


def _prune_versions(directory: Path, keep: str) -> None:
    for child in directory.iterdir():
        if child.is_dir() and child.name.startswith("v-") and child.name != keep:
            shutil.rmtree(child, ignore_errors=True)


def _publish(src: Path, directory: Path, version: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    dest = directory / version
    os.replace(src, dest)
    _write_pointer(directory, version)
    _prune_versions(directory, version)
    return dest


class SparkParquetIOManager(ConfigurableIOManager):
    """Stores each asset (and each partition) as a versioned Parquet directory under the warehouse."""

    storage: StorageResource
    spark: SparkResource

    # ---- paths

    def asset_dir(self, asset_name: str) -> Path:
        return self.storage.asset_dir(asset_name)

    def partition_dir(self, asset_name: str, partition_key: str | None) -> Path:
        base = self.asset_dir(asset_name)
        return base if partition_key is None else base / key_path(partition_key)

    def partition_path(self, asset_name: str, partition_key: str | None) -> Path:
        """The current version directory of a partition; raises if it was never materialized."""
        path = current_version(self.partition_dir(asset_name, partition_key))
        if path is None:
            what = f"partition {partition_key!r} of asset" if partition_key else "asset"
            raise PartitionNotMaterialized(f"{what} {asset_name!r} has not been materialized")
        return path

    # ---- writing

    def _new_version(self, context: OutputContext) -> str:
        run = (context.run_id or "local")[:8]
        return f"v-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{run}-{uuid.uuid4().hex[:6]}"

    def _clean_stale_staging(self, base: Path) -> None:
        now = time.time()
        for child in base.glob(f"{_STAGING_PREFIX}*"):
            try:
                if now - child.stat().st_mtime > _STALE_STAGING_S:
                    shutil.rmtree(child, ignore_errors=True)
            except FileNotFoundError:
                pass

    def write(self, df, asset_name: str, partition_keys: list[str] | None, version: str) -> dict[str, Path]:
        """Write ``df`` atomically; returns the published version directory per partition key."""
        base = self.asset_dir(asset_name)
        base.mkdir(parents=True, exist_ok=True)
        self._clean_stale_staging(base)
        staging = base / f"{_STAGING_PREFIX}{version}"
        writer = df.write.mode("errorifexists")
        for k, v in PARQUET_OPTIONS.items():
            writer = writer.option(k, v)
        try:
            if partition_keys is None:
                writer.parquet(str(staging))
                return {"": _publish(staging, base, version)}
            if PARTITION_COLUMN not in df.columns:
                raise ValueError(f"{asset_name}: a partitioned table needs a '{PARTITION_COLUMN}' column")
            # A copy of the key drives the directory split, so the files keep their partition_key column.
            from pyspark.sql import functions as F

            df.withColumn("_pk", F.col(PARTITION_COLUMN)).write.mode("errorifexists").options(
                **PARQUET_OPTIONS
            ).partitionBy("_pk").parquet(str(staging))
            unexpected = {p.name for p in staging.glob("_pk=*")} - {f"_pk={_spark_escape(k)}" for k in partition_keys}
            if unexpected:
                raise ValueError(f"{asset_name}: rows for partitions outside this run: {sorted(unexpected)}")
            published = {}
            empty_schema = None
            for key in partition_keys:
                src = staging / f"_pk={_spark_escape(key)}"
                if not src.is_dir():  # no rows for this partition: publish an empty table with the schema
                    if empty_schema is None:
                        from pyspark.sql.pandas.types import to_arrow_schema

                        empty_schema = to_arrow_schema(df.schema)
                    src.mkdir(parents=True)
                    pq.write_table(pa.Table.from_batches([], schema=empty_schema), src / "part-00000-empty.parquet")
                published[key] = _publish(src, self.partition_dir(asset_name, key), version)
            return published
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def handle_output(self, context: OutputContext, obj) -> None:
        table = obj if isinstance(obj, SparkTable) else SparkTable(obj)
        asset_name = context.asset_key.path[-1]
        keys = sorted(context.asset_partition_keys) if context.has_asset_partitions else None
        try:
            published = self.write(table.df, asset_name, keys, self._new_version(context))
        except Exception as exc:
            message = input_error_message(exc)
            if message is None:
                raise
            # A bad input file found inside a Spark task: say which file and what, not the JVM trace.
            raise Failure(description=message, metadata={"error": message}) from None
        metadata: dict[str, Any] = dict(table.metadata)
        rows = {k: _parquet_rows(p) for k, p in published.items()}
        metadata["rows_written"] = sum(rows.values())
        if keys is None:
            metadata["path"] = str(published[""])
        elif len(keys) == 1:
            metadata["path"] = str(published[keys[0]])
        else:
            metadata["path"] = str(self.asset_dir(asset_name))
            metadata["partitions_written"] = len(keys)
        if table.after_write is not None:
            metadata.update(table.after_write())
        context.add_output_metadata(metadata)

    # ---- reading

    def load(self, asset_name: str, partition_keys: list[str] | None):
        """One DataFrame over the given partitions (all current versions) or the unpartitioned asset."""
        session = self.spark.get_session()
        if partition_keys is None:
            return session.read.parquet(str(self.partition_path(asset_name, None)))
        paths = [str(self.partition_path(asset_name, k)) for k in partition_keys]
        if not paths:
            raise PartitionNotMaterialized(f"no partitions of asset {asset_name!r} requested")
        return session.read.parquet(*paths)

    def load_input(self, context: InputContext):
        asset_name = context.asset_key.path[-1]
        keys = sorted(context.asset_partition_keys) if context.has_asset_partitions else None
        return self.load(asset_name, keys)


def _parquet_rows(directory: Path) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in directory.glob("*.parquet"))
