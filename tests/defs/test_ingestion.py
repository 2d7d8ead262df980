"""The ingestion graph materialized for real: Spark session, Dagster instance, generated ROOT files."""

from __future__ import annotations

import numpy as np
import pytest
from dagster import AssetKey

from lhc_assets.physics import features as K
from lhc_assets.physics.delphes_reader import inspect_file, read_batches
from lhc_assets.physics.schema import DROP_NO_LEPTON, DROP_NOT_ISOLATED, HLF_COLUMNS
from tests.defs.conftest import failure_messages
from tests.physics import badfiles

pytestmark = pytest.mark.slow
ASSETS = ("raw_events", "hlf_features", "llf_features")


def _metadata(platform, asset: str, key: str) -> dict:
    rec = platform.instance.fetch_materializations(AssetKey(asset), limit=100).records
    mats = [r.asset_materialization for r in rec if r.asset_materialization.partition == key]
    assert mats, f"no materialization of {asset} {key}"
    return {k: v.value for k, v in mats[0].metadata.items()}


def test_one_partition_end_to_end(platform, generated_files):
    key = platform.add_file("ttbar", generated_files["ttbar"])
    result = platform.materialize([key])
    assert result.success, failure_messages(result)

    raw = platform.table("raw_events", key)
    assert raw.num_rows == 800
    assert raw.column("entry").to_pylist() == list(range(800))
    assert set(raw.column("partition_key").to_pylist()) == {key}
    assert set(raw.column("label").to_pylist()) == {1}

    # The Spark output equals the kernels run directly on the file.
    path = str(generated_files["ttbar"])
    batch = next(read_batches(path, "ttbar", key, 0, inspect_file(path).num_entries, step=10_000))
    expected_hlf, reason = K.hlf_table(batch)
    expected_llf, _ = K.llf_table(batch)
    hlf = platform.table("hlf_features", key)
    llf = platform.table("llf_features", key)
    for c in ("entry", *HLF_COLUMNS):
        np.testing.assert_array_equal(hlf.column(c).to_numpy(), expected_hlf.column(c).to_numpy(), err_msg=c)
    assert llf.column("llf").to_pylist()[:5] == expected_llf.column("llf").to_pylist()[:5]
    assert llf.column("n_particles").to_pylist() == expected_llf.column("n_particles").to_pylist()

    meta = _metadata(platform, "hlf_features", key)
    assert meta["events_read"] == 800
    assert meta["events_selected"] == hlf.num_rows == int(np.sum(reason == 0))
    assert meta[f"dropped_{DROP_NO_LEPTON}"] + meta[f"dropped_{DROP_NOT_ISOLATED}"] == 800 - hlf.num_rows
    assert meta["selection_efficiency"] == pytest.approx(hlf.num_rows / 800, abs=1e-4)
    assert meta["rows_written"] == hlf.num_rows
    assert meta["path"] == str(platform.version("hlf_features", key))
    assert _metadata(platform, "raw_events", key)["events_read"] == 800


def test_a_run_reads_the_file_its_sensor_tag_names_without_listing_incoming(platform, generated_files, monkeypatch):
    from lhc_assets.defs.partitions import INPUT_FILE_TAG
    from resources.storage import StorageResource

    name = "wjets run 2 (copy).root"  # a hashed key: the file cannot be derived from it
    key = platform.add_file("wjets", generated_files["wjets"], name=name)

    def listed(self):
        raise AssertionError("incoming/ was listed")

    monkeypatch.setattr(StorageResource, "input_files", listed)
    result = platform.defs.resolve_job_def("ingestion_job").execute_in_process(
        instance=platform.instance, partition_key=key, tags={INPUT_FILE_TAG: f"wjets/{name}"}, raise_on_error=False)
    assert result.success, failure_messages(result)
    assert _metadata(platform, "raw_events", key)["input_file"] == str(platform.root / "incoming" / "wjets" / name)


