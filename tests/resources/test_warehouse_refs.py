"""The warehouse IO manager hands out references to what is stored (no Spark needed to find them)."""

from __future__ import annotations

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DynamicPartitionsDefinition,
    PartitionKeyRange,
    PythonObjectDagsterType,
    build_input_context,
)

from resources.io_manager import PartitionNotMaterialized, SparkParquetIOManager
from resources.publisher import publish
from resources.references import TableRef
from resources.spark import SparkResource
from resources.storage import StorageResource

FILES = DynamicPartitionsDefinition(name="delphes_files")


@pytest.fixture
def io(tmp_path) -> SparkParquetIOManager:
    return SparkParquetIOManager(storage=StorageResource(root=str(tmp_path)), spark=SparkResource(master="local[1]"))


def _store(io: SparkParquetIOManager, asset: str, key: str | None, version: str) -> None:
    publish(io.partition_dir(asset, key), version, lambda d: (d / "part-0.parquet").write_bytes(b"PAR1"))


def test_ref_lists_the_current_version_of_each_partition_and_the_missing_ones(io):
    _store(io, "hlf_features", "ttbar/a", "v-1")
    _store(io, "hlf_features", "ttbar/a", "v-2")
    _store(io, "hlf_features", "qcd/b", "v-1")
    ref = io.ref("hlf_features", ["qcd/b", "ttbar/a", "wjets/never"])
    assert ref.partition_keys == ["qcd/b", "ttbar/a"]
    assert ref.partition("ttbar/a") == io.partition_dir("hlf_features", "ttbar/a") / "v-2"
    assert ref.files("qcd/b") == [io.partition_dir("hlf_features", "qcd/b") / "v-1" / "part-0.parquet"]
    assert ref.missing == ("wjets/never",)


def test_ref_of_an_unpartitioned_table_never_materialized_names_it(io):
    with pytest.raises(PartitionNotMaterialized, match="asset 'train_set' has not been materialized"):
        io.ref("train_set", None)
    _store(io, "train_set", None, "v-1")
    assert io.ref("train_set", None).path == io.asset_dir("train_set") / "v-1"


def test_an_input_typed_table_ref_gets_the_reference_not_a_dataframe(io):
    _store(io, "hlf_features", "ttbar/a", "v-1")
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("delphes_files", ["ttbar/a", "qcd/late"])
        context = build_input_context(
            asset_key=AssetKey("hlf_features"), dagster_type=PythonObjectDagsterType(TableRef), instance=instance,
            asset_partitions_def=FILES, asset_partition_key_range=PartitionKeyRange("ttbar/a", "qcd/late"))
        ref = io.load_input(context)
    # The partitions the input maps to, materialized or not.
    assert isinstance(ref, TableRef) and ref.partition_keys == ["ttbar/a"] and ref.missing == ("qcd/late",)
