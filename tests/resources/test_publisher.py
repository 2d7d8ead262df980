"""Versioned directories: a write is staged in a hidden directory, then published by renames; CURRENT names the
version readers use, the previous one is kept for a rollback, and older ones are removed only once the new one is
in place; staging left by dead processes is removed by the next write."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time

import psutil
import pytest

from resources.publisher import (
    CURRENT,
    KEEP_VERSIONS_ENV,
    OWNER_SEP,
    STAGING_PREFIX,
    STALE_STAGING_S,
    VERSION_PREFIX,
    clean_stale_staging,
    current_version,
    new_staging,
    new_version,
    prune_versions,
    publish,
    publish_version,
    staging,
    staging_owner,
    staging_owner_alive,
)

_GMTIME = time.gmtime
RUN_ID = "1a2b3c4d-0000-4000-8000-123456789abc"


def _writer(files: dict[str, bytes]):
    def write(directory):
        for name, data in files.items():
            (directory / name).write_bytes(data)

    return write


def _listing(base) -> list[str]:
    return sorted(p.name for p in base.iterdir())


def _age(path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


# ---- new_version ------------------------------------------------------------------------------------------


def test_a_version_name_carries_the_time_and_the_first_8_characters_of_the_run_id():
    name = new_version(RUN_ID)
    assert re.fullmatch(r"v-\d{8}T\d{6}-1a2b3c4d-[0-9a-f]{6}", name), name
    assert name.startswith(VERSION_PREFIX)
    assert re.fullmatch(r"v-\d{8}T\d{6}-abc-[0-9a-f]{6}", new_version("abc"))  # a short id is kept whole
    assert re.fullmatch(r"v-\d{8}T\d{6}-local-[0-9a-f]{6}", new_version(None))  # outside a run


def test_version_names_sort_by_time_whatever_the_run_id(monkeypatch):
    # Written at increasing times by runs whose ids sort the other way round.
    times = [1_700_000_000, 1_700_000_001, 1_700_003_600, 1_800_000_000]
    names = []
    for t, run_id in zip(times, ["ffffffff-4", "cccccccc-3", "bbbbbbbb-2", "00000000-1"], strict=True):
        monkeypatch.setattr(time, "gmtime", lambda *_, t=t: _GMTIME(t))
        names.append(new_version(run_id))
    monkeypatch.undo()
    assert sorted(names) == names
    assert names[0].startswith("v-20231114T221320-ffffffff-")  # UTC
    assert names[-1].startswith("v-20270115T080000-00000000-")


def test_two_versions_in_the_same_second_of_the_same_run_differ():
    names = {new_version(RUN_ID) for _ in range(20)}
    assert len(names) == 20


# ---- current_version ---------------------------------------------------------------------------------------


def test_nothing_published_has_no_current_version(tmp_path):
    assert current_version(tmp_path / "never_written") is None
    (tmp_path / "empty").mkdir()
    assert current_version(tmp_path / "empty") is None


def test_a_current_file_naming_a_missing_directory_is_no_version(tmp_path):
    (tmp_path / CURRENT).write_text("v-gone\n")
    assert current_version(tmp_path) is None


# ---- publish ---------------------------------------------------------------------------------------------


def test_publish_writes_one_version_and_points_current_at_it(tmp_path):
    base = tmp_path / "asset"
    published = publish(base, "v-1", _writer({"part-0.parquet": b"a", "part-1.parquet": b"b"}))

    assert published == base / "v-1"
    assert (base / CURRENT).read_text() == "v-1\n"
    assert current_version(base) == published
    assert _listing(published) == ["part-0.parquet", "part-1.parquet"]
    assert _listing(base) == [CURRENT, "v-1"]  # no staging, no temporary CURRENT left behind


def test_a_new_version_replaces_current_and_the_one_before_the_previous_is_removed(tmp_path):
    base = tmp_path / "asset"
    publish(base, "v-1", _writer({"old.parquet": b"1"}))
    publish(base, "v-2", _writer({"old.parquet": b"2"}))
    published = publish(base, "v-3", _writer({"new.parquet": b"3"}))

    assert current_version(base) == published == base / "v-3"
    assert _listing(base) == [CURRENT, "v-2", "v-3"]
    assert _listing(published) == ["new.parquet"]


def test_an_old_version_is_removed_only_after_current_names_the_new_one(tmp_path, monkeypatch):
    base = tmp_path / "asset"
    monkeypatch.setenv(KEEP_VERSIONS_ENV, "0")
    publish(base, "v-1", _writer({"a": b"1"}))
    seen = []
    rmtree = shutil.rmtree

    def watching_rmtree(path, *args, **kwargs):
        if os.path.basename(path) == "v-1":
            # What a reader sees at the moment the old version goes: CURRENT already on the new, complete one.
            seen.append((current_version(base), sorted(os.listdir(base / "v-2"))))
        return rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", watching_rmtree)
    publish(base, "v-2", _writer({"b": b"2"}))
    assert seen == [(base / "v-2", ["b"])]


def test_publishing_leaves_what_is_not_a_version_alone(tmp_path):
    base = tmp_path / "asset"
    publish(base, "v-1", _writer({"a": b"1"}))
    (base / f"{STAGING_PREFIX}concurrent").mkdir()  # another writer's work in progress
    (base / "key=QCD").mkdir()  # e.g. a partition directory of a partitioned table
    publish(base, "v-2", _writer({"b": b"2"}))
    publish(base, "v-3", _writer({"c": b"3"}))
    assert _listing(base) == [f"{STAGING_PREFIX}concurrent", CURRENT, "key=QCD", "v-2", "v-3"]


def test_a_failing_write_keeps_current_and_the_previous_version_and_leaves_no_staging(tmp_path):
    base = tmp_path / "asset"
    good = publish(base, "v-1", _writer({"model.keras": b"good"}))

    def write(directory):
        (directory / "model.keras").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        publish(base, "v-2", write)
    assert current_version(base) == good
    assert (base / CURRENT).read_text() == "v-1\n"
    assert (good / "model.keras").read_bytes() == b"good"
    assert _listing(base) == [CURRENT, "v-1"]


def test_a_failing_first_write_publishes_nothing(tmp_path):
    base = tmp_path / "asset"

    def write(directory):
        (directory / "part-0.parquet").write_bytes(b"half")
        raise KeyboardInterrupt  # not only Exception: an interrupted write is cleaned up too

    with pytest.raises(KeyboardInterrupt):
        publish(base, "v-1", write)
    assert current_version(base) is None
    assert _listing(base) == []


def test_publish_version_moves_a_staging_directory_into_place(tmp_path):
    base = tmp_path / "asset"
    src = new_staging(base)
    (src / "report.json").write_text("{}")
    published = publish_version(src, base, "v-1")
    assert published == base / "v-1" and not src.exists()
    assert (published / "report.json").read_text() == "{}"
    assert _listing(base) == [CURRENT, "v-1"]


# ---- staging ---------------------------------------------------------------------------------------------


def test_the_staging_block_gets_an_empty_hidden_directory_removed_afterwards(tmp_path):
    base = tmp_path / "asset"
    with staging(base) as path:
        assert path.is_dir() and not any(path.iterdir())
        assert path.parent == base and path.name.startswith(STAGING_PREFIX)
        (path / "sample.npz").write_bytes(b"x")
    assert not path.exists()
    assert _listing(base) == []


def test_the_staging_directory_is_removed_when_the_block_fails(tmp_path):
    base = tmp_path / "asset"
    with pytest.raises(RuntimeError, match="training failed"), staging(base) as path:
        (path / "checkpoint").write_bytes(b"x")
        raise RuntimeError("training failed")
    assert not path.exists()
    assert current_version(base) is None


# ---- new_staging and clean_stale_staging -----------------------------------------------------------------


def test_new_staging_creates_a_fresh_empty_hidden_directory_each_time(tmp_path):
    base = tmp_path / "a" / "b"  # parents are created
    first, second = new_staging(base), new_staging(base)
    assert first != second
    for path in (first, second):
        assert path.is_dir() and not any(path.iterdir())
        assert path.parent == base and path.name.startswith(f"{STAGING_PREFIX}{staging_owner()}{OWNER_SEP}")
        assert len(path.name.rsplit(OWNER_SEP, 1)[1]) == 32  # a uuid4 hex
    assert current_version(base) is None  # staging alone publishes nothing


def test_new_staging_without_create_returns_a_hidden_path_that_does_not_exist(tmp_path):
    base = tmp_path / "asset"
    path = new_staging(base, create=False)
    assert not path.exists()
    assert path.parent == base and base.is_dir()  # the writer (Spark) creates it, beside the versions
    assert path.name.startswith(STAGING_PREFIX) and path.name.startswith(".")
    assert new_staging(base, create=False) != path


def test_new_staging_with_a_name(tmp_path):
    path = new_staging(tmp_path, name="job-42", create=False)
    assert path == tmp_path / f"{STAGING_PREFIX}{staging_owner()}{OWNER_SEP}job-42"
    assert not path.exists()


def test_clean_stale_staging_removes_only_staging_directories_older_than_the_threshold(tmp_path):
    base = tmp_path / "asset"
    base.mkdir()
    stale = base / f"{STAGING_PREFIX}killed"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "part-0.parquet").write_bytes(b"x")
    recent = base / f"{STAGING_PREFIX}running"
    recent.mkdir()
    old_version = base / "v-1"
    old_version.mkdir()
    _age(stale, STALE_STAGING_S + 60)
    _age(recent, STALE_STAGING_S - 60)
    _age(old_version, 10 * STALE_STAGING_S)  # an old version is not staging: never removed here

    clean_stale_staging(base)
    assert _listing(base) == [f"{STAGING_PREFIX}running", "v-1"]


def test_clean_stale_staging_with_a_threshold(tmp_path):
    older, newer = tmp_path / f"{STAGING_PREFIX}older", tmp_path / f"{STAGING_PREFIX}newer"
    older.mkdir()
    newer.mkdir()
    _age(older, 120)
    _age(newer, 30)
    clean_stale_staging(tmp_path, max_age_s=60)
    assert _listing(tmp_path) == [f"{STAGING_PREFIX}newer"]


def test_clean_stale_staging_of_a_missing_base_does_nothing(tmp_path):
    clean_stale_staging(tmp_path / "never_written")
    assert not (tmp_path / "never_written").exists()


def test_a_new_staging_directory_cleans_stale_ones_and_is_never_removed_itself(tmp_path):
    base = tmp_path / "asset"
    base.mkdir()
    stale = base / f"{STAGING_PREFIX}killed"
    stale.mkdir()
    _age(stale, STALE_STAGING_S + 1)

    fresh = new_staging(base)
    assert not stale.exists() and fresh.is_dir()
    clean_stale_staging(base)  # what the next writer does
    assert fresh.is_dir()


def test_a_publish_cleans_stale_staging_left_by_a_killed_write(tmp_path):
    base = tmp_path / "asset"
    publish(base, "v-1", _writer({"a": b"1"}))
    killed = base / f"{STAGING_PREFIX}killed"
    killed.mkdir()
    _age(killed, STALE_STAGING_S + 1)
    publish(base, "v-2", _writer({"b": b"2"}))
    assert _listing(base) == [CURRENT, "v-1", "v-2"]


# ---- staging of dead processes, kept versions ------------------------------------------------------------


def _dead_process_owner() -> str:
    """The staging owner a process that has exited would have left (same host, its pid and start time)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    start = int(psutil.Process(proc.pid).create_time())
    proc.kill()
    proc.wait()
    return OWNER_SEP.join((socket.gethostname().replace(OWNER_SEP, "-"), str(proc.pid), str(start)))


