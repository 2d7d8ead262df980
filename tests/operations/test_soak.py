"""The soak test's plan and verdict (lhc_assets/operations/soak.py): pure functions, no daemon."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lhc_assets.operations import soak
from lhc_assets.operations.soak import RUNNING, WRITE, Materialization, check_soak

ASSETS = ("raw_events", "hlf_features")


def test_kills_are_about_the_fraction_spread_deterministic_and_mixed():
    plan = soak.plan_kills(120, 0.1, 0.5, seed=3)
    assert len(plan) == 12 and plan == soak.plan_kills(120, 0.1, 0.5, seed=3)
    assert plan != soak.plan_kills(120, 0.1, 0.5, seed=4)
    ordinals = [p.ordinal for p in plan]
    assert ordinals == sorted(set(ordinals)) and all(0 <= o < 120 for o in ordinals)
    assert sum(p.kind == WRITE for p in plan) == 6 and sum(p.kind == RUNNING for p in plan) == 6
    assert all(0 <= p.delay_s(20) == p.at <= soak.MAX_WRITE_DELAY_S for p in plan if p.kind == WRITE)
    assert all(0 <= p.delay_s(20) == 20 * p.at <= 20 * soak.MAX_RUNNING_SHARE for p in plan if p.kind == RUNNING)


def test_a_short_soak_still_kills_one_run_of_each_kind():
    plan = soak.plan_kills(4, 0.1, 0.5, seed=1)
    assert sorted(p.kind for p in plan) == [RUNNING, WRITE]
    assert soak.plan_kills(6, 0.0, 0.5, seed=1) == []
    assert len(soak.plan_kills(1, 0.5, 0.5, seed=1)) == 1  # never more kills than runs
    with pytest.raises(ValueError):
        soak.plan_kills(10, 1.5, 0.5, seed=1)


def test_the_last_retry_of_a_run_is_spared():
    assert soak.may_kill({}, retries=2)
    assert soak.may_kill({"dagster/retry_number": "1"}, retries=2)
    assert not soak.may_kill({"dagster/retry_number": "2"}, retries=2)
    assert not soak.may_kill({}, retries=0)


def test_staging_and_version_names_are_read_as_the_publisher_writes_them(tmp_path: Path):
    from resources import publisher

    staging = publisher.new_staging(tmp_path / "warehouse" / "raw_events")
    assert soak.staging_owner_pid(staging.name) == os.getpid()
    assert soak.staging_owner_pid(".staging-legacy") is None and soak.staging_owner_pid("v-x") is None
    version = tmp_path / "warehouse" / "hlf_features" / "qcd" / "a" / publisher.new_version("0123456789abcdef")
    version.mkdir(parents=True)
    (version / ".staging-inside-a-version").mkdir()  # data, never looked into
    assert soak.version_run(version.name) == "01234567"
    assert soak.version_run("CURRENT") == ""
    assert soak.staging_dirs(tmp_path) == [staging]


RUN = {"qcd/a": "aaaaaaaa-0001", "qcd/b": "bbbbbbbb-0002"}
KILLED = "kkkkkkkk-0003"
ROWS = {"qcd/a": 10, "qcd/b": 7}


def _good_mats(skip: tuple[str, str] | None = None) -> list[Materialization]:
    return [Materialization(a, k, RUN[k], ROWS[k]) for a in ASSETS for k in RUN if (a, k) != skip]


def _verdict(**changes) -> dict[str, dict]:
    """A clean soak: good partitions a and b (a dropped for the sensor), bad partition x, one killed run that
    published b's raw_events whole before it died."""
    reference = {(asset, key): ROWS[key] for asset in ASSETS for key in RUN}
    args = dict(
        good=["qcd/a", "qcd/b"], bad=["qcd/x"], assets=ASSETS, reference=reference,
        materializations=[*_good_mats(), Materialization("raw_events", "qcd/b", KILLED, 7)],
        run_status={RUN["qcd/a"]: "SUCCESS", RUN["qcd/b"]: "SUCCESS", KILLED: "FAILURE"},
        current={(a, k): (ROWS[k], f"v-20260101T000000-{RUN[k][:8]}-abcdef") for a, k in reference},
        sensor_files={"qcd/a": "qcd/a.root", "qcd/x": "qcd/x.root"},
        sensor_requests=[("qcd/a", "qcd/a.root"), ("qcd/x", "qcd/x.root")], failures_listed=["qcd/x"],
        staging_left=[], processes_left=[],
    )
    args.update(changes)
    return check_soak(**args)


