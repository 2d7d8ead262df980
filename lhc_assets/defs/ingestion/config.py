"""The ingestion's run config: Spark splits, Parquet codecs and the Delphes collection read for each role."""

from typing import Any

from dagster import Config, Failure
from pydantic import Field

from lhc_assets.physics.collection_names import ENV_VAR, CollectionConfigError, CollectionNames
from lhc_assets.physics.ingest import LLF_COMPRESSION


def _role_field(key: str, default: str, alternatives: str = "") -> Any:
    also = f"; if absent, the first of {alternatives} present is read, with a warning" if alternatives else ""
    return Field(default=None, description=(
        f"Delphes collection read as the {key} role (unset: {ENV_VAR}'s choice, else {default!r}{also}). "
        "A name set here must be in the file, or its partition fails."))


class CollectionsConfig(Config):
    """The collection of the input files read for each role; None leaves the choice to LHC_DELPHES_COLLECTIONS,
    else to the defaults (lhc_assets/physics/schema.py COLLECTION_CANDIDATES)."""

    tracks: str | None = _role_field("tracks", "EFlowTrack")
    photons: str | None = _role_field("photons", "EFlowPhoton")
    neutral_hadrons: str | None = _role_field("neutral_hadrons", "EFlowNeutralHadron")
    electron: str | None = _role_field("electron", "Electron", "ElectronMedium, ElectronTight, ElectronLoose")
    muon: str | None = _role_field("muon", "MuonTight", "Muon, MuonMedium, MuonLoose")
    jet: str | None = _role_field("jet", "Jet", "JetPUPPI")
    missing_et: str | None = _role_field("missing_et", "MissingET", "PuppiMissingET")


class IngestionConfig(Config):
    entries_per_split: int = Field(default=5000, description="Entries per Spark task; a large file uses several cores.")
    batch_size: int = Field(default=2000, description="Events per Arrow record batch (and Parquet row group).")
    compression: str = Field(default="snappy", description="Parquet codec of raw_events and hlf_features.")
    llf_compression: str = Field(
        default=LLF_COMPRESSION,
        description="Parquet codec of llf_features. Its particle lists are float32 bytes that snappy shrinks only "
                    "about 1.5x at a large cost in write and read time, so they are stored uncompressed by default; "
                    "choose 'zstd' or 'snappy' to trade that time for about a third less disk.")
    collections: CollectionsConfig = Field(
        default_factory=CollectionsConfig,
        description="Collection names per role when the Delphes card did not write the study's (MuonTight, Jet, ...).")


def collection_names(config: IngestionConfig) -> CollectionNames:
    """The run's explicit collection choices: LHC_DELPHES_COLLECTIONS (read now, so sensor runs and backfills see
    the current value) with the run config's on top."""
    try:
        return CollectionNames.from_env().override(
            CollectionNames.from_mapping(config.collections.model_dump(), "ingestion config 'collections'"))
    except CollectionConfigError as exc:
        raise Failure(description=str(exc)) from None
