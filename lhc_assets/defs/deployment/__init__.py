"""Stage 5: the trained classifiers in the forms a trigger runs (the "deployment" group).

onnx_models: every Keras classifier as ONNX for the high-level trigger (in make run's models_job), checked
against Keras. fpga_hlf_classifier: the HLF classifier in hls4ml's fixed-point C simulation for the L1 FPGA
trigger, a precision scan and the precision a rule chooses (make physics, or deployment_job on demand). The trigger
menu (``lhc trigger-menu``) reads event_scores' scores or either asset's.
"""

from dagster import AssetSelection, define_asset_job

from lhc_assets.defs.deployment.fpga import fixed_point_precision_found, fpga_hlf_classifier
from lhc_assets.defs.deployment.onnx import onnx_matches_keras, onnx_models

deployment_assets = [onnx_models, fpga_hlf_classifier]
deployment_checks = [onnx_matches_keras, fixed_point_precision_found]

deployment_job = define_asset_job(
    "deployment_job", selection=AssetSelection.groups("deployment"),
    description="Stage 5: the classifiers exported for the trigger (ONNX) and emulated in fixed point (hls4ml).",
)
deployment_jobs = [deployment_job]

__all__ = ["deployment_assets", "deployment_checks", "deployment_jobs"]
