"""The ingestion's collection choices (run config over LHC_DELPHES_COLLECTIONS) and their metadata; no run."""

from __future__ import annotations

import pytest
from dagster import Failure

from lhc_assets.defs.ingestion.config import CollectionsConfig, IngestionConfig, collection_names
from lhc_assets.defs.ingestion.metadata import collections_metadata
from lhc_assets.physics.collection_names import ENV_VAR, CollectionNames
from lhc_assets.physics.schema import COLLECTION_ROLES, REQUIRED_FIELDS


def test_the_config_has_one_field_per_role():
    assert list(CollectionsConfig.model_fields) == list(COLLECTION_ROLES)


def test_run_config_choices_override_the_env_var_read_at_run_time(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert collection_names(IngestionConfig()) == CollectionNames()
    monkeypatch.setenv(ENV_VAR, "muon=Muon,jet=JetPUPPI")
    assert collection_names(IngestionConfig()).explicit() == {"muon": "Muon", "jet": "JetPUPPI"}
    config = IngestionConfig(collections=CollectionsConfig(muon="MuonLoose", electron="ElectronMedium"))
    assert collection_names(config).explicit() == {
        "muon": "MuonLoose", "jet": "JetPUPPI", "electron": "ElectronMedium"}


@pytest.mark.parametrize(
    ("env", "config", "message"),
    [
        ("muons=Muon", {}, f"{ENV_VAR}: unknown role 'muons'"),
        ("muon:Muon", {}, f"{ENV_VAR}: 'muon:Muon' is not role=collection"),
        ("", {"muon": ""}, "ingestion config 'collections': empty collection name for muon"),
        ("", {"jet": "Jet.PT"}, "ingestion config 'collections': 'Jet.PT' for jet is not a collection name"),
    ],
)
def test_bad_choices_fail_the_run_naming_the_setting(monkeypatch, env, config, message):
    monkeypatch.setenv(ENV_VAR, env)
    with pytest.raises(Failure) as err:
        collection_names(IngestionConfig(collections=CollectionsConfig(**config)))
    assert message in err.value.description


def _file(key: str, muon: str = "MuonTight", warnings: tuple = ()) -> dict:
    return {"partition_key": key, "collections": {c: (muon if c == "MuonTight" else c) for c in REQUIRED_FIELDS},
            "collection_warnings": list(warnings)}


def test_collections_read_is_one_mapping_when_the_files_agree_else_a_table_per_partition():
    same = collections_metadata([_file("ttbar/a", "Muon"), _file("ttbar/b", "Muon")])
    assert same["collections_read"].value["MuonTight"] == "Muon" and "collection_warnings" not in same

    warning = "muon: 'MuonTight' not in the file, read 'Muon'"
    mixed = collections_metadata([_file("ttbar/a"), _file("ttbar/b", "Muon", (warning,))])
    table = mixed["collections_read"].value
    assert "| partition | EFlowTrack |" in table
    row = "| {} | EFlowTrack | EFlowPhoton | EFlowNeutralHadron | Electron | {} | MissingET | Jet |"
    assert row.format("ttbar/a", "MuonTight") in table and row.format("ttbar/b", "Muon") in table
    assert mixed["collection_warnings"].value == f"* ttbar/b: {warning}"
    assert collections_metadata([]) == {}