def test_list_of_partitions_in_one_run_and_loading_them_as_one_dataframe(platform, generated_files):
    keys = [platform.add_file(s, p) for s, p in generated_files.items()]
    result = platform.materialize(keys)
    assert result.success, failure_messages(result)
    for key in keys:
        for asset in ASSETS:
            assert platform.version(asset, key) is not None
        assert set(platform.table("hlf_features", key).column("partition_key").to_pylist()) <= {key}
    df = platform.io.load("hlf_features", keys)
    counts = {r["sample"]: r["count"] for r in df.groupBy("sample").count().collect()}
    assert counts == {s: platform.table("hlf_features", k).num_rows for s, k in zip(generated_files, keys, strict=True)}
    materialized = platform.instance.get_materialized_partitions(AssetKey("llf_features"))
    assert set(keys) <= set(materialized)
    # Each partition's materialization carries its own counts, not the run's totals.
    for key, path in zip(keys, generated_files.values(), strict=True):
        hlf = _metadata(platform, "hlf_features", key)
        assert hlf["events_read"] == 800 and hlf["events_selected"] == platform.table("hlf_features", key).num_rows
        raw = _metadata(platform, "raw_events", key)
        assert raw["events_read"] == 800 and raw["input_file"] == str(platform.root / "incoming" / key.split("/")[0]
                                                                      / path.name)


def test_rematerializing_a_partition_replaces_it_without_duplicates(platform, generated_files):
    key = platform.add_file("wjets", generated_files["wjets"])
    assert platform.materialize([key]).success
    first = {a: platform.version(a, key) for a in ASSETS}
    rows = {a: platform.table(a, key).num_rows for a in ASSETS}
    assert platform.materialize([key]).success
    for a in ASSETS:
        v = platform.version(a, key)
        assert v != first[a] and first[a].exists()  # new version published, the previous kept for a rollback
        assert platform.table(a, key).num_rows == rows[a]  # read through CURRENT: no duplicates
        assert sorted(p.name for p in v.parent.iterdir() if p.name.startswith("v-")) == sorted([first[a].name, v.name])


def test_small_splits_spread_files_over_many_tasks_without_losing_or_repeating_events(platform, generated_files):
    keys = [platform.add_file(s, generated_files[s]) for s in ("qcd", "wjets")]
    config = {"ops": {"delphes_ingestion": {"config": {"entries_per_split": 150, "batch_size": 64}}}}
    result = platform.materialize(keys, run_config=config)
    assert result.success, failure_messages(result)
    for key in keys:
        raw = platform.table("raw_events", key)
        assert raw.column("entry").to_pylist() == list(range(800))
        assert len(list(platform.version("raw_events", key).glob("*.parquet"))) >= 5
    # The run wrote two partitions; each partition's materialization counts its own events.
    for key in keys:
        meta = _metadata(platform, "hlf_features", key)
        assert meta["events_read"] == 800 and meta["partitions_written"] == 2
        assert meta["events_selected"] == platform.table("hlf_features", key).num_rows


def test_features_alone_are_recomputed_from_the_stored_raw_events(platform, generated_files):
    key = platform.add_file("ttbar", generated_files["ttbar"])
    assert platform.materialize([key]).success
    raw_version = platform.version("raw_events", key)
    before = {a: platform.table(a, key) for a in ("hlf_features", "llf_features")}
    versions = {a: platform.version(a, key) for a in before}

    result = platform.materialize([key], job="features_job")
    assert result.success, failure_messages(result)
    assert platform.version("raw_events", key) == raw_version  # raw_events untouched
    for a, table in before.items():
        assert platform.version(a, key) != versions[a]
        assert platform.table(a, key).equals(table), a
    assert _metadata(platform, "llf_features", key)["events_read"] == 800


def test_features_without_raw_events_fail_with_a_clear_message(platform, generated_files):
    key = platform.add_file("qcd", generated_files["qcd"])
    result = platform.materialize([key], job="features_job")
    assert not result.success
    text = failure_messages(result)
    assert "raw_events" in text and key in text and "materialize raw_events" in text, text
    assert platform.version("hlf_features", key) is None


