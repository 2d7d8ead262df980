"""Plain Python work units as Spark tasks, and the worker daemon that keeps them cheap."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyspark
import pytest

from lhc_assets.spark.tasks import run_tasks

pytestmark = pytest.mark.slow


def describe_task(unit: dict) -> dict:
    """Runs on an executor: which Spark partition ran the unit, and the worker's import path."""
    from pyspark import TaskContext

    return {"n": unit["n"] * 2, "partition": TaskContext.get().partitionId(), "sys_path": sys.path, "pid": os.getpid()}


def test_each_unit_runs_as_its_own_task_and_results_keep_the_unit_order(spark):
    results = run_tasks(spark, describe_task, [{"n": n} for n in range(5)], description="test units")
    assert [r["n"] for r in results] == [0, 2, 4, 6, 8]
    assert sorted(r["partition"] for r in results) == [0, 1, 2, 3, 4]
    assert os.getpid() not in {r["pid"] for r in results}  # ran in Python workers, not the driver
    assert run_tasks(spark, describe_task, []) == []


def test_python_workers_do_not_carry_sparks_archives_on_their_path(spark):
    # With them, every task re-read pyspark.zip and the spark-core jar (~0.19 s of CPU per task).
    (result,) = run_tasks(spark, describe_task, [{"n": 1}])
    archives = [p for p in result["sys_path"] if p.endswith(".jar") or "pyspark.zip" in p or "py4j" in p]
    assert archives == []


def test_daemon_drops_the_archives_only_when_the_installed_packages_import(tmp_path):
    lib = Path(pyspark.__file__).parent / "python" / "lib"
    zips = [str(p) for p in sorted(lib.glob("*.zip"))]
    assert zips, "pip's pyspark ships python/lib/pyspark.zip"
    script = (
        "import sys; from lhc_assets.spark.daemon import drop_redundant_spark_zips as d; "
        "removed = d(); import pyspark; print(len(removed), pyspark.__file__)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(zips)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    n, where = out.stdout.split()
    assert int(n) == len(zips) and ".zip" not in where

    # An interpreter that has pyspark only in Spark's zip keeps it.
    bare = subprocess.run([sys.executable, "-S", "-c", "import sys; sys.path.insert(0, sys.argv[1]); " + script,
                           str(Path(__file__).resolve().parents[2])],
                          env=env, capture_output=True, text=True, check=True)
    n, where = bare.stdout.split()
    assert int(n) == 0 and "pyspark.zip" in where


def test_items_are_packed_into_one_group_per_task_of_similar_weight():
    from lhc_assets.spark.tasks import pack_by_weight

    weights = {"a": 5, "b": 1, "c": 4, "d": 2, "e": 3}
    groups = pack_by_weight(weights, 2)
    assert sorted(k for g in groups for k in g) == sorted(weights) and len(groups) == 2
    assert sorted(sum(weights[k] for k in g) for g in groups) == [7, 8]
    assert all(list(g) == sorted(g) for g in groups)
    assert pack_by_weight(weights, 2) == groups  # deterministic
    assert pack_by_weight({"a": 1}, 4) == [("a",)]
    assert pack_by_weight({}, 4) == []
