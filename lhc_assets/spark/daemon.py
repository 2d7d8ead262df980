"""Spark's Python worker daemon (``pyspark.daemon``), with pyspark imported from the installed package.

Set as ``spark.python.daemon.module`` by the Spark resource. Why: the executors' PYTHONPATH lists
Spark's bundled ``pyspark.zip`` (3 MB, thousands of entries), the py4j zip and the spark-core jar even
when pyspark is pip-installed, and before every task ``pyspark.worker`` calls
``importlib.invalidate_caches()``, which makes Python 3.11's zip importer re-read each archive's whole
directory: about 0.19 s of CPU per task, measured (docs/performance.md). When the installed packages are
importable, these archives are dropped from ``sys.path`` before pyspark is imported; where an executor
has only Spark's archives, nothing changes.
"""

from __future__ import annotations

import importlib.util
import os
import sys

_SPARK_PACKAGES = ("pyspark", "py4j")


def _is_spark_archive(path: str) -> bool:
    name = os.path.basename(path)
    return path.endswith(".jar") or (path.endswith(".zip") and name.startswith(_SPARK_PACKAGES))


def drop_redundant_spark_zips() -> list[str]:
    """Remove Spark's archives from ``sys.path`` if pyspark and py4j import without them; returns the removed."""
    zips = [p for p in sys.path if _is_spark_archive(p)]
    if not zips or any(name in sys.modules for name in _SPARK_PACKAGES):
        return []
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if p not in zips]
    importlib.invalidate_caches()
    if all(importlib.util.find_spec(name) is not None for name in _SPARK_PACKAGES):
        for key in [k for k in sys.path_importer_cache if k.startswith(tuple(zips))]:
            del sys.path_importer_cache[key]
        return zips
    sys.path[:] = saved
    return []


if __name__ == "__main__":
    drop_redundant_spark_zips()
    from pyspark.daemon import manager

    manager()
