"""The Spark session resource: embedded ``local[*]`` by default, a cluster by configuration only.

Configuration, in increasing precedence: built-in defaults, environment variables
(``LHC_SPARK_MASTER``, ``LHC_SPARK_DRIVER_MEMORY``, ``LHC_SPARK_CONF`` as ``key=value`` pairs separated
by ``;`` or newlines), then Dagster resource config. One session per process: Spark starts a JVM per
process, so every asset of a run (in-process executor) shares it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dagster import ConfigurableResource
from pydantic import Field

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

MASTER_ENV = "LHC_SPARK_MASTER"
LOG4J_CONFIG = Path(__file__).resolve().parents[1] / "lhc_assets" / "spark" / "log4j2.properties"
DRIVER_MEMORY_ENV = "LHC_SPARK_DRIVER_MEMORY"
CONF_ENV = "LHC_SPARK_CONF"


def parse_conf(text: str) -> dict[str, str]:
    """Parse ``key=value`` pairs separated by ``;`` or newlines (blank items ignored)."""
    conf: dict[str, str] = {}
    for item in text.replace("\n", ";").split(";"):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{CONF_ENV}: expected key=value, got {item!r}")
        conf[key.strip()] = value.strip()
    return conf


class SparkResource(ConfigurableResource):
    """Builds (or reuses) the process's SparkSession."""

    master: str = Field(default="local[*]", description="Spark master URL: local[N], spark://host:port, yarn, k8s://...")
    app_name: str = Field(default="lhc-topology")
    driver_memory: str = Field(default="4g", description="spark.driver.memory (takes effect when the JVM starts)")
    ui_enabled: bool = Field(default=False, description="Start the Spark web UI (port 4040).")
    conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark configuration.")

    def spark_conf(self) -> dict[str, str]:
        """The full configuration the session is built with."""
        conf = {
            "spark.master": self.master,
            "spark.app.name": self.app_name,
            "spark.driver.memory": self.driver_memory,
            "spark.ui.enabled": str(self.ui_enabled).lower(),
            # Progress goes to Dagster's event log; the console bar only garbles CLI output and logs.
            "spark.ui.showConsoleProgress": "false",
            # Executors must run this interpreter (the venv's), not whatever python is on PATH.
            "spark.pyspark.python": sys.executable,
            "spark.pyspark.driver.python": sys.executable,
            # Spark's daemon re-reads its bundled pyspark.zip before every Python task (~0.19 s of CPU each);
            # ours imports the installed pyspark instead (lhc_assets/spark/daemon.py).
            "spark.python.daemon.module": "lhc_assets.spark.daemon",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.sql.session.timeZone": "UTC",
            # Events are large (about 1,500 particles): keep Arrow batches to Python workers moderate.
            "spark.sql.execution.arrow.maxRecordsPerBatch": "2000",
            # The vectorized Parquet reader batches 4,096 rows by default: with ~7,000 array values per
            # event that is ~100 MB per column batch and runs a small heap out of memory.
            "spark.sql.parquet.columnarReaderBatchSize": "256",
            # Small default suited to one machine; clusters override through conf.
            "spark.sql.shuffle.partitions": str(max(2, 2 * (os.cpu_count() or 1))),
        }
        # The driver's log4j configuration: warnings and errors, not Spark's start-up notices.
        conf["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile=file:{LOG4J_CONFIG}"
        if self.master.startswith("local"):
            # Embedded mode talks only to itself: never depend on the host name resolving.
            conf["spark.driver.bindAddress"] = "127.0.0.1"
            conf["spark.driver.host"] = "127.0.0.1"
        conf.update(self.conf)
        return conf

    def get_session(self) -> SparkSession:
        """The process's SparkSession, created on first use with ``spark_conf()``."""
        from pyspark.sql import SparkSession

        conf = self.spark_conf()
        os.environ.setdefault("PYSPARK_PYTHON", conf["spark.pyspark.python"])
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", conf["spark.pyspark.driver.python"])
        if conf["spark.master"].startswith("local"):
            # Embedded mode binds to 127.0.0.1 anyway; without this the JVM warns that the host name resolves to
            # a loopback address before it reads the configuration.
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = SparkSession.builder
        for key, value in conf.items():
            builder = builder.config(key, value)
        return builder.getOrCreate()


def spark_resource_from_env() -> SparkResource:
    """The Spark resource configured from the environment (defaults: embedded local mode)."""
    return SparkResource(
        master=os.environ.get(MASTER_ENV, "local[*]"),
        driver_memory=os.environ.get(DRIVER_MEMORY_ENV, "4g"),
        conf=parse_conf(os.environ.get(CONF_ENV, "")),
    )
