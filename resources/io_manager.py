"""Spark DataFrames in and out of the warehouse as Parquet, one directory per asset and partition.

Layout of a partition (or of an unpartitioned asset)::

    <warehouse>/<asset>/<sample>/<file stem>/
        v-20261125T101500-1a2b3c4d/part-*.parquet     one complete version per successful write
        CURRENT                                       name of the version readers use

Writes are atomic: the data is written into a hidden staging directory (by Spark, or by the asset's
own Spark tasks with pyarrow: ``StagedParquet``); only when the whole job succeeded is each partition's
data moved to a new version directory and ``CURRENT`` replaced by an atomic rename. A failed or killed
materialization leaves ``CURRENT`` pointing at the previous good version, which is removed only after
the new one is in place.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableIOManager, Failure, InputContext, OutputContext

from lhc_assets.physics.partition_keys import key_path
from lhc_assets.spark.errors import input_error_message
from resources.publisher import STAGING_PREFIX, current_version, new_staging, new_version, publish_version
from resources.references import TableRef
from resources.spark import SparkResource
from resources.storage import StorageResource

PARTITION_COLUMN = "partition_key"

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

    ``after_write`` runs once the IO manager has written the table, with a reference to what it wrote; the
    metadata it returns is added to the materialization.
    """

    df: Any  # pyspark.sql.DataFrame
    after_write: Callable[[TableRef], dict[str, Any]] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)  # extra Parquet writer options (row group size, ...)


@dataclass
class StagedParquet:
    """Parquet files an asset wrote itself (from its Spark tasks, with pyarrow) for the IO manager to publish.

    ``staging`` comes from ``SparkParquetIOManager.new_staging_dir``; a partitioned asset writes each
    partition's files into ``staged_partition_dir(staging, key)``, an unpartitioned one into ``staging``.
    """

    staging: Path
    schema: pa.Schema  # for the empty table of a partition without rows
    metadata: dict[str, Any] = field(default_factory=dict)


class PartitionNotMaterialized(Exception):
    pass


def materialized_path(storage: StorageResource, asset_name: str, partition_key: str | None = None) -> Path | None:
    """The current version directory of a table (or one partition), None if never materialized: for tools,
    benchmarks and tests that inspect the warehouse; assets get theirs through their inputs (``TableRef``)."""
    base = storage.asset_dir(asset_name)
    return current_version(base if partition_key is None else base / key_path(partition_key))


def staged_partition_dir(staging: Path, partition_key: str) -> Path:
    """Where one partition's files go inside a staging directory (the layout of Spark's ``partitionBy``)."""
    return Path(staging) / f"_pk={_spark_escape(partition_key)}"


