"""The new-file sensor driven through the framework: `evaluate_tick` on a real instance, tick after tick.

The helper applies each tick's dynamic-partition requests to the instance, as the daemon does, and carries
the cursor. These tests never start Spark; the end-to-end test at the bottom starts the real daemon.
"""

from __future__ import annotations

import builtins
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, instance_for_test
from dagster._core.definitions.sensor_definition import SensorExecutionData

from lhc_assets.defs.partitions import INPUT_FILE_TAG
from lhc_assets.defs.sensors.new_files import (
    INTERVAL_ENV,
    MAX_RUNS_ENV,
    MAX_RUNS_PER_TICK,
    PENDING_FACTOR,
    SETTLE_ENV,
    new_delphes_files_sensor,
)
from lhc_assets.operations.processes import stop_process_tree
from lhc_assets.physics.partition_keys import partition_key

REPO = Path(__file__).resolve().parents[3]


class Harness:
    """A data root, an instance and the definitions bound to them; `tick()` is one sensor evaluation."""

    def __init__(self, root: Path, instance: DagsterInstance):
        from dagster import build_sensor_context

        from lhc_assets.definitions import build_definitions

        self.root = root
        self.incoming = root / "incoming"
        self.instance = instance
        self.defs = build_definitions()
        self.cursor: str | None = None
        self.warnings: list[str] = []
        self._build = build_sensor_context

    def add(self, sample: str, name: str, content: bytes = b"") -> Path:
        path = self.incoming / sample / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path

    def tick(self) -> SensorExecutionData:
        # As in the daemon: an instance ref (run requests for dynamic partitions are validated against the
        # instance plus this tick's partition requests), and only the resources the sensor needs.
        with self._build(instance=self.instance, instance_ref=self.instance.get_ref(), cursor=self.cursor,
                         definitions=self.defs,
                         resources={"storage": self.defs.resources["storage"]}) as context:
            handler = _ListHandler(self.warnings)
            context.log.addHandler(handler)
            data = new_delphes_files_sensor.evaluate_tick(context)
        for request in data.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        self.cursor = data.cursor
        return data

    def registered(self) -> list[str]:
        return self.instance.get_dynamic_partitions("delphes_files")


class _ListHandler(logging.Handler):
    def __init__(self, out: list[str]):
        super().__init__(level=logging.WARNING)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        self.out.append(record.getMessage())


