"""The Dagster home that `make run`, `make ui` and `lhc` create: telemetry off, queued runs limited (each is a JVM)."""

from __future__ import annotations

from dagster import DagsterInstance

from lhc_assets.cli.home import MAX_CONCURRENT_RUNS, ensure_dagster_home


def test_new_home_limits_concurrent_runs_and_an_existing_config_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    home = ensure_dagster_home()
    with DagsterInstance.get() as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == MAX_CONCURRENT_RUNS
        # Runs whose process died are noticed by the daemon (tests/cli/test_backfill_cli.py kills one).
        assert type(instance.run_launcher).__name__ == "LocalRunLauncher"
        assert instance.run_launcher.supports_check_run_worker_health
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_resume_run_attempts == 0
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 0
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    ensure_dagster_home()
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"
