"""Collection names per Delphes card: parsing the explicit choices, resolving them against a file."""

from __future__ import annotations

import pytest

from lhc_assets.physics.collection_names import ENV_VAR, CollectionConfigError, CollectionNames
from lhc_assets.physics.delphes_reader import DelphesInputError, inspect_file, read_batches, resolve_collections
from lhc_assets.physics.schema import COLLECTION_CANDIDATES, COLLECTION_ROLES, REQUIRED_FIELDS
from tests.physics import badfiles


def _leaves(collections: list[str], nested: bool = False) -> list[str]:
    """Leaf names uproot reports (``keys(recursive=True, full_paths=False)``) for files with these collections."""
    out = []
    for c in collections:
        fields = next((f for role, f in REQUIRED_FIELDS.items() if c in COLLECTION_CANDIDATES[role]), ())
        out += [c] if nested else []  # the nested layout's TClonesArray branch (an int32 counter itself)
        out += [f"{c}.fUniqueID", f"{c}.fBits"] if nested else []
        out += [f"{c}.{f}" for f in fields] + [f"{c}_size"]
    return out


STUDY = ["EFlowTrack", "EFlowPhoton", "EFlowNeutralHadron", "Electron", "MuonTight", "MissingET", "Jet"]
STANDARD_CARD = ["EFlowTrack", "EFlowPhoton", "EFlowNeutralHadron", "Electron", "Muon", "MissingET", "Jet"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("  ", {}),
        ("muon=Muon", {"muon": "Muon"}),
        (" muon = Muon , jet=JetPUPPI,", {"muon": "Muon", "jet": "JetPUPPI"}),
        ("tracks=EFlowTrack,photons=EFlowPhoton,neutral_hadrons=EFlowNeutralHadron,electron=ElectronMedium,"
         "missing_et=PuppiMissingET", {"tracks": "EFlowTrack", "photons": "EFlowPhoton",
                                       "neutral_hadrons": "EFlowNeutralHadron", "electron": "ElectronMedium",
                                       "missing_et": "PuppiMissingET"}),
    ],
)
def test_env_var_values_are_parsed_into_explicit_choices(text, expected):
    assert CollectionNames.from_env({ENV_VAR: text}).explicit() == expected
    assert CollectionNames.from_env({}).explicit() == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("muons=Muon",
         "unknown role 'muons' (roles: tracks, photons, neutral_hadrons, electron, muon, jet, missing_et)"),
        ("MuonTight=Muon", "unknown role 'MuonTight'"),
        ("muon=", "empty collection name for muon"),
        ("muon", "'muon' is not role=collection (expected e.g. 'muon=Muon,jet=JetPUPPI')"),
        ("=Muon", "'=Muon' is not role=collection"),
        ("muon=Muon;jet=Jet", "'Muon;jet=Jet' for muon is not a collection name"),
        ("muon=Muon.PT", "'Muon.PT' for muon is not a collection name"),
        ("muon=Muon,muon=MuonLoose", "muon is named twice"),
    ],
)
def test_bad_env_var_values_are_rejected_naming_the_variable(text, message):
    with pytest.raises(CollectionConfigError) as err:
        CollectionNames.from_env({ENV_VAR: text})
    assert str(err.value).startswith(f"{ENV_VAR}: ")
    assert message in str(err.value)


def test_choices_from_a_mapping_are_validated_and_later_ones_override():
    names = CollectionNames.from_mapping({"muon": "Muon", "jet": None}, "cfg")
    assert names.explicit() == {"muon": "Muon"}
    assert CollectionNames(muon="MuonLoose", jet="JetPUPPI").override(names).explicit() == {
        "muon": "Muon", "jet": "JetPUPPI"}
    with pytest.raises(CollectionConfigError, match=r"^cfg: empty collection name for jet$"):
        CollectionNames.from_mapping({"jet": " "}, "cfg")
    with pytest.raises(CollectionConfigError, match=r"^cfg: unknown role 'jets'"):
        CollectionNames.from_mapping({"jets": "Jet"}, "cfg")
    assert set(COLLECTION_ROLES.values()) == set(REQUIRED_FIELDS) == set(COLLECTION_CANDIDATES)
    assert all(COLLECTION_CANDIDATES[role][0] == role for role in REQUIRED_FIELDS)


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_defaults_resolve_the_studys_names_and_fall_back_to_well_known_ones_with_a_warning(nested):
    mapping, warnings = resolve_collections("f.root", _leaves(STUDY, nested))
    assert mapping == {c: c for c in REQUIRED_FIELDS} and warnings == []

    mapping, warnings = resolve_collections("f.root", _leaves(STANDARD_CARD, nested))
    assert mapping["MuonTight"] == "Muon"
    assert warnings == ["muon: 'MuonTight' not in the file, read 'Muon'"]

    puppi = ["EFlowTrack", "EFlowPhoton", "EFlowNeutralHadron", "ElectronLoose", "ElectronMedium", "MuonLoose",
             "PuppiMissingET", "JetPUPPI"]
    mapping, warnings = resolve_collections("f.root", _leaves(puppi, nested))
    assert {r: mapping[r] for r in ("Electron", "MuonTight", "Jet", "MissingET")} == {
        "Electron": "ElectronMedium", "MuonTight": "MuonLoose", "Jet": "JetPUPPI", "MissingET": "PuppiMissingET"}
    assert len(warnings) == 4


