"""Stages 1-2: the per-file partitioned ingestion (raw_events, hlf_features, llf_features) and its jobs."""

from lhc_assets.defs.ingestion.assets import ingestion_assets, ingestion_jobs

__all__ = ["ingestion_assets", "ingestion_jobs"]
