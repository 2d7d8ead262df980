"""What an asset asking for a reference gets: TableRef (a table's current version directories) and ModelRef."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from resources.references import ModelRef, TableRef


def _version(path: Path, files: list[str]) -> Path:
    path.mkdir(parents=True)
    for name in files:
        (path / name).write_bytes(b"")
    return path


@pytest.fixture
def partitioned(tmp_path) -> TableRef:
    base = tmp_path / "warehouse" / "hlf_features"
    return TableRef("hlf_features", {
        "W_0001": _version(base / "W_0001" / "v-1", ["part-00001.parquet", "part-00000.parquet", "_SUCCESS"]),
        "QCD_0001": _version(base / "QCD_0001" / "v-1", ["part-00000.parquet"]),
        "ttbar_0001": _version(base / "ttbar_0001" / "v-2", []),
    }, missing=("ttbar_0002",))


# ---- an unpartitioned table ------------------------------------------------------------------------------


def test_an_unpartitioned_table_has_one_path_and_no_partition_keys(tmp_path):
    version = _version(tmp_path / "train_set" / "v-1", ["part-00000.parquet"])
    ref = TableRef("train_set", {None: version})
    assert ref.path == version
    assert ref.partition_keys == []
    assert ref.missing == ()


def test_files_are_the_parquet_files_in_name_order(tmp_path):
    version = _version(tmp_path / "train_set" / "v-1", [
        "part-00010-x.snappy.parquet", "part-00002-x.snappy.parquet", "_SUCCESS", ".part-00002-x.snappy.parquet.crc",
        "part-00000-x.snappy.parquet", "_metadata.json"])
    ref = TableRef("train_set", {None: version})
    assert ref.files() == [version / "part-00000-x.snappy.parquet", version / "part-00002-x.snappy.parquet",
                           version / "part-00010-x.snappy.parquet"]


def test_files_of_an_empty_table_is_an_empty_list(tmp_path):
    assert TableRef("train_set", {None: _version(tmp_path / "v-1", ["_SUCCESS"])}).files() == []


# ---- a partitioned table ---------------------------------------------------------------------------------


def test_path_of_a_partitioned_table_raises_naming_it(partitioned):
    with pytest.raises(ValueError, match=r"hlf_features is partitioned: use \.paths or \.partition\(key\)"):
        _ = partitioned.path
    with pytest.raises(ValueError, match="hlf_features is partitioned"):
        partitioned.files()  # the whole-table files need a key too


def test_partition_keys_are_the_materialized_ones_in_key_order(partitioned):
    assert partitioned.partition_keys == ["QCD_0001", "W_0001", "ttbar_0001"]
    assert "ttbar_0002" not in partitioned.partition_keys


def test_partition_is_the_version_directory_of_a_key(partitioned, tmp_path):
    assert partitioned.partition("W_0001") == tmp_path / "warehouse" / "hlf_features" / "W_0001" / "v-1"


def test_partition_of_a_key_not_materialized_raises_key_error_naming_it(partitioned):
    with pytest.raises(KeyError, match=r"partition 'ttbar_0002' of hlf_features is not materialized"):
        partitioned.partition("ttbar_0002")
    with pytest.raises(KeyError, match="'nonexistent_9999'"):
        partitioned.files("nonexistent_9999")


def test_files_of_a_partition_are_sorted(partitioned):
    w = partitioned.partition("W_0001")
    assert partitioned.files("W_0001") == [w / "part-00000.parquet", w / "part-00001.parquet"]
    assert partitioned.files("ttbar_0001") == []


def test_select_keeps_the_requested_keys_and_moves_the_others_to_missing(partitioned):
    selected = partitioned.select(["W_0001", "ttbar_0002", "QCD_0001", "QCD_0099"])
    assert selected.asset == "hlf_features"
    assert selected.paths == {"W_0001": partitioned.partition("W_0001"), "QCD_0001": partitioned.partition("QCD_0001")}
    assert selected.partition_keys == ["QCD_0001", "W_0001"]
    assert selected.missing == ("ttbar_0002", "QCD_0099")  # in the order asked for
    # The original is untouched (frozen), and a key not asked for is neither present nor missing.
    assert partitioned.partition_keys == ["QCD_0001", "W_0001", "ttbar_0001"]
    assert partitioned.missing == ("ttbar_0002",)
    assert "ttbar_0001" not in selected.paths and "ttbar_0001" not in selected.missing


def test_select_of_nothing_is_an_empty_ref(partitioned):
    empty = partitioned.select([])
    assert empty.paths == {} and empty.missing == () and empty.partition_keys == []


def test_refs_are_frozen(partitioned):
    with pytest.raises(dataclasses.FrozenInstanceError):
        partitioned.missing = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelRef("hlf_classifier", Path("model.keras")).path = Path("other")  # type: ignore[misc]


# ---- read --------------------------------------------------------------------------------------------------


class _Reader:
    def __init__(self):
        self.calls = []

    def parquet(self, *paths):
        self.calls.append(paths)
        return "a DataFrame"


class _Session:
    def __init__(self):
        self.read = _Reader()


def test_read_is_one_parquet_read_of_every_materialized_partition_in_key_order(partitioned):
    session = _Session()
    assert partitioned.read(session) == "a DataFrame"
    assert session.read.calls == [tuple(str(partitioned.partition(k)) for k in ["QCD_0001", "W_0001", "ttbar_0001"])]


def test_read_of_an_unpartitioned_table_reads_its_path(tmp_path):
    ref = TableRef("train_set", {None: _version(tmp_path / "v-1", ["part-00000.parquet"])})
    session = _Session()
    ref.read(session)
    assert session.read.calls == [(str(ref.path),)]


def test_read_with_no_materialized_partition_raises_naming_the_table():
    with pytest.raises(ValueError, match="no materialized partition of hlf_features"):
        TableRef("hlf_features", {}, missing=("W_0001",)).read(session=None)


@pytest.mark.slow
def test_read_unions_the_partitions_with_spark(spark, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = {}
    for key, values in {"W_0001": [1, 2], "QCD_0001": [3], "ttbar_0001": [4, 5, 6]}.items():
        paths[key] = tmp_path / key / "v-1"
        paths[key].mkdir(parents=True)
        pq.write_table(pa.table({"x": pa.array(values, pa.int64())}), paths[key] / "part-00000.parquet")
    df = TableRef("hlf_features", paths).read(spark)
    assert sorted(r.x for r in df.collect()) == [1, 2, 3, 4, 5, 6]
    assert df.columns == ["x"]


# ---- ModelRef --------------------------------------------------------------------------------------------


def test_a_model_ref_names_its_asset_and_what_to_load(tmp_path):
    ref = ModelRef("random_forest_baseline", tmp_path / "v-1" / "model")
    assert (ref.asset, ref.path) == ("random_forest_baseline", tmp_path / "v-1" / "model")
    assert ref == ModelRef("random_forest_baseline", tmp_path / "v-1" / "model")
