"""The Delphes input contract (DESIGN.md section 3) shared by the generator and the readers.

Pure data: no Dagster, no Spark. Field names are the Delphes leaf names; a branch is addressed
as ``Collection.Field`` (uproot resolves that in both the nested TClonesArray layout of real
Delphes files and the flat layout the generator writes), its counter as ``Collection_size``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

TREE_NAME: Final = "Delphes"

# Sample directory name -> class label (the directory under incoming/ gives the label).
SAMPLES: Final = MappingProxyType({"qcd": 0, "ttbar": 1, "wjets": 2})
LABEL_NAMES: Final = ("QCD", "ttbar", "W+jets")

# Collections and the fields the pipeline reads; everything else in a file is pruned.
REQUIRED_FIELDS: Final = MappingProxyType(
    {
        "EFlowTrack": ("PT", "Eta", "Phi", "PID", "Charge", "X", "Y", "Z"),
        "EFlowPhoton": ("ET", "Eta", "Phi"),
        "EFlowNeutralHadron": ("ET", "Eta", "Phi"),
        "Electron": ("PT", "Eta", "Phi", "Charge"),
        "MuonTight": ("PT", "Eta", "Phi", "Charge"),
        "MissingET": ("MET", "Phi"),
        "Jet": ("PT", "Eta", "Phi", "BTag"),
    }
)

# Collection names depend on the Delphes card that wrote the file, so the collections above are *roles*:
# the raw_events columns keep these canonical names whatever collection of the file filled them.
# User-facing role key (ingestion config, LHC_DELPHES_COLLECTIONS, the data source's options) -> role.
COLLECTION_ROLES: Final = MappingProxyType(
    {
        "tracks": "EFlowTrack",
        "photons": "EFlowPhoton",
        "neutral_hadrons": "EFlowNeutralHadron",
        "electron": "Electron",
        "muon": "MuonTight",
        "jet": "Jet",
        "missing_et": "MissingET",
    }
)

# Well-known collection names of each role, in priority order; the first is the study's default. A role
# not named explicitly reads the first of these the file has.
COLLECTION_CANDIDATES: Final = MappingProxyType(
    {
        "EFlowTrack": ("EFlowTrack",),
        "EFlowPhoton": ("EFlowPhoton",),
        "EFlowNeutralHadron": ("EFlowNeutralHadron",),
        "Electron": ("Electron", "ElectronMedium", "ElectronTight", "ElectronLoose"),
        "MuonTight": ("MuonTight", "Muon", "MuonMedium", "MuonLoose"),
        "Jet": ("Jet", "JetPUPPI"),
        "MissingET": ("MissingET", "PuppiMissingET"),
    }
)

# Fields real Delphes files carry that the pipeline must ignore. The generator writes them so
# that readers are forced to prune.
EXTRA_FIELDS: Final = MappingProxyType(
    {
        "EFlowTrack": ("D0", "DZ", "T"),
        "EFlowPhoton": ("E", "EhadOverEem"),
        "EFlowNeutralHadron": ("E", "EhadOverEem"),
        "Electron": ("EhadOverEem", "IsolationVar"),
        "MuonTight": ("IsolationVar",),
        "MissingET": ("Eta",),
        "Jet": ("Mass", "TauTag", "NCharged", "NNeutrals"),
    }
)

# Integer-valued fields; everything else is float32.
INT_FIELDS: Final = frozenset({"PID", "Charge", "BTag", "TauTag", "NCharged", "NNeutrals"})


def branch_name(collection: str, field: str) -> str:
    """Leaf name of a collection field, e.g. ``EFlowTrack.PT``."""
    return f"{collection}.{field}"


def counter_name(collection: str) -> str:
    """Name of the per-event multiplicity branch, e.g. ``EFlowTrack_size``."""
    return f"{collection}_size"


def required_branches() -> list[str]:
    """Every branch the pipeline reads, in a stable order."""
    return [branch_name(c, f) for c, fields in REQUIRED_FIELDS.items() for f in fields]


def field_dtype(field: str) -> str:
    """numpy dtype name of a field as written to ROOT."""
    return "int32" if field in INT_FIELDS else "float32"


# ---- Output contract of the feature stage (DESIGN.md section 4) --------------------------------

TRACK_MIN_PT: Final = 0.5  # GeV, charged candidates
PHOTON_MIN_ET: Final = 1.0  # GeV
NEUTRAL_MIN_ET: Final = 1.0  # GeV
ISOLATION_CONE: Final = 0.3
LEPTON_MIN_PT: Final = 23.0  # GeV, selected lepton
LEPTON_MAX_ISO: Final = 0.45  # ChPFIso + GammaPFIso + NeuPFIso
OWN_TRACK_DR: Final = 1e-4  # a track this close to the selected lepton is the lepton's own
JET_MIN_PT: Final = 30.0  # GeV, jets counted in HT, nJets, nBjets
JET_MAX_ABS_ETA: Final = 2.6

MAX_TRACKS: Final = 450
MAX_PHOTONS: Final = 150
MAX_NEUTRALS: Final = 200
LLF_ROWS: Final = 1 + MAX_TRACKS + MAX_PHOTONS + MAX_NEUTRALS  # 801

HLF_COLUMNS: Final = (
    "HT", "MET", "phiMET", "MT", "nJets", "nBjets", "lepPt", "lepEta", "lepPhi",
    "lepIsoCh", "lepIsoGamma", "lepIsoNeu", "lepCharge", "lepIsEle",
)
LLF_COLUMNS: Final = (
    "E", "px", "py", "pz", "pT", "eta", "phi", "vtxX", "vtxY", "vtxZ",
    "ChPFIso", "GammaPFIso", "NeuPFIso", "isChHad", "isNeuHad", "isGamma", "isEle", "isMu", "charge",
)
N_LLF: Final = len(LLF_COLUMNS)  # features per particle

# Why an event was not selected.
DROP_NO_LEPTON: Final = "no_lepton_above_pt"  # no electron or tight muon with PT > 23 GeV
DROP_NOT_ISOLATED: Final = "lepton_not_isolated"  # leptons above 23 GeV, none isolated