BAD_INPUTS = [
    ("zero_byte", badfiles.zero_byte, "empty file (0 bytes)"),
    ("not_root", badfiles.not_root, "not a readable ROOT file"),
    ("no_tree", badfiles.without_delphes_tree, "no TTree 'Delphes'"),
    ("missing_branches", badfiles.missing_branches, "missing branches in tree 'Delphes': Jet.BTag"),
    ("empty_tree", badfiles.empty_tree, "has no events"),
    ("nan", badfiles.with_nan, "NaN/inf value(s)"),
]


@pytest.mark.parametrize(("name", "make", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_fails_only_its_partition_with_a_clear_message(platform, generated_files, name, make, message):
    good = platform.add_file("ttbar", generated_files["ttbar"])
    assert platform.materialize([good]).success
    before = {a: platform.version(a, good) for a in ASSETS}

    bad = platform.add_file("ttbar", name=f"bad_{name}.root", maker=make)
    result = platform.materialize([bad])
    assert not result.success
    text = failure_messages(result)
    assert f"bad_{name}.root" in text and message in text, text
    for a in ASSETS:
        assert platform.version(a, bad) is None
        assert platform.version(a, good) == before[a] and before[a].is_dir()
    # No staging debris is left behind.
    assert not list((platform.root / "warehouse").glob("*/.staging-*"))


def test_truncated_file_fails_its_partition(platform, generated_files):
    bad = platform.add_file("qcd", name="cut.root", maker=lambda p: badfiles.truncated(p, generated_files["qcd"]))
    result = platform.materialize([bad])
    assert not result.success
    assert "cut.root" in failure_messages(result)


def test_a_bad_file_in_a_multi_partition_run_fails_only_its_own_partition(platform, generated_files):
    good = platform.add_file("ttbar", generated_files["ttbar"])
    other = platform.add_file("qcd", generated_files["qcd"])
    assert platform.materialize([good]).success
    before = {a: platform.version(a, good) for a in ASSETS}
    # The file behind 'good' is replaced by a broken one, and a new bad file arrives.
    badfiles.with_nan(platform.root / "incoming" / "ttbar" / generated_files["ttbar"].name)
    nan_key = platform.add_file("ttbar", name="zz_nan.root", maker=badfiles.with_nan)
    zero_key = platform.add_file("wjets", name="zero.root", maker=badfiles.zero_byte)

    result = platform.materialize([good, other, nan_key, zero_key])
    assert not result.success
    text = failure_messages(result)
    for name in (generated_files["ttbar"].name, "zz_nan.root", "zero.root"):
        assert name in text, text
    assert "1 other partition(s) of this run were materialized" in text
    for a in ASSETS:
        # Bad partitions keep what they had (the previous good version, or nothing) ...
        assert platform.version(a, good) == before[a] and before[a].is_dir()
        assert platform.version(a, nan_key) is None and platform.version(a, zero_key) is None
        # ... and the good one of the same run is published and recorded as materialized.
        assert platform.version(a, other) is not None
        assert other in platform.instance.get_materialized_partitions(AssetKey(a))
    assert platform.table("raw_events", other).num_rows == 800
    meta = _metadata(platform, "hlf_features", other)
    assert meta["events_read"] == 800 and meta["rows_written"] == platform.table("hlf_features", other).num_rows
    assert not list((platform.root / "warehouse").glob("*/.staging-*"))


def test_file_whose_events_all_fail_selection_succeeds_with_zero_rows(platform):
    key = platform.add_file("qcd", name="no_leptons.root", maker=badfiles.all_fail_selection)
    result = platform.materialize([key])
    assert result.success, failure_messages(result)
    assert platform.table("raw_events", key).num_rows == 40
    assert platform.table("hlf_features", key).num_rows == 0
    assert platform.table("llf_features", key).num_rows == 0
    meta = _metadata(platform, "hlf_features", key)
    assert meta["events_selected"] == 0 and meta[f"dropped_{DROP_NO_LEPTON}"] == 40
    logs = platform.instance.all_logs(result.run_id)
    warnings = [e for e in logs if "none of its 40 events passed" in e.user_message]
    assert warnings


def test_stored_raw_files_are_packed_into_tasks_but_never_fewer_than_the_cores(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lhc_assets.defs.ingestion.config import IngestionConfig
    from lhc_assets.defs.ingestion.inputs import plan_tasks

    raw = []
    for i, n in enumerate([2000, 2000, 2000, 500, 2000]):
        raw.append(tmp_path / f"part-{i}.parquet")
        pq.write_table(pa.table({"entry": list(range(n))}), raw[-1])
    files = [{"partition_key": "ttbar/a", "sample": "ttbar", "raw_files": raw[:3]},
             {"partition_key": "wjets/b", "sample": "wjets", "raw_files": raw[3:]}]
    staging = {t: tmp_path / "staging" / t for t in ("hlf_features", "llf_features")}

    def sizes(config, cores):
        return [[s["path"] for s in t["slices"]] for t in plan_tasks(files, list(staging), staging, config, cores)]

    names = [str(r) for r in raw]
    # One core: files share tasks up to entries_per_split (5,000), in order, every file exactly once.
    assert sizes(IngestionConfig(), 1) == [names[0:2], names[2:5]]
    # 8,500 events on 2 cores: tasks of at most 4,250 events, so both cores get work.
    assert sizes(IngestionConfig(), 2) == [names[0:2], names[2:4], names[4:5]]
    # 4 cores: at most 2,125 events per task, so no two 2,000-event files share one.
    assert sizes(IngestionConfig(), 4) == [[n] for n in names]


def test_collections_named_in_the_run_config_are_read_strictly_and_recorded(platform):
    # Files from other Delphes cards: 'Muon' instead of 'MuonTight' (named in the config), the same plus
    # 'JetPUPPI' instead of 'Jet' (jet left at its default: fallback with a warning), and 'MuonLoose' where
    # the config says 'Muon' (an explicit choice is strict: that partition fails).
    muon = platform.add_file("ttbar", name="muon.root",
                             maker=lambda p: badfiles.renamed_collections(p, {"MuonTight": "Muon"}))
    puppi = platform.add_file("wjets", name="puppi.root", maker=lambda p: badfiles.renamed_collections(
        p, {"MuonTight": "Muon", "Jet": "JetPUPPI"}, sample="wjets"))
    loose = platform.add_file("qcd", name="loose.root",
                              maker=lambda p: badfiles.renamed_collections(p, {"MuonTight": "MuonLoose"}))
    config = {"ops": {"delphes_ingestion": {"config": {"collections": {"muon": "Muon"}}}}}
    result = platform.materialize([muon, puppi, loose], run_config=config)

    assert not result.success
    text = failure_messages(result)
    assert "loose.root: muon collection 'Muon' (chosen explicitly) is not in tree 'Delphes'" in text, text
    assert "the file has MuonLoose (set muon=MuonLoose" in text, text
    assert "muon.root" not in text and "puppi.root" not in text
    assert platform.version("raw_events", loose) is None

    assert platform.table("raw_events", muon).num_rows == 50
    meta = _metadata(platform, "raw_events", muon)
    assert meta["collections_read"]["MuonTight"] == "Muon" and meta["collections_read"]["Jet"] == "Jet"
    assert "collection_warnings" not in meta
    meta = _metadata(platform, "raw_events", puppi)
    assert meta["collections_read"]["MuonTight"] == "Muon" and meta["collections_read"]["Jet"] == "JetPUPPI"
    assert meta["collection_warnings"] == "* jet: 'Jet' not in the file, read 'JetPUPPI'"
    logs = platform.instance.all_logs(result.run_id)
    assert any(f"{puppi}: jet: 'Jet' not in the file, read 'JetPUPPI'" in e.user_message for e in logs)
    # The columns keep the study's names whatever collection filled them.
    assert platform.table("raw_events", puppi).column("MuonTight").type == platform.table(
        "raw_events", muon).column("MuonTight").type
    assert platform.table("hlf_features", muon).num_rows > 0