def test_a_clean_soak_passes_every_check():
    verdict = _verdict()
    assert verdict and all(c == {"ok": True} for c in verdict.values()), verdict


def test_a_partition_materialized_twice_or_never_fails_the_once_check():
    twice = Materialization("hlf_features", "qcd/a", RUN["qcd/b"], 10)
    verdict = _verdict(materializations=[*_good_mats(skip=("raw_events", "qcd/b")), twice])
    assert not verdict["materialized_once"]["ok"]
    assert verdict["materialized_once"]["problems"] == [
        "raw_events qcd/b: 0 materializations by successful runs (none)",
        "hlf_features qcd/a: 2 materializations by successful runs (aaaaaaaa, bbbbbbbb)"]


def test_half_published_rows_and_a_stale_current_version_are_caught():
    half = _verdict(materializations=[*_good_mats(), Materialization("raw_events", "qcd/b", KILLED, 3)])
    assert half["killed_runs_published_whole"]["problems"] == [
        "raw_events qcd/b: run kkkkkkkk (FAILURE) recorded 3 rows, the clean run 7"]

    current = {(a, k): (ROWS[k], f"v-20260101T000000-{RUN[k][:8]}-abcdef") for a in ASSETS for k in RUN}
    current[("raw_events", "qcd/a")] = (10, "v-20260101T000000-kkkkkkkk-abcdef")  # not the successful run's
    current[("hlf_features", "qcd/a")] = (9, "v-20260101T000000-aaaaaaaa-abcdef")
    problems = _verdict(current=current)["rows_equal_clean_run"]["problems"]
    assert problems == [
        "raw_events qcd/a: the successful run aaaaaaaa recorded 10 rows and the current version is "
        "v-20260101T000000-kkkkkkkk-abcdef",
        "hlf_features qcd/a: 9 rows in the current version, the clean run 10"]


def test_the_sensor_requesting_twice_or_a_backfill_file_fails():
    twice = [("qcd/a", "qcd/a.root"), ("qcd/a", "qcd/a.root"), ("qcd/b", "qcd/b.root"), ("qcd/x", "qcd/x.root")]
    assert _verdict(sensor_requests=twice)["sensor_requested_once"]["problems"] == [
        "qcd/a: 2 sensor request(s), expected 1", "qcd/b: 1 sensor request(s), expected 0"]
    missing = _verdict(sensor_requests=[("qcd/a", "qcd/a.root")])
    assert missing["sensor_requested_once"]["problems"] == ["qcd/x: 0 sensor request(s), expected 1"]
    other_file = _verdict(sensor_requests=[("qcd/a", "qcd/a.root"), ("qcd/x", "qcd/y.root")])
    assert other_file["sensor_requested_once"]["problems"] == ["qcd/x: requested for file qcd/y.root, "
                                                               "expected qcd/x.root"]


def test_failures_must_list_exactly_the_bad_files_and_leftovers_fail():
    verdict = _verdict(failures_listed=["qcd/b"], staging_left=["warehouse/raw_events/.staging-h~1~2~3"],
                       processes_left=["4242 java -cp ..."])
    assert verdict["failures_listed"]["problems"] == ["qcd/b: listed by lhc failures",
                                                      "qcd/x: not listed by lhc failures"]
    assert verdict["no_staging_left"] == {"ok": False, "problems": ["warehouse/raw_events/.staging-h~1~2~3"]}
    assert verdict["no_process_left"]["problems"] == ["4242 java -cp ..."]


def test_long_problem_lists_are_cut():
    problems = _verdict(staging_left=[f"s{i}" for i in range(25)])["no_staging_left"]["problems"]
    assert len(problems) == soak.MAX_PROBLEMS + 1 and problems[-1] == "... 15 more"


def test_a_bad_files_partition_must_not_be_materialized():
    verdict = _verdict(materializations=[*_good_mats(), Materialization("raw_events", "qcd/x", RUN["qcd/a"], 1)])
    assert verdict["materialized_once"]["problems"] == ["raw_events qcd/x: the bad file's partition was materialized"]
