"""Atomic, versioned Parquet writes of the warehouse IO manager."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from resources.io_manager import PartitionNotMaterialized, SparkParquetIOManager
from resources.publisher import CURRENT, current_version
from resources.spark import SparkResource
from resources.storage import StorageResource


@pytest.fixture(autouse=True)
def _one_version_at_a_time(monkeypatch):
    """Keep no previous version, so that listings show exactly what a write published (retention is tested in
    test_publisher.py)."""
    monkeypatch.setenv("LHC_KEEP_VERSIONS", "0")

pytestmark = pytest.mark.slow


@pytest.fixture
def io(tmp_path, spark) -> SparkParquetIOManager:
    return SparkParquetIOManager(storage=StorageResource(root=str(tmp_path)), spark=SparkResource(master="local[2]"))


def _df(spark, keys, n=10):
    return spark.createDataFrame([(k, i) for k in keys for i in range(n)], "partition_key string, entry long")


def test_partitioned_write_and_read_back(io, spark):
    keys = ["qcd/a", "ttbar/b", "wjets/c"]
    published = io.write(_df(spark, keys), "table", keys, "v-1")
    assert set(published) == set(keys)
    assert io.load("table", keys).count() == 30
    assert io.load("table", ["ttbar/b"]).select("partition_key").distinct().collect()[0][0] == "ttbar/b"
    assert (io.partition_dir("table", "ttbar/b") / CURRENT).read_text().strip() == "v-1"


def test_partition_without_rows_is_an_empty_table_with_schema(io, spark):
    io.write(_df(spark, ["qcd/a"]), "table", ["qcd/a", "qcd/empty"], "v-1")
    empty = io.load("table", ["qcd/empty"])
    assert empty.count() == 0 and empty.columns == ["partition_key", "entry"]


def test_failed_write_keeps_the_previous_version_and_leaves_no_debris(io, spark):
    io.write(_df(spark, ["qcd/a"]), "table", ["qcd/a"], "v-1")
    good = current_version(io.partition_dir("table", "qcd/a"))
    broken = _df(spark, ["qcd/a"]).withColumn("entry", F.expr("assert_true(entry < 5)").cast("long"))
    with pytest.raises(Exception, match="is not true"):
        io.write(broken, "table", ["qcd/a"], "v-2")
    assert current_version(io.partition_dir("table", "qcd/a")) == good
    assert io.load("table", ["qcd/a"]).count() == 10
    assert not list(io.asset_dir("table").glob(".staging-*"))
    assert not (io.partition_dir("table", "qcd/a") / "v-2").exists()


def test_rows_outside_the_run_partitions_are_refused(io, spark):
    with pytest.raises(ValueError, match="outside this run"):
        io.write(_df(spark, ["qcd/a", "qcd/b"]), "table", ["qcd/a"], "v-1")
    assert current_version(io.partition_dir("table", "qcd/a")) is None


def test_unmaterialized_partition_is_reported(io):
    with pytest.raises(PartitionNotMaterialized, match="partition 'qcd/nope' of asset 'table'"):
        io.load("table", ["qcd/nope"])


def test_unpartitioned_asset(io, spark):
    io.write(spark.range(7), "summary", None, "v-a")
    io.write(spark.range(3), "summary", None, "v-b")
    assert io.load("summary", None).count() == 3
    assert sorted(p.name for p in io.asset_dir("summary").iterdir()) == [CURRENT, "v-b"]
