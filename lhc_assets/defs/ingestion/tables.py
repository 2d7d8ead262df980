"""The ingestion's asset names and the table each is, as the per-task code names it (``physics/ingest.py``)."""

from dagster import AssetKey

from lhc_assets.physics import ingest

RAW_EVENTS, HLF_FEATURES, LLF_FEATURES = "raw_events", "hlf_features", "llf_features"
INGESTION_ASSETS = (RAW_EVENTS, HLF_FEATURES, LLF_FEATURES)
TABLE_OF = {RAW_EVENTS: ingest.RAW, HLF_FEATURES: ingest.HLF, LLF_FEATURES: ingest.LLF}
SCHEMAS = {asset: ingest.TABLE_SCHEMAS[table] for asset, table in TABLE_OF.items()}


def selected_tables(selected: set[AssetKey]) -> list[str]:
    """The ingestion assets a run materializes, in graph order."""
    return [a for a in INGESTION_ASSETS if AssetKey(a) in selected]
