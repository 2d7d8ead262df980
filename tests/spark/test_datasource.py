"""The Spark 'delphes' data source: entry-range splits, pruning, values equal to uproot's."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import uproot

from lhc_assets.spark.datasource import DelphesDataSource, raw_spark_schema, split_entries

pytestmark = pytest.mark.slow


def test_split_entries_covers_the_file_without_overlap():
    assert split_entries(10, 4, 1) == [(0, 4), (4, 8), (8, 10)]
    assert split_entries(10, 100, 2) == [(0, 5), (5, 10)]
    assert split_entries(1, 100, 4) == [(0, 1)]
    for n, per, k in [(800, 300, 2), (12345, 5000, 3), (7, 1, 2)]:
        ranges = split_entries(n, per, k)
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


def test_reads_a_file_as_several_tasks_with_the_same_values_as_uproot(spark, generated_files):
    spark.dataSource.register(DelphesDataSource)
    path = str(generated_files["qcd"])
    files = [{"path": path, "sample": "qcd", "partition_key": "qcd/x"}]
    df = (spark.read.format("delphes").option("files", json.dumps(files))
          .option("entries_per_split", 300).option("min_splits_per_file", 2).load())
    assert df.schema == raw_spark_schema()
    assert df.rdd.getNumPartitions() == 3  # 800 entries in splits of at most 300
    assert df.count() == 800
    rows = df.where("entry in (5, 650)").orderBy("entry").collect()
    tree = uproot.open(path)["Delphes"]
    for row in rows:
        e = row["entry"]
        for branch in ("EFlowTrack.PT", "EFlowTrack.Z", "Jet.BTag", "MissingET.MET", "Electron.Charge"):
            coll, field = branch.split(".")
            expected = tree[branch].array(library="np", entry_start=e, entry_stop=e + 1)[0]
            np.testing.assert_array_equal(np.asarray(row[coll][field]), expected, err_msg=branch)
    # Spark SQL addresses fields the Delphes way.
    n = df.selectExpr("sum(size(EFlowTrack.PT)) as n").collect()[0]["n"]
    assert n == int(tree["EFlowTrack_size"].array(library="np").sum())


def test_collection_options_name_the_files_collections_strictly(spark):
    from pathlib import Path

    spark.dataSource.register(DelphesDataSource)
    path = str(Path(__file__).parents[1] / "data" / "delphes_nested" / "ttbar_muon_nested.root")
    files = json.dumps([{"path": path, "sample": "ttbar", "partition_key": "ttbar/nested"}])

    def read(**options):
        reader = spark.read.format("delphes").option("files", files)
        for k, v in options.items():
            reader = reader.option(k, v)
        return reader.load()

    n_muons = int(uproot.open(path)["Delphes"]["Muon_size"].array(library="np").sum())
    # The nested file has 'Muon': defaults fall back to it; naming it per role or in 'collections' reads it too.
    for options in ({}, {"muon": "Muon"}, {"collections": "muon=Muon,jet=Jet"}, {"collections": "muon=MuonLoose",
                                                                                   "muon": "Muon"}):
        df = read(**options)
        assert df.selectExpr("sum(size(MuonTight.PT)) as n").collect()[0]["n"] == n_muons, options
    # An explicit name is strict.
    with pytest.raises(Exception, match="muon collection 'MuonLoose' \\(chosen explicitly\\) is not in tree"):
        read(collections="muon=MuonLoose").count()
    with pytest.raises(Exception, match="delphes option 'collections': unknown role 'muons'"):
        read(collections="muons=Muon").count()