def keys_of(data: SensorExecutionData) -> list[str]:
    return [r.partition_key for r in data.run_requests or []]


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setenv("LHC_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv(SETTLE_ENV, "0")  # the settle time has its own test
    monkeypatch.delenv(MAX_RUNS_ENV, raising=False)
    with instance_for_test() as instance:
        yield Harness(tmp_path / "data", instance)


def test_sensor_is_defined_on_ingestion_job_and_running_by_default():
    from dagster import DefaultSensorStatus

    from lhc_assets.definitions import defs

    sensor = defs.resolve_sensor_def("new_delphes_files_sensor")
    assert sensor.job_name == "ingestion_job"
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    assert sensor.required_resource_keys == {"storage"}
    assert sensor.description


def test_file_is_requested_on_second_unchanged_sighting_and_never_again(harness: Harness):
    harness.add("ttbar", "ttbar_seed1_0000.root", b"not a ROOT file at all")  # contents are never looked at
    key = partition_key("ttbar", "ttbar_seed1_0000.root")

    first = harness.tick()
    assert keys_of(first) == [] and harness.registered() == []
    assert "waiting" in first.skip_message

    second = harness.tick()
    assert keys_of(second) == [key]
    request = second.run_requests[0]
    assert request.job_name in (None, "ingestion_job")  # None: the sensor's own job, ingestion_job
    st = (harness.incoming / key).with_suffix(".root").stat()
    assert request.run_key == f"{key}:{st.st_size}:{st.st_mtime_ns}"
    assert [list(r.partition_keys) for r in second.dynamic_partitions_requests] == [[key]]
    assert harness.registered() == [key]
    # The partition is a real partition of the job now.
    job = harness.defs.resolve_job_def("ingestion_job")
    assert key in job.partitions_def.get_partition_keys(dynamic_partitions_store=harness.instance)

    for _ in range(3):
        assert keys_of(harness.tick()) == []
    # A lost cursor (daemon state wiped) and a foreign one do not bring it back: the partition exists.
    for cursor in (None, "not json", json.dumps({"v": 99})):
        harness.cursor = cursor
        assert keys_of(harness.tick()) == []
        assert keys_of(harness.tick()) == []
    assert json.loads(harness.cursor)["pending"] == {}


def test_growing_file_waits_until_unchanged(harness: Harness):
    path = harness.add("wjets", "w.root", b"x" * 10)
    harness.tick()
    with path.open("ab") as f:
        f.write(b"y" * 10)
    assert keys_of(harness.tick()) == []  # size changed since the last tick
    with path.open("ab") as f:
        f.write(b"z")
    assert keys_of(harness.tick()) == []
    assert keys_of(harness.tick()) == ["wjets/w"]


def test_touched_file_waits_and_recent_file_waits_for_settle_time(harness: Harness, monkeypatch):
    monkeypatch.setenv(SETTLE_ENV, "3600")
    path = harness.add("qcd", "q.root", b"abc")
    harness.tick()
    assert keys_of(harness.tick()) == []  # unchanged, but younger than the settle time
    old = time.time() - 7200
    os.utime(path, (old, old))
    assert keys_of(harness.tick()) == []  # mtime changed: seen anew
    assert keys_of(harness.tick()) == ["qcd/q"]


def test_hidden_partial_files_are_ignored_until_renamed_into_place(harness: Harness):
    partial = harness.add("ttbar", ".ttbar_seed2_0000.root.k3j4.partial", b"half")
    harness.add("ttbar", ".hidden.root", b"dotfile")
    for _ in range(3):
        data = harness.tick()
        assert keys_of(data) == []
        assert json.loads(harness.cursor)["pending"] == {}
    assert harness.warnings == []
    partial.rename(partial.with_name("ttbar_seed2_0000.root"))
    assert keys_of(harness.tick()) == []
    assert keys_of(harness.tick()) == ["ttbar/ttbar_seed2_0000"]


def test_zero_byte_and_odd_but_supported_names_are_requested(harness: Harness):
    harness.add("qcd", "empty.root")
    harness.add("qcd", "my file (v2).root", b"\x00\xff" * 8)
    harness.tick()
    expected = {partition_key("qcd", "empty.root"), partition_key("qcd", "my file (v2).root")}
    result = harness.tick()
    assert set(keys_of(result)) == expected
    # Each run names its file, so the ingestion finds it without listing incoming/ (the key is hashed here).
    assert {r.partition_key: r.tags[INPUT_FILE_TAG] for r in result.run_requests} == {
        partition_key("qcd", "empty.root"): "qcd/empty.root",
        partition_key("qcd", "my file (v2).root"): "qcd/my file (v2).root"}
    assert harness.warnings == []


def test_unsupported_names_are_skipped_and_reported_once(harness: Harness):
    harness.add("ttbar", "good.root", b"x")
    bad = [harness.add("ttbar", "notes.txt"), harness.add("ttbar", "run.root.gz"), harness.add("ttbar", "UP.ROOT")]
    (harness.incoming / "stray.root").write_bytes(b"x")  # not inside a sample directory
    harness.add("higgs", "h.root")  # unknown sample
    (harness.incoming / "ttbar" / "dir.root").mkdir()  # not a file: ignored

    harness.tick()
    assert len(harness.warnings) == 1
    for name in ("ttbar/notes.txt", "ttbar/run.root.gz", "ttbar/UP.ROOT", "stray.root", "higgs/"):
        assert name in harness.warnings[0]
    assert keys_of(harness.tick()) == ["ttbar/good"]
    harness.tick()
    assert len(harness.warnings) == 1  # reported once, not on every tick

    harness.add("wjets", "later.dat")
    harness.tick()
    assert len(harness.warnings) == 2 and "wjets/later.dat" in harness.warnings[1]
    assert "notes.txt" not in harness.warnings[1]

    # Forgotten once gone, so the cursor only holds names that still exist.
    for path in bad:
        path.unlink()
    harness.tick()
    assert sorted(json.loads(harness.cursor)["reported"]) == ["higgs/", "stray.root", "wjets/later.dat"]


def test_tick_never_opens_files(harness: Harness, monkeypatch):
    for i in range(5):
        harness.add("ttbar", f"f{i}.root", os.urandom(64))
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    def spy_os_open(path, *args, **kwargs):
        opened.append(str(path))
        return real_os_open(path, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(builtins, "open", spy_open)
        m.setattr(io, "open", spy_open)  # what pathlib uses
        m.setattr(os, "open", spy_os_open)
        harness.tick()
        data = harness.tick()
    assert len(keys_of(data)) == 5
    assert not [p for p in opened if str(harness.root) in p]


def test_per_tick_bound_from_env_and_the_rest_on_later_ticks(harness: Harness, monkeypatch):
    monkeypatch.setenv(MAX_RUNS_ENV, "7")
    names = [f"wjets_{i:03d}.root" for i in range(20)]
    base = time.time() - 1000
    for i, name in enumerate(names):
        path = harness.add("wjets", name)
        os.utime(path, (base + i, base + i))  # distinct ages: requested oldest first
    per_tick = [keys_of(harness.tick()) for _ in range(5)]
    assert [len(k) for k in per_tick] == [0, 7, 7, 6, 0]
    flat = [k for ks in per_tick for k in ks]
    assert flat == [partition_key("wjets", n) for n in names]
    assert sorted(harness.registered()) == sorted(flat)


def test_ten_thousand_files_tick_is_cheap_and_bounded(harness: Harness):
    samples = ("qcd", "ttbar", "wjets")
    for s in samples:
        (harness.incoming / s).mkdir(parents=True)
    for i in range(10_000):
        (harness.incoming / samples[i % 3] / f"{samples[i % 3]}_seed7_{i:05d}.root").touch()

    seen: set[str] = set()
    durations = []
    for n in range(6):
        t0 = time.perf_counter()
        data = harness.tick()
        durations.append(time.perf_counter() - t0)
        keys = keys_of(data)
        assert len(keys) == (0 if n == 0 else MAX_RUNS_PER_TICK)
        assert not seen & set(keys)
        seen |= set(keys)
        # The cursor stays small whatever the directory holds.
        assert len(json.loads(data.cursor)["pending"]) <= PENDING_FACTOR * MAX_RUNS_PER_TICK
        assert len(data.cursor) < 20_000
    assert max(durations) < 5.0, durations
    assert len(harness.registered()) == 5 * MAX_RUNS_PER_TICK
    print(f"\n10,000-file tick durations (s): {[round(d, 3) for d in durations]}")


# --- end to end: the real daemon -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_daemon_ingests_a_file_dropped_into_incoming(tmp_path: Path, generated_files: dict[str, Path]):
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "LHC_DATA_ROOT": str(data),
        "LHC_SPARK_MASTER": "local[2]",
        "LHC_SPARK_DRIVER_MEMORY": "1g",
        "PYSPARK_PYTHON": sys.executable,
        INTERVAL_ENV: "2",
        SETTLE_ENV: "1",
    }
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        # Dropped with the generator's convention: written under a hidden name, renamed into place.
        target = data / "incoming" / "ttbar"
        target.mkdir(parents=True)
        src = generated_files["ttbar"]
        partial = target / f".{src.name}.e2e.partial"
        shutil.copyfile(src, partial)
        partial.rename(target / src.name)
        key = partition_key("ttbar", src.name)

        assets = [AssetKey(a) for a in ("raw_events", "hlf_features", "llf_features")]
        deadline = time.monotonic() + 480
        done = False
        with DagsterInstance.from_config(str(home)) as instance:
            while time.monotonic() < deadline and not done:
                assert daemon.poll() is None, f"daemon exited:\n{(tmp_path / 'daemon.log').read_text()[-4000:]}"
                done = all(key in instance.get_materialized_partitions(a) for a in assets)
                if not done:
                    time.sleep(3)
            runs = instance.get_runs()
            detail = [(r.job_name, r.status.value, r.tags.get("dagster/partition")) for r in runs]
        tail = (tmp_path / "daemon.log").read_text()[-4000:]
        assert done, f"not materialized within the bound; runs: {detail}\n{tail}"
        # Exactly one run, for exactly that partition, requested by the sensor.
        assert [(j, p) for j, _, p in detail] == [("ingestion_job", key)]
        assert runs[0].tags.get("dagster/sensor_name") == "new_delphes_files_sensor"
        assert runs[0].tags.get(INPUT_FILE_TAG) == f"ttbar/{src.name}"
    finally:
        stop_process_tree(daemon, env=("DAGSTER_HOME", str(home)))
        log.close()
