"""A real-Delphes-layout file (TClonesArray branches, written with ROOT; tests/data/delphes_nested/README.md):
collections resolved by leaf name, values equal to ROOT's own reading, features equal to the flat layout's."""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot

from lhc_assets.physics.collection_names import CollectionNames
from lhc_assets.physics.delphes_reader import inspect_file, read_batches
from lhc_assets.physics.generators.events import EventBatch
from lhc_assets.physics.generators.rootio import write_delphes_file
from lhc_assets.physics.ingest import HLF, LLF, RAW, SOURCE_ROOT, run_slice
from lhc_assets.physics.schema import INT_FIELDS, REQUIRED_FIELDS, TREE_NAME

DATA = Path(__file__).parents[1] / "data" / "delphes_nested"
NESTED = DATA / "ttbar_muon_nested.root"
REFERENCE = json.loads((DATA / "ttbar_muon_nested.json").read_text())
ACTUAL = {c: ("Muon" if c == "MuonTight" else c) for c in REQUIRED_FIELDS}  # what the file holds per role


def test_the_fixture_is_the_nested_layout():
    tree = uproot.open(NESTED)[TREE_NAME]
    keys = set(tree.keys())
    assert {"Muon", "Muon/Muon.PT", "Muon/Muon.fBits", "Muon_size"} <= keys and "MuonTight.PT" not in tree
    assert "Muon.PT" not in tree.keys(recursive=False)  # the leaf is only reachable under its parent branch


def test_defaults_fall_back_to_muon_with_a_warning_and_an_explicit_choice_without():
    info = inspect_file(str(NESTED))
    assert info.num_entries == REFERENCE["entries"] == 20
    assert info.collections == ACTUAL
    assert info.warnings == ("muon: 'MuonTight' not in the file, read 'Muon'",)
    strict = inspect_file(str(NESTED), CollectionNames(muon="Muon"))
    assert strict.collections == ACTUAL and strict.warnings == ()


def test_values_read_equal_roots_reading_of_the_file():
    batches = list(read_batches(str(NESTED), "ttbar", "ttbar/nested", 0, 20, step=7, collections=ACTUAL))
    assert [b.num_rows for b in batches] == [7, 7, 6]
    sizes = uproot.open(NESTED)[TREE_NAME].arrays([f"{c}_size" for c in ACTUAL.values()], library="np")
    for role, fields in REQUIRED_FIELDS.items():
        ref = REFERENCE["collections"][ACTUAL[role]]
        columns = [b.column(role) for b in batches]
        n_objects = sum(len(c.field(fields[0]).values) for c in columns)
        assert n_objects == ref["n_objects"] == ref["size_branch_sum"] == sizes[f"{ACTUAL[role]}_size"].sum(), role
        for field in fields:
            values = np.concatenate([c.field(field).values.to_numpy() for c in columns])
            if field in INT_FIELDS:
                assert values.dtype == np.int32 and int(values.sum()) == ref["int_sums"][field], (role, field)
            else:
                assert values.dtype == np.float32, (role, field)
                assert float(values.astype(np.float64).sum()) == pytest.approx(
                    ref["float_sums"][field], rel=1e-5, abs=1e-6), (role, field)


def _flat_copy(path: Path) -> Path:
    """The same events in the flat layout the generator writes, under the study's collection names."""
    tree = uproot.open(NESTED)[TREE_NAME]
    counts, fields = {}, {}
    for role, names in REQUIRED_FIELDS.items():
        arrays = tree.arrays([f"{ACTUAL[role]}.{f}" for f in names], how=dict)
        counts[role] = ak.to_numpy(ak.num(arrays[f"{ACTUAL[role]}.{names[0]}"])).astype(np.int32)
        fields[role] = {f: ak.to_numpy(ak.flatten(arrays[f"{ACTUAL[role]}.{f}"])) for f in names}
    write_delphes_file(path, [EventBatch(tree.num_entries, counts, fields)])
    return path


def _run(path: Path, out: Path, collections: dict[str, str]) -> dict:
    spec = {"partition_key": "ttbar/x", "sample": "ttbar", "source": SOURCE_ROOT, "path": str(path),
            "outputs": {t: str(out / t) for t in (RAW, HLF, LLF)}, "part": "part-0", "start": 0, "stop": 20,
            "batch_size": 8, "collections": collections}
    result = run_slice(spec)
    assert result["error"] is None, result["error"]
    return {t: pq.read_table(out / t).sort_by("entry").drop(["file"]) for t in (RAW, HLF, LLF)}


def test_features_of_the_nested_file_equal_those_of_a_flat_copy(tmp_path):
    flat = _flat_copy(tmp_path / "flat.root")
    flat_info = inspect_file(str(flat))
    assert flat_info.collections == {c: c for c in REQUIRED_FIELDS} and flat_info.warnings == ()
    nested = _run(NESTED, tmp_path / "nested_out", inspect_file(str(NESTED)).collections)
    expected = _run(flat, tmp_path / "flat_out", flat_info.collections)
    assert nested[RAW].num_rows == 20 and nested[HLF].num_rows > 0
    for t in (RAW, HLF, LLF):
        assert nested[t].equals(expected[t]), t
