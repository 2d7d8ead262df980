"""A Spark 4 Python Data Source for Delphes ROOT files, backed by uproot.

    spark.dataSource.register(DelphesDataSource)
    df = (spark.read.format("delphes")
          .option("files", json.dumps([{"path": ..., "sample": "ttbar", "partition_key": "ttbar/x"}]))
          .option("entries_per_split", 5000)
          .load())

Each file is split into entry ranges, so one large file spreads over several cores; each task yields
Arrow record batches straight from uproot (no per-row Python). Only the branches of DESIGN.md section 3
are read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.types import StructType

from lhc_assets.physics.delphes_reader import RAW_SCHEMA, inspect_file, read_batches

FORMAT_NAME = "delphes"


def raw_spark_schema() -> StructType:
    return from_arrow_schema(RAW_SCHEMA)


class EntryRange(InputPartition):
    """Entries [start, stop) of one file: the unit of work of one Spark task."""

    def __init__(self, path: str, sample: str, partition_key: str, start: int, stop: int):
        super().__init__((path, start, stop))
        self.path = path
        self.sample = sample
        self.partition_key = partition_key
        self.start = start
        self.stop = stop


def split_entries(num_entries: int, entries_per_split: int, min_splits: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges covering the file, at least ``min_splits`` when it has enough entries."""
    n_splits = max(1, math.ceil(num_entries / entries_per_split), min(min_splits, num_entries))
    size = math.ceil(num_entries / n_splits)
    return [(s, min(s + size, num_entries)) for s in range(0, num_entries, size)]


class DelphesReader(DataSourceReader):
    def __init__(self, options: dict[str, str]):
        self.files = json.loads(options["files"])
        self.entries_per_split = int(options.get("entries_per_split", 5000))
        self.min_splits_per_file = int(options.get("min_splits_per_file", 1))
        self.batch_size = int(options.get("batch_size", 2000))

    def partitions(self) -> list[InputPartition]:
        parts: list[InputPartition] = []
        for f in self.files:
            n = int(f["num_entries"]) if "num_entries" in f else inspect_file(f["path"]).num_entries
            for start, stop in split_entries(n, self.entries_per_split, self.min_splits_per_file):
                parts.append(EntryRange(f["path"], f["sample"], f["partition_key"], start, stop))
        return parts

    def read(self, partition: InputPartition) -> Iterator:
        assert isinstance(partition, EntryRange)
        yield from read_batches(
            partition.path, partition.sample, partition.partition_key, partition.start, partition.stop,
            step=self.batch_size,
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