def test_staging_of_a_dead_process_is_removed_at_once_and_a_live_ones_never(tmp_path):
    base = tmp_path / "asset"
    base.mkdir()
    killed = base / f"{STAGING_PREFIX}{_dead_process_owner()}{OWNER_SEP}write"
    (killed / "_pk=a").mkdir(parents=True)
    (killed / "_pk=a" / "part-0.parquet").write_bytes(b"x" * 1000)
    alive = base / f"{STAGING_PREFIX}{staging_owner()}{OWNER_SEP}other-write"
    alive.mkdir()
    _age(alive, 10 * STALE_STAGING_S)  # however old: its process is still running
    assert staging_owner_alive(killed.name) is False and staging_owner_alive(alive.name) is True

    assert clean_stale_staging(base) == 1000
    assert _listing(base) == [alive.name]


def test_a_reused_pid_with_another_start_time_is_not_the_owner(tmp_path):
    host, pid, start = staging_owner().split(OWNER_SEP)
    assert staging_owner_alive(f"{STAGING_PREFIX}{host}~{pid}~{int(start) - 100}~w") is False


def test_staging_of_another_host_falls_back_to_its_age(tmp_path):
    other = tmp_path / f"{STAGING_PREFIX}elsewhere.example~123~456~w"
    other.mkdir()
    assert staging_owner_alive(other.name) is None
    clean_stale_staging(tmp_path)
    assert other.exists()
    _age(other, STALE_STAGING_S + 1)
    clean_stale_staging(tmp_path)
    assert not other.exists()


