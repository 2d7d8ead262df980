"""Trained classifiers in the forms a trigger runs: ONNX for the high-level trigger (``onnx_export``), hls4ml's
fixed-point emulation for the Level-1 FPGA trigger (``fpga``), and the trigger decision itself (``trigger``: the
score threshold for a target ttbar efficiency and the rates it lets through).

Pure code: no Dagster, no Spark (the assets in ``lhc_assets.defs.deployment`` call it).
"""
