"""The production deployment (deploy/): Dagster's run, event-log and schedule storage on PostgreSQL.

The template and ``deploy/instance.py`` are checked here. The end-to-end test of the deployment is the soak's
(tests/benchmarks/test_soak_command.py): a real PostgreSQL server from Debian's ``postgresql`` package
(``lhc_assets.operations.local_postgres``), the instance made by ``deploy/instance.py``, the real ``dagster-daemon``,
the sensor and a backfill with killed runs and a killed daemon, a corrupt file named by ``lhc failures``; it checks
that everything went through Postgres (storage classes, the rows of ``runs``, no SQLite file in ``DAGSTER_HOME``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from lhc_assets.cli.home import dagster_yaml
from lhc_assets.operations.local_postgres import PostgresUnavailable, server_bin

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "dagster.postgres.yaml"


def _instance_module():
    spec = importlib.util.spec_from_file_location("deploy_instance", REPO / "deploy" / "instance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the template ------------------------------------------------------------------------------------------------


def test_the_postgres_template_is_the_sqlite_instance_with_postgres_storage():
    """Everything but the storage (and the coordinator, named explicitly) is what ``make run``'s SQLite instance has:
    telemetry off, 2 queued runs at most, run monitoring through LocalRunLauncher, no resumes, retries on request."""
    postgres = yaml.safe_load(TEMPLATE.read_text())
    storage = postgres.pop("storage")
    assert set(storage) == {"postgres"}
    server = storage["postgres"]["postgres_db"]
    assert server.pop("scheme") == "postgresql+psycopg2"  # the driver dagster-postgres depends on
    assert {field: value["env"] for field, value in server.items()} == {
        "hostname": "DAGSTER_PG_HOST", "port": "DAGSTER_PG_PORT", "db_name": "DAGSTER_PG_DB",
        "username": "DAGSTER_PG_USERNAME", "password": "DAGSTER_PG_PASSWORD"}
    assert postgres.pop("run_coordinator") == {"module": "dagster._core.run_coordinator",
                                               "class": "QueuedRunCoordinator"}
    assert postgres == yaml.safe_load(dagster_yaml())


def test_instance_script_refuses_a_sqlite_home_and_names_missing_settings(tmp_path, monkeypatch):
    module = _instance_module()
    sqlite_home = tmp_path / "sqlite"
    sqlite_home.mkdir()
    (sqlite_home / "dagster.yaml").write_text(dagster_yaml())
    with pytest.raises(SystemExit, match="does not configure Postgres storage"):
        module.ensure_postgres_home(sqlite_home)
    for name in module.SERVER_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAGSTER_PG_HOST", "127.0.0.1")
    with pytest.raises(SystemExit, match="set DAGSTER_PG_PORT, DAGSTER_PG_DB, DAGSTER_PG_USERNAME, DAGSTER_PG_PASS"):
        module.ensure_postgres_home(tmp_path / "new")
    assert not (tmp_path / "new" / "dagster.yaml").exists()


# --- the private server's prerequisites ----------------------------------------------------------------------------


def test_missing_server_binaries_are_named_with_the_package_to_install(tmp_path):
    with pytest.raises(PostgresUnavailable, match=r"apt-get install -y postgresql"):
        server_bin(str(tmp_path / "no-postgresql" / "*" / "bin" / "initdb"))


def test_the_newest_installed_server_is_chosen(tmp_path):
    for version in ("9", "15", "13"):
        (tmp_path / version / "bin").mkdir(parents=True)
        (tmp_path / version / "bin" / "initdb").touch()
    assert server_bin(str(tmp_path / "*" / "bin" / "initdb")) == tmp_path / "15" / "bin"
