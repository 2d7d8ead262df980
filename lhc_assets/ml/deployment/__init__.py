"""Pure code that turns trained models into trigger-ready forms (no Dagster, no Spark).

``fpga``: the HLF classifier as an hls4ml fixed-point design, its bit-accurate C simulation and a scan of
fixed-point precisions against the float model, for the L1 FPGA trigger.
"""
