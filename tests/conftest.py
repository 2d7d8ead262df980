"""Shared fixtures. Spark starts one JVM per process, so there is one session-scoped SparkSession."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lhc_assets.physics.generators.rootio import write_delphes_file
from lhc_assets.physics.generators.toy import generate_file_batches
from lhc_assets.physics.schema import SAMPLES

SAMPLE_EVENTS = 800
SAMPLE_SEED = 11


def _jvm_started() -> bool:
    context = sys.modules.get("pyspark") and sys.modules["pyspark"].SparkContext
    return bool(context and context._gateway is not None)


_JVM_BEFORE = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    item.stash[_JVM_BEFORE] = _jvm_started()  # before the fixtures: a session fixture may start Spark
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A test that starts the JVM must be marked slow: ``make test``'s fast tier never waits for Spark."""
    outcome = yield
    if not item.stash.get(_JVM_BEFORE, True) and _jvm_started() and item.get_closest_marker("slow") is None:
        outcome.force_exception(pytest.fail.Exception(
            f"{item.nodeid} started a JVM (Spark) without the slow marker: mark it @pytest.mark.slow", pytrace=False))


@pytest.fixture(scope="session", autouse=True)
def pythia_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One cache of Pythia's initialisation for the whole session (minimum bias costs ~5 s once), private to it."""
    path = tmp_path_factory.mktemp("pythia-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("LHC_PYTHIA_CACHE", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="session")
def generated_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One generated Delphes file per sample (800 events each), shared by the whole session."""
    root = tmp_path_factory.mktemp("incoming")
    out = {}
    for sample in SAMPLES:
        (root / sample).mkdir()
        path = root / sample / f"{sample}_seed{SAMPLE_SEED}_0000.root"
        write_delphes_file(path, generate_file_batches(sample, SAMPLE_EVENTS, SAMPLE_SEED, 0))
        out[sample] = path
    return out


@pytest.fixture(scope="session")
def spark() -> Iterator:
    """The test session's one SparkSession, built by the project's Spark resource."""
    from resources.spark import SparkResource

    os.environ["PYSPARK_PYTHON"] = sys.executable
    resource = SparkResource(master="local[2]", driver_memory="2g", conf={"spark.sql.shuffle.partitions": "2"})
    session = resource.get_session()
    yield session
    session.stop()


class QuickRun:
    """A data root and Dagster home after ``lhc-run --quick`` (what ``make run`` does, tiny settings)."""

    def __init__(self, base: Path):
        self.base = base
        self.data_root = base / "data"
        self.dagster_home = base / "home"
        self.env = {**os.environ, "LHC_DATA_ROOT": str(self.data_root), "DAGSTER_HOME": str(self.dagster_home),
                    "LHC_SPARK_MASTER": "local[2]", "LHC_SAMPLE_FILES": "1", "LHC_SAMPLE_EVENTS": "1500",
                    "PYSPARK_PYTHON": sys.executable}
        self.first = self.run()

    def run(self):
        import subprocess

        return subprocess.run([str(Path(sys.executable).with_name("lhc-run")), "--quick"], env=self.env,
                              capture_output=True, text=True, timeout=800, check=False, cwd=self.base)


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    """``lhc-run --quick`` from nothing to model_evaluation, once per test session (several minutes)."""
    return QuickRun(tmp_path_factory.mktemp("quick_run"))
