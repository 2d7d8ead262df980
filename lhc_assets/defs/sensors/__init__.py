"""Sensors of the code location."""

from lhc_assets.defs.sensors.new_files import new_delphes_files_sensor
from lhc_assets.defs.sensors.run_failures import record_failed_partitions

sensors = [new_delphes_files_sensor, record_failed_partitions]

__all__ = ["new_delphes_files_sensor", "record_failed_partitions", "sensors"]