def test_previous_versions_kept_to_the_configured_count(tmp_path, monkeypatch):
    base = tmp_path / "asset"
    for i in range(1, 4):
        publish(base, f"v-{i}", _writer({"data": b"x" * 100}))
    assert _listing(base) == [CURRENT, "v-2", "v-3"]  # default: the previous one, for a rollback
    monkeypatch.setenv(KEEP_VERSIONS_ENV, "0")
    publish(base, "v-4", _writer({"data": b"y"}))
    assert _listing(base) == [CURRENT, "v-4"]
    monkeypatch.setenv(KEEP_VERSIONS_ENV, "many")
    with pytest.raises(ValueError, match="LHC_KEEP_VERSIONS must be a whole number"):
        publish(base, "v-5", _writer({}))


def test_prune_reports_the_space_and_spares_a_version_newer_than_current(tmp_path):
    base = tmp_path / "asset"
    for i in (1, 2):
        publish(base, f"v-{i}", _writer({"data": b"x" * 100}))
    (base / "v-3").mkdir()  # e.g. CURRENT was rolled back from v-3 to v-2
    assert prune_versions(base, keep=0) == 100  # v-1 removed
    assert _listing(base) == [CURRENT, "v-2", "v-3"]
    assert prune_versions(tmp_path / "never_published") == 0