def _spark_escape(value: str) -> str:
    """How Spark names a ``partitionBy`` directory value (partition keys use a safe alphabet plus '/')."""
    return value.replace("%", "%25").replace("/", "%2F")


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
            raise PartitionNotMaterialized(f"{what} {asset_name!r} has not been materialized: materialize it first")
        return path

    # ---- writing

    def _new_version(self, context: OutputContext) -> str:
        return new_version(context.run_id)

    def write(self, df, asset_name: str, partition_keys: list[str] | None, version: str,
              options: dict[str, str] | None = None) -> dict[str, Path]:
        """Write ``df`` atomically; returns the published version directory per partition key."""
        base = self.asset_dir(asset_name)
        staging = new_staging(base, version, create=False)
        options = {**PARQUET_OPTIONS, **(options or {})}
        try:
            if partition_keys is None:
                df.write.mode("errorifexists").options(**options).parquet(str(staging))
                return {"": publish_version(staging, base, version)}
            if PARTITION_COLUMN not in df.columns:
                raise ValueError(f"{asset_name}: a partitioned table needs a '{PARTITION_COLUMN}' column")
            # A copy of the key drives the directory split, so the files keep their partition_key column.
            from pyspark.sql import functions as F

            df.withColumn("_pk", F.col(PARTITION_COLUMN)).write.mode("errorifexists").options(
                **options
            ).partitionBy("_pk").parquet(str(staging))
            return self._publish_partitions(staging, asset_name, partition_keys, version,
                                            lambda: _arrow_schema(df))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _publish_partitions(self, staging: Path, asset_name: str, partition_keys: list[str], version: str,
                            schema: Callable[[], pa.Schema]) -> dict[str, Path]:
        """Publish each ``staged_partition_dir`` as the partition's new version (an empty table if absent)."""
        expected = {staged_partition_dir(staging, k).name for k in partition_keys}
        unexpected = {p.name for p in staging.glob("_pk=*")} - expected
        if unexpected:
            raise ValueError(f"{asset_name}: rows for partitions outside this run: {sorted(unexpected)}")
        published = {}
        for key in partition_keys:
            src = staged_partition_dir(staging, key)
            if not src.is_dir():  # no rows for this partition: publish an empty table with the schema
                src.mkdir(parents=True)
                pq.write_table(schema().empty_table(), src / "part-00000-empty.parquet")
            published[key] = publish_version(src, self.partition_dir(asset_name, key), version)
        return published

    def new_staging_dir(self, asset_name: str) -> Path:
        """A fresh hidden directory under the asset's folder (same filesystem, so publishing is a rename)."""
        return new_staging(self.asset_dir(asset_name), create=False)

    def publish_staged(self, staged: StagedParquet, asset_name: str, partition_keys: list[str] | None,
                       version: str) -> dict[str, Path]:
        """Publish files an asset wrote into ``staged.staging``; the staging directory is gone afterwards."""
        staging = Path(staged.staging)
        if staging.parent != self.asset_dir(asset_name) or not staging.name.startswith(STAGING_PREFIX):
            raise ValueError(f"{asset_name}: staged files must be in new_staging_dir({asset_name!r}), got {staging}")
        try:
            if partition_keys is None:
                return {"": publish_version(staging, self.asset_dir(asset_name), version)}
            return self._publish_partitions(staging, asset_name, partition_keys, version, lambda: staged.schema)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def handle_output(self, context: OutputContext, obj) -> None:
        asset_name = context.asset_key.path[-1]
        keys = sorted(context.asset_partition_keys) if context.has_asset_partitions else None
        if isinstance(obj, StagedParquet):
            published = self.publish_staged(obj, asset_name, keys, self._new_version(context))
            context.add_output_metadata({**obj.metadata, **written_metadata(published, keys, self.asset_dir(
                asset_name))})
            return
        table = obj if isinstance(obj, SparkTable) else SparkTable(obj)
        try:
            published = self.write(table.df, asset_name, keys, self._new_version(context), table.options)
        except Exception as exc:
            message = input_error_message(exc)
            if message is None:
                raise
            # A bad input found inside a Spark task: say which file and what, not the JVM trace.
            raise Failure(description=message, metadata={"error": message}) from None
        metadata: dict[str, Any] = {**table.metadata, **written_metadata(published, keys, self.asset_dir(asset_name))}
        if table.after_write is not None:
            metadata.update(table.after_write(self.ref(asset_name, keys)))
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

    def ref(self, asset_name: str, partition_keys: list[str] | None) -> TableRef:
        """Where the table (or the given partitions) is stored; partitions never materialized are listed in
        ``missing``, an unpartitioned table never materialized raises."""
        if partition_keys is None:
            return TableRef(asset_name, {None: self.partition_path(asset_name, None)})
        found = {k: current_version(self.partition_dir(asset_name, k)) for k in partition_keys}
        return TableRef(asset_name, {k: p for k, p in found.items() if p is not None},
                        tuple(k for k, p in found.items() if p is None))

    def load_input(self, context: InputContext):
        """A ``TableRef`` for inputs typed so, else one DataFrame over the partitions the input maps to."""
        asset_name = context.asset_key.path[-1]
        keys = sorted(context.asset_partition_keys) if context.has_asset_partitions else None
        if context.dagster_type.typing_type is TableRef:
            return self.ref(asset_name, keys)
        return self.load(asset_name, keys)


def _arrow_schema(df) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(df.schema)


def written_metadata(published: dict[str, Path], keys: list[str] | None, asset_dir: Path) -> dict[str, Any]:
    """rows_written and path of what was just published (footers only: cheap)."""
    metadata: dict[str, Any] = {"rows_written": sum(_parquet_rows(p) for p in published.values())}
    if keys is None:
        metadata["path"] = str(published[""])
    elif len(keys) == 1:
        metadata["path"] = str(published[keys[0]])
    else:
        metadata["path"] = str(asset_dir)
        metadata["partitions_written"] = len(keys)
    return metadata


def _parquet_rows(directory: Path) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in directory.glob("*.parquet"))
