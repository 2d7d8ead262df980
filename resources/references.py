"""What the IO managers hand an asset that asks for a reference instead of the data itself.

An asset parameter annotated ``TableRef`` (or ``ModelRef``), or an ``AssetIn(dagster_type=TableRef)``, gets
the stored location of its upstream: the pure code it delegates to reads files (Petastorm, pyarrow, Keras), and
Spark reads many partitions in one job. Everything else gets the value (a Spark DataFrame, a Keras model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TableRef:
    """A warehouse table as stored: the current version directory of the whole table (``paths[None]``) or of
    each requested partition that is materialized; ``missing`` lists requested partitions that are not."""

    asset: str
    paths: dict[str | None, Path]
    missing: tuple[str, ...] = ()

    @property
    def path(self) -> Path:
        """The directory of an unpartitioned table."""
        if None not in self.paths:
            raise ValueError(f"{self.asset} is partitioned: use .paths or .partition(key)")
        return self.paths[None]

    @property
    def partition_keys(self) -> list[str]:
        """The materialized partitions, in key order."""
        return sorted(k for k in self.paths if k is not None)

    def partition(self, key: str) -> Path:
        if key not in self.paths:
            raise KeyError(f"partition {key!r} of {self.asset} is not materialized")
        return self.paths[key]

    def files(self, key: str | None = None) -> list[Path]:
        """The Parquet files of the table (or of one partition), in name order."""
        return sorted((self.path if key is None else self.partition(key)).glob("*.parquet"))

    def select(self, keys: list[str]) -> TableRef:
        """The same table restricted to ``keys`` (those not materialized go to ``missing``)."""
        return TableRef(self.asset, {k: self.paths[k] for k in keys if k in self.paths},
                        tuple(k for k in keys if k not in self.paths))

    def read(self, session: Any) -> Any:
        """One Spark DataFrame over the table (every materialized partition)."""
        if not self.paths:
            raise ValueError(f"no materialized partition of {self.asset}")
        return session.read.parquet(*(str(self.paths[k]) for k in sorted(self.paths, key=lambda k: k or "")))


@dataclass(frozen=True)
class ModelRef:
    """A trained model as stored: its current version directory and the file or directory to load."""

    asset: str
    path: Path  # model.keras for a Keras model; the Spark ML PipelineModel directory for the forest
