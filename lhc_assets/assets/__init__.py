"""Dagster assets of the platform, one module per stage."""
