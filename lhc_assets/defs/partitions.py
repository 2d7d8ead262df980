"""The one partitions definition of the platform: every partitioned asset has one partition per input file.

Keys are ``<sample>/<safe file stem>`` (``lhc_assets.physics.partition_keys``). The new-file sensor registers
them and names the file of each run it requests in the ``INPUT_FILE_TAG`` tag, which the ingestion reads.
"""

from dagster import DynamicPartitionsDefinition

PARTITIONS_DEF_NAME = "delphes_files"
# '<sample>/<file name>' under incoming/, set by the new-file sensor on the run it requests for that file.
INPUT_FILE_TAG = "lhc/input_file"

delphes_files = DynamicPartitionsDefinition(name=PARTITIONS_DEF_NAME)
