"""Dagster objects of the code location, one sub-package per stage of the study.

Everything here is a thin layer over the pure code (``lhc_assets.physics``, ``lhc_assets.ml``,
``lhc_assets.spark``) and the storage resources (``resources``); see docs/architecture.md.
"""
