"""Reading Delphes files into Arrow: pruning, and a clear error for every kind of bad input."""

from __future__ import annotations

import numpy as np
import pytest
import uproot

from lhc_assets.physics.delphes_reader import RAW_SCHEMA, DelphesInputError, inspect_file, read_batches
from lhc_assets.physics.schema import REQUIRED_FIELDS, TREE_NAME
from tests.physics import badfiles


def test_reads_only_the_needed_fields_with_identity(generated_files):
    path = str(generated_files["wjets"])
    n = inspect_file(path).num_entries
    batches = list(read_batches(path, "wjets", "wjets/x", 100, 350, step=100))
    assert [b.num_rows for b in batches] == [100, 100, 50]
    b = batches[0]
    assert b.schema == RAW_SCHEMA
    for coll, fields in REQUIRED_FIELDS.items():
        assert [f.name for f in b.schema.field(coll).type] == list(fields)  # extra fields pruned
    assert b.column("entry").to_pylist()[:3] == [100, 101, 102]
    assert set(b.column("label").to_pylist()) == {2}
    assert set(b.column("partition_key").to_pylist()) == {"wjets/x"}
    pt = uproot.open(path)[TREE_NAME]["EFlowTrack.PT"].array(library="np", entry_start=100, entry_stop=101)[0]
    np.testing.assert_array_equal(b.column("EFlowTrack").field("PT")[0].values.to_numpy(), pt)
    assert n == 800


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (badfiles.zero_byte, "empty file (0 bytes)"),
        (badfiles.not_root, "not a readable ROOT file"),
        (badfiles.without_delphes_tree, "no TTree 'Delphes' in the file (found: Events)"),
        (
            badfiles.missing_branches,
            "missing collections in tree 'Delphes': muon (looked for MuonTight, Muon, MuonMedium, MuonLoose); ",
        ),
        (badfiles.missing_branches, "; missing branches in tree 'Delphes': Jet.BTag"),
        (badfiles.empty_tree, "tree 'Delphes' has no events"),
    ],
)
def test_bad_files_are_rejected_naming_file_and_problem(tmp_path, make, message):
    path = make(tmp_path / "bad.root")
    with pytest.raises(DelphesInputError) as err:
        inspect_file(str(path))
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_truncated_file_is_rejected(tmp_path, generated_files):
    path = badfiles.truncated(tmp_path / "cut.root", generated_files["qcd"])
    with pytest.raises(DelphesInputError) as err:
        info = inspect_file(str(path))
        list(read_batches(str(path), "qcd", "qcd/cut", 0, info.num_entries))
    assert str(err.value).startswith(f"{path}: ")
    assert "truncated" in str(err.value) or "damaged" in str(err.value) or "not a readable" in str(err.value)


def test_nan_and_inf_values_are_rejected_naming_the_branch(tmp_path):
    path = badfiles.with_nan(tmp_path / "nan.root")
    info = inspect_file(str(path))  # the header is fine; the values are not
    with pytest.raises(DelphesInputError) as err:
        list(read_batches(str(path), "ttbar", "ttbar/nan", 0, info.num_entries))
    msg = str(err.value)
    assert msg.startswith(f"{path}: ")
    assert "NaN/inf" in msg and ("EFlowTrack.Eta" in msg or "EFlowPhoton.ET" in msg)
