"""Create the Postgres-backed Dagster instance in ``$DAGSTER_HOME`` when it has none: ``deploy/dagster.postgres.yaml``
as its dagster.yaml, then its run, event-log and schedule tables, once, from this process (as
``lhc_assets.cli.home`` does for SQLite: the daemon's threads must not create them concurrently).

    DAGSTER_HOME=... DAGSTER_PG_HOST=... python deploy/instance.py     # `make ... LHC_DAGSTER_STORAGE=postgres`

An existing dagster.yaml is kept, but one that does not configure Postgres storage is refused: a SQLite instance
directory is never turned into (or mistaken for) the Postgres one. Prints the dagster.yaml's path.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().with_name("dagster.postgres.yaml")
SERVER_ENV = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD")


def is_postgres(config_text: str) -> bool:
    import yaml

    config = yaml.safe_load(config_text) or {}
    return "postgres" in (config.get("storage") or {})


def ensure_postgres_home(home: Path) -> Path:
    """``home/dagster.yaml`` from the template and the instance's tables, unless it exists; returns its path."""
    from lhc_assets.cli.home import create_storage

    config = home / "dagster.yaml"
    if config.exists():
        if not is_postgres(config.read_text()):
            raise SystemExit(f"{config} does not configure Postgres storage (storage: postgres:); use another "
                             "DAGSTER_HOME for the Postgres instance (default ./.dagster_home_postgres)")
        return config
    missing = [name for name in SERVER_ENV if name not in os.environ]
    if missing:
        raise SystemExit(f"set {', '.join(missing)} (the Postgres server; DAGSTER_PG_PASSWORD may be empty)")
    home.mkdir(parents=True, exist_ok=True)
    config.write_text(TEMPLATE.read_text())
    try:
        create_storage(home)
    except Exception as exc:
        config.unlink()  # the next attempt starts over
        server = (f"{os.environ['DAGSTER_PG_USERNAME']}@{os.environ['DAGSTER_PG_HOST']}:"
                  f"{os.environ['DAGSTER_PG_PORT']}/{os.environ['DAGSTER_PG_DB']}")
        problem = " ".join(f"{exc} {exc.__cause__ or ''}".split())  # dagster-postgres wraps the driver's error
        raise SystemExit(f"cannot create the Dagster tables in {server}: {problem}") from exc
    return config


if __name__ == "__main__":
    if "DAGSTER_HOME" not in os.environ:
        sys.exit("set DAGSTER_HOME (the Postgres instance's directory)")
    print(ensure_postgres_home(Path(os.environ["DAGSTER_HOME"])))
