from __future__ import annotations

import sys

import pytest

from resources.spark import SparkResource, parse_conf, spark_resource_from_env


def test_parse_conf():
    assert parse_conf("a.b=1; c = x=y\n\nd=") == {"a.b": "1", "c": "x=y", "d": ""}
    with pytest.raises(ValueError, match="expected key=value"):
        parse_conf("spark.executor.memory")


def test_embedded_defaults(monkeypatch):
    for var in ("LHC_SPARK_MASTER", "LHC_SPARK_CONF", "LHC_SPARK_DRIVER_MEMORY"):
        monkeypatch.delenv(var, raising=False)
    conf = spark_resource_from_env().spark_conf()
    assert conf["spark.master"] == "local[*]"
    assert conf["spark.ui.enabled"] == "false"
    assert conf["spark.pyspark.python"] == sys.executable
    assert conf["spark.driver.host"] == "127.0.0.1"


def test_cluster_mode_is_configuration_only(monkeypatch):
    monkeypatch.setenv("LHC_SPARK_MASTER", "spark://10.0.0.5:7077")
    monkeypatch.setenv("LHC_SPARK_CONF", "spark.executor.memory=8g;spark.sql.shuffle.partitions=400")
    monkeypatch.setenv("LHC_SPARK_DRIVER_MEMORY", "16g")
    conf = spark_resource_from_env().spark_conf()
    assert conf["spark.master"] == "spark://10.0.0.5:7077"
    assert conf["spark.executor.memory"] == "8g"
    assert conf["spark.sql.shuffle.partitions"] == "400"
    assert conf["spark.driver.memory"] == "16g"
    assert "spark.driver.host" not in conf  # a cluster must reach the driver by its real address


def test_dagster_config_overrides_defaults():
    conf = SparkResource(master="local[1]", conf={"spark.ui.enabled": "true"}).spark_conf()
    assert conf["spark.master"] == "local[1]"
    assert conf["spark.ui.enabled"] == "true"


@pytest.mark.slow
def test_session_runs_python_workers_on_this_interpreter(spark):
    def interpreter(_):
        import sys as worker_sys

        yield worker_sys.executable

    found = set(spark.sparkContext.parallelize(range(4), 2).mapPartitions(interpreter).collect())
    assert found == {sys.executable}
    assert spark.conf.get("spark.sql.execution.arrow.pyspark.enabled") == "true"
