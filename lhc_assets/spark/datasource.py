"""A Spark 4 Python Data Source for Delphes ROOT files, backed by uproot.

    spark.dataSource.register(DelphesDataSource)
    df = (spark.read.format("delphes")
          .option("files", json.dumps([{"path": ..., "sample": "ttbar", "partition_key": "ttbar/x"}]))
          .option("entries_per_split", 5000)
          .load())

Each file is split into entry ranges, so one large file spreads over several cores; each task yields
Arrow record batches straight from uproot (no per-row Python). Only the branches of DESIGN.md section 3
are read.

Collection names differ between Delphes cards; the columns keep the study's names (``MuonTight``, ``Jet``,
...) whatever collection of the file fills them. Name the file's collections per role with the options
``tracks``, ``photons``, ``neutral_hadrons``, ``electron``, ``muon``, ``jet``, ``missing_et``
(``.option("muon", "Muon")``) or all at once with ``.option("collections", "muon=Muon,jet=JetPUPPI")``
(a per-role option wins over ``collections``). Same policy as the ingestion: a name chosen that way must
be in every file, else the read fails naming the file, the role and the well-known collections the file
does have; a role left unset reads the first of its well-known names present
(``schema.COLLECTION_CANDIDATES``), with a logged warning when that is not the study's name. Each file is
resolved once, when Spark plans the read (``partitions()``).

The ``LHC_DELPHES_COLLECTIONS`` variable of the ingestion is not read here: this code runs in Spark's
Python workers, whose environment was fixed when the session started, so a value set later in the
notebook would be silently ignored. Pass it on explicitly if wanted:
``.option("collections", os.environ.get("LHC_DELPHES_COLLECTIONS", ""))``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping

from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.types import StructType

from lhc_assets.physics.collection_names import CollectionNames
from lhc_assets.physics.delphes_reader import RAW_SCHEMA, inspect_file, read_batches
from lhc_assets.physics.schema import COLLECTION_ROLES

FORMAT_NAME = "delphes"
log = logging.getLogger(__name__)


def raw_spark_schema() -> StructType:
    return from_arrow_schema(RAW_SCHEMA)


class EntryRange(InputPartition):
    """Entries [start, stop) of one file: the unit of work of one Spark task."""

    def __init__(self, path: str, sample: str, partition_key: str, start: int, stop: int,
                 collections: dict[str, str] | None = None):
        super().__init__((path, start, stop))
        self.path = path
        self.sample = sample
        self.partition_key = partition_key
        self.start = start
        self.stop = stop
        self.collections = collections  # role -> the file's collection, resolved when the read was planned


def split_entries(num_entries: int, entries_per_split: int, min_splits: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges covering the file, at least ``min_splits`` when it has enough entries."""
    n_splits = max(1, math.ceil(num_entries / entries_per_split), min(min_splits, num_entries))
    size = math.ceil(num_entries / n_splits)
    return [(s, min(s + size, num_entries)) for s in range(0, num_entries, size)]


def collection_names(options: Mapping[str, str]) -> CollectionNames:
    """The explicit collection choices of the data source's options: ``collections``, then the per-role ones."""
    names = CollectionNames.parse(options.get("collections", ""), "delphes option 'collections'")
    per_role = {key: options[key] for key in COLLECTION_ROLES if key in options}
    return names.override(CollectionNames.from_mapping(per_role, "delphes options"))


class DelphesReader(DataSourceReader):
    def __init__(self, options: dict[str, str]):
        self.files = json.loads(options["files"])
        self.entries_per_split = int(options.get("entries_per_split", 5000))
        self.min_splits_per_file = int(options.get("min_splits_per_file", 1))
        self.batch_size = int(options.get("batch_size", 2000))
        self.collections = collection_names(options)

    def partitions(self) -> list[InputPartition]:
        parts: list[InputPartition] = []
        for f in self.files:
            info = inspect_file(f["path"], self.collections)  # the header and branch names only
            for warning in info.warnings:
                log.warning("%s: %s", f["path"], warning)
            n = int(f.get("num_entries", info.num_entries))
            for start, stop in split_entries(n, self.entries_per_split, self.min_splits_per_file):
                parts.append(EntryRange(f["path"], f["sample"], f["partition_key"], start, stop, info.collections))
        return parts

    def read(self, partition: InputPartition) -> Iterator:
        assert isinstance(partition, EntryRange)
        yield from read_batches(
            partition.path, partition.sample, partition.partition_key, partition.start, partition.stop,
            step=self.batch_size, collections=partition.collections,
        )


class DelphesDataSource(DataSource):
    """``spark.read.format("delphes")``: Delphes ROOT files as rows of events."""

    @classmethod
    def name(cls) -> str:
        return FORMAT_NAME

    def schema(self) -> StructType:
        return raw_spark_schema()

    def reader(self, schema: StructType) -> DataSourceReader:
        return DelphesReader(self.options)
