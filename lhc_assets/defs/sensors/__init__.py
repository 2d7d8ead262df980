"""Sensors of the code location."""

from lhc_assets.defs.sensors.new_files import new_delphes_files_sensor

sensors = [new_delphes_files_sensor]

__all__ = ["new_delphes_files_sensor", "sensors"]