def test_a_bare_branch_name_does_not_count_as_a_collection():
    # In the nested layout 'MuonTight' alone would be the TClonesArray's counter branch: a collection is
    # detected by its 'Coll.Field' leaves.
    leaves = [*_leaves(STANDARD_CARD, nested=True), "MuonTight", "MuonTight_size"]
    assert resolve_collections("f.root", leaves)[0]["MuonTight"] == "Muon"


def test_an_explicit_choice_is_strict_and_the_error_says_what_to_set():
    leaves = _leaves(STANDARD_CARD)
    mapping, warnings = resolve_collections("f.root", leaves, CollectionNames(muon="Muon"))
    assert mapping["MuonTight"] == "Muon" and warnings == []
    # The study's default name chosen explicitly is strict too: no fallback to Muon.
    for chosen in ("MuonLoose", "MuonTight"):
        with pytest.raises(DelphesInputError) as err:
            resolve_collections("/data/f.root", leaves, CollectionNames(muon=chosen))
        msg = str(err.value)
        assert msg.startswith("/data/f.root: ")
        assert f"muon collection '{chosen}' (chosen explicitly) is not in tree 'Delphes'" in msg
        assert "the file has Muon (set muon=Muon" in msg


def test_a_file_without_any_candidate_names_the_file_the_role_and_the_candidates(tmp_path):
    with pytest.raises(DelphesInputError) as err:
        resolve_collections("/data/f.root", _leaves([c for c in STUDY if c not in ("MuonTight", "Jet")]))
    msg = str(err.value)
    assert msg.startswith("/data/f.root: missing collections in tree 'Delphes': "
                          "muon (looked for MuonTight, Muon, MuonMedium, MuonLoose), jet (looked for Jet, JetPUPPI)")
    assert ENV_VAR in msg
    # The same from a real file, through inspect_file.
    path = badfiles.renamed_collections(tmp_path / "mu.root", {"MuonTight": "MuonSoft"})
    with pytest.raises(DelphesInputError) as err:
        inspect_file(str(path))
    assert str(err.value).startswith(
        f"{path}: missing collections in tree 'Delphes': muon (looked for MuonTight, Muon, MuonMedium, MuonLoose)")
    # ... and naming the file's own collection works.
    assert inspect_file(str(path), CollectionNames(muon="MuonSoft")).collections["MuonTight"] == "MuonSoft"


def test_missing_fields_of_a_resolved_collection_name_the_actual_branches(tmp_path):
    from dataclasses import replace

    from lhc_assets.physics.generators.rootio import write_delphes_file

    b = badfiles._batch()
    fields = {("Muon" if c == "MuonTight" else c): dict(v) for c, v in b.fields.items()}
    counts = {("Muon" if c == "MuonTight" else c): v for c, v in b.counts.items()}
    del fields["Muon"]["Charge"]
    path = tmp_path / "f.root"
    write_delphes_file(path, [replace(b, fields=fields, counts=counts)])
    with pytest.raises(DelphesInputError, match=r"missing branches in tree 'Delphes': Muon\.Charge$"):
        inspect_file(str(path))


def test_a_flat_file_with_muon_is_read_under_the_canonical_column(tmp_path):
    study = badfiles.renamed_collections(tmp_path / "study.root", {})
    card = badfiles.renamed_collections(tmp_path / "card.root", {"MuonTight": "Muon"})
    info = inspect_file(str(card), CollectionNames(muon="Muon"))
    assert info.collections["MuonTight"] == "Muon" and info.warnings == ()
    got = next(read_batches(str(card), "ttbar", "ttbar/x", 0, 50, step=50, collections=info.collections))
    expected = next(read_batches(str(study), "ttbar", "ttbar/x", 0, 50, step=50))
    assert got.schema == expected.schema
    for name in got.schema.names:
        assert got.column(name).equals(expected.column(name)) or name == "file", name
    with pytest.raises(ValueError, match="unknown collection roles"):
        next(read_batches(str(card), "ttbar", "ttbar/x", 0, 50, collections={"Muon": "Muon"}))
