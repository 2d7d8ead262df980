"""Stage 5: the trained classifiers in the forms a trigger runs (the "deployment" group).

onnx_models: every Keras classifier as ONNX for the high-level trigger (in make run's models_job), checked
against Keras; the trigger menu (``lhc trigger-menu``) reads its scores or event_scores'.
"""

from dagster import AssetSelection, define_asset_job

from lhc_assets.defs.deployment.onnx import onnx_matches_keras, onnx_models

deployment_assets = [onnx_models]
deployment_checks = [onnx_matches_keras]

deployment_job = define_asset_job(
    "deployment_job", selection=AssetSelection.groups("deployment"),
    description="Stage 5: the classifiers exported for the trigger (ONNX) and emulated in fixed point (hls4ml).",
)
deployment_jobs = [deployment_job]

__all__ = ["deployment_assets", "deployment_checks", "deployment_jobs"]
