"""Backfills from the command line against a real Dagster daemon: ``lhc backfill`` / ``lhc failures``,
``dagster job backfill`` (one run per partition) and the single-run ``dagster asset materialize --partition-range``.

One daemon serves the module; its new-file sensor is slowed down so that only the commands under test start runs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, DagsterRunStatus, RunsFilter

from lhc_assets.cli.home import create_storage, dagster_yaml
from lhc_assets.operations.backfill import daemon_heartbeat_age, register_input_files
from lhc_assets.operations.processes import stop_process_tree
from lhc_assets.physics.partition_keys import partition_key
from resources.process import PID_TAG
from resources.storage import StorageResource

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INGESTION = ("raw_events", "hlf_features", "llf_features")


class Deployment:
    def __init__(self, base: Path):
        self.home, self.data = base / "dagster_home", base / "data"
        self.home.mkdir()
        # The configuration the platform ships (run monitoring on), with a short monitoring interval.
        (self.home / "dagster.yaml").write_text(dagster_yaml(monitoring_interval_s=3))
        create_storage(self.home)
        self.env = {
            **os.environ, "DAGSTER_HOME": str(self.home), "LHC_DATA_ROOT": str(self.data),
            "LHC_SPARK_MASTER": "local[2]", "LHC_SPARK_DRIVER_MEMORY": "1g", "PYSPARK_PYTHON": sys.executable,
            # Files are registered by the commands under test, not by the sensor.
            "LHC_SENSOR_INTERVAL_S": "3600",
        }
        self.log = base / "daemon.log"
        self.daemon: subprocess.Popen | None = None

    def start_daemon(self) -> None:
        with self.log.open("w") as log:
            self.daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=REPO,
                                           env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop_daemon(self) -> None:
        """The daemon and everything it started (code server, runs, their JVMs), also what outlived it."""
        if self.daemon is not None:
            stop_process_tree(self.daemon, env=("DAGSTER_HOME", str(self.home)))

    def add(self, sample: str, src: Path, name: str | None = None) -> str:
        dest = self.data / "incoming" / sample / (name or src.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return partition_key(sample, dest.name)

    def cli(self, *args: str, timeout: float = 480) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_config(str(self.home))

    def daemon_log(self) -> str:
        return self.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, generated_files: dict[str, Path]) -> Iterator[Deployment]:
    d = Deployment(tmp_path_factory.mktemp("backfill_cli"))
    for sample, path in generated_files.items():
        d.add(sample, path)
    d.start_daemon()
    try:
        with d.instance() as instance:
            _wait_for(lambda: daemon_heartbeat_age(instance) is not None, 180, "the daemon's first heartbeat", d)
        yield d
    finally:
        d.stop_daemon()


def _wait_for(predicate, timeout: float, what: str, deployment: Deployment):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        assert deployment.daemon.poll() is None, f"daemon exited:\n{deployment.daemon_log()}"
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}\n{deployment.daemon_log()}")


def _materialized_since(instance: DagsterInstance, asset: str, key: str, since: float) -> bool:
    return bool(instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[key], after_timestamp=since), limit=1).records)


def test_without_a_daemon_lhc_backfill_says_how_to_start_one(tmp_path, generated_files):
    d = Deployment(tmp_path)
    d.add("qcd", generated_files["qcd"])
    out = d.cli("lhc", "backfill", "--all", timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "no Dagster daemon is running" in out.stderr and "--in-process" in out.stderr
    unknown = d.cli("lhc", "backfill", "--partitions", "ttbar/nope", timeout=120)
    assert unknown.returncode == 2 and "unknown partition(s): ttbar/nope" in unknown.stderr


@pytest.mark.timeout(900)
def test_lhc_backfill_all_then_failures_then_backfill_failed(deployment: Deployment, generated_files):
    bad = deployment.add("ttbar", Path(__file__), name="broken.root")  # not a ROOT file
    good = sorted(partition_key(s, p.name) for s, p in generated_files.items())

    out = deployment.cli("lhc", "backfill", "--all", timeout=600)
    assert out.returncode == 1, out.stdout + out.stderr + deployment.daemon_log()
    assert "registered 4 new input file(s) as partitions" in out.stdout
    # Each partition reported once, as it finished; the bad one with the file and the problem.
    lines = re.findall(r"^\[\d/4\] (materialized|failed)\s+(\S+?):?(?: |$)", out.stdout, re.M)
    assert len(lines) == 4, out.stdout
    assert {key: status for status, key in lines} == {**{k: "materialized" for k in good}, bad: "failed"}
    assert re.search(rf"failed\s+{re.escape(bad)}: .*broken\.root: not a readable ROOT file", out.stdout)
    assert "3 materialized, 1 failed" in out.stdout

    with deployment.instance() as instance:
        backfill_id = re.search(r"^backfill (\w+):", out.stdout, re.M).group(1)
        runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
        # Runs of at most 1,000 files, planned by lhc: one run (one Spark job) over the four files.
        assert "4 partition(s) of raw_events, hlf_features, llf_features in 1 run(s)" in out.stdout
        assert len(runs) == 1 and runs[0].status == DagsterRunStatus.FAILURE
        for asset in INGESTION:
            assert set(instance.get_materialized_partitions(AssetKey(asset))) == set(good)

    # `lhc failures` lists the bad partition, read from the failed run's events.
    listed = _wait_for(lambda: (r := deployment.cli("lhc", "failures", timeout=120)).returncode == 0
                       and bad in r.stdout and r.stdout, 120, "lhc failures to list the bad partition", deployment)
    assert "not a readable ROOT file" in listed and not any(k in listed for k in good), listed

    # The file is replaced by a good one: `lhc backfill --failed` re-runs exactly that partition.
    deployment.add("ttbar", generated_files["ttbar"], name="broken.root")
    again = deployment.cli("lhc", "backfill", "--failed", timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr + deployment.daemon_log()
    assert re.search(rf"^\[1/1\] materialized\s+{re.escape(bad)}$", again.stdout, re.M), again.stdout
    cleared = deployment.cli("lhc", "failures", timeout=120)
    assert cleared.returncode == 0 and "no failed partitions outstanding" in cleared.stdout
    history = deployment.cli("lhc", "failures", "--all", timeout=120)
    assert bad in history.stdout


@pytest.mark.timeout(600)
def test_dagster_job_backfill_runs_one_run_per_partition_in_the_daemon(deployment: Deployment, generated_files):
    keys = sorted(partition_key(s, generated_files[s].name) for s in ("qcd", "wjets"))
    with deployment.instance() as instance:
        register_input_files(instance, StorageResource(root=str(deployment.data)))
    since = time.time()
    out = deployment.cli("dagster", "job", "backfill", "-w", "workspace.yaml", "-j", "ingestion_job",
                         "--partitions", ",".join(keys), "--noprompt", timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    backfill_id = re.search(r"Launched backfill job `(\w+)`", out.stdout).group(1)

    with deployment.instance() as instance:
        def finished():
            runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
            return len(runs) == 2 and all(r.is_finished for r in runs) and runs

        runs = _wait_for(finished, 480, "the backfill's two runs to finish", deployment)
        assert sorted(r.tags["dagster/partition"] for r in runs) == keys
        assert all(r.status == DagsterRunStatus.SUCCESS for r in runs), [r.status for r in runs]
        assert all(_materialized_since(instance, a, k, since) for a in INGESTION for k in keys)


@pytest.mark.timeout(600)
def test_single_run_backfill_of_a_partition_range_from_dagster_asset_materialize(deployment: Deployment,
                                                                                generated_files):
    with deployment.instance() as instance:
        register_input_files(instance, StorageResource(root=str(deployment.data)))
        ordered = list(instance.get_dynamic_partitions("delphes_files"))
        before = {r.run_id for r in instance.get_runs()}
    first, last = ordered[0], ordered[-1]
    since = time.time()
    out = deployment.cli("dagster", "asset", "materialize", "-m", "lhc_assets.definitions",
                         "--select", ",".join(INGESTION), "--partition-range", f"{first}...{last}", timeout=480)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    with deployment.instance() as instance:
        new = [r for r in instance.get_runs() if r.run_id not in before]
        assert len(new) == 1, [r.tags for r in new]
        assert new[0].tags["dagster/asset_partition_range_start"] == first
        assert new[0].tags["dagster/asset_partition_range_end"] == last
        assert all(_materialized_since(instance, a, k, since) for a in INGESTION for k in ordered)


@pytest.mark.timeout(600)
def test_a_run_killed_in_the_daemon_is_marked_failed_and_retried_with_backfill_failed(deployment: Deployment,
                                                                                    generated_files):
    key = partition_key("qcd", generated_files["qcd"].name)
    out = deployment.cli("lhc", "backfill", "--partitions", key, "--no-wait", timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    backfill_id = re.search(r"^backfill (\w+):", out.stdout, re.M).group(1)

    with deployment.instance() as instance:
        def tagged_run():
            runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
            return runs and PID_TAG in runs[0].tags and runs[0].status == DagsterRunStatus.STARTED and runs[0]

        run = _wait_for(tagged_run, 300, "the run to start and record its process", deployment)
        os.kill(int(run.tags[PID_TAG]), signal.SIGKILL)  # the run worker, as the OOM killer would
        killed_at = time.monotonic()
        failed = _wait_for(lambda: (r := instance.get_run_by_id(run.run_id)).status == DagsterRunStatus.FAILURE
                           and r, 120, "run monitoring to mark the killed run failed", deployment)
        assert time.monotonic() - killed_at < 60  # monitoring polls every 3 s here
        assert failed.status == DagsterRunStatus.FAILURE

    listed = deployment.cli("lhc", "failures", timeout=120)
    assert key in listed.stdout and "ended without finishing" in listed.stdout, listed.stdout
    again = deployment.cli("lhc", "backfill", "--failed", timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr + deployment.daemon_log()
    assert re.search(rf"^\[1/1\] materialized\s+{re.escape(key)}$", again.stdout, re.M), again.stdout
    assert "no failed partitions outstanding" in deployment.cli("lhc", "failures", timeout=120).stdout


@pytest.mark.timeout(600)
def test_lhc_backfill_with_retries_follows_a_killed_run_to_its_retry(deployment: Deployment, generated_files):
    """One run per file and Dagster's retries: the run killed mid-way is retried by the daemon, and `lhc backfill`
    says so, then reports the partition materialized by the retry (exit 0, nothing left for `lhc failures`)."""
    key = partition_key("wjets", generated_files["wjets"].name)
    with deployment.instance() as instance:
        before = {r.run_id for r in instance.get_runs()}
        proc = subprocess.Popen([str(BIN / "lhc"), "backfill", "--partitions", key, "--partitions-per-run", "1",
                                 "--retries", "1"], cwd=REPO, env=deployment.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            def started():
                runs = [r for r in instance.get_runs() if r.run_id not in before]
                return runs and PID_TAG in runs[0].tags and runs[0].status == DagsterRunStatus.STARTED and runs[0]

            run = _wait_for(started, 300, "the backfill's run to start", deployment)
            os.kill(int(run.tags[PID_TAG]), signal.SIGKILL)
            out, _ = proc.communicate(timeout=480)
        finally:
            if proc.poll() is None:
                proc.kill()
        runs = [r for r in instance.get_runs() if r.run_id not in before]
    assert proc.returncode == 0, out + deployment.daemon_log()
    assert "in 1 run(s), each retried up to 1 time(s)" in out
    assert re.search(rf"run {run.run_id[:8]} \({re.escape(key)}\) failed, the daemon retries it: .*pid", out), out
    assert re.search(rf"^\[1/1\] materialized\s+{re.escape(key)}$", out, re.M), out
    by_id = {r.run_id: r for r in runs}
    retry = by_id[by_id[run.run_id].tags["dagster/auto_retry_run_id"]]
    assert by_id[run.run_id].status == DagsterRunStatus.FAILURE and retry.status == DagsterRunStatus.SUCCESS
    assert retry.tags["dagster/retry_number"] == "1" and len(runs) == 2
    assert key not in deployment.cli("lhc", "failures", timeout=120).stdout
