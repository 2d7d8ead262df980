"""Where everything lives on disk: one data root, a fixed layout below it.

::

    <root>/incoming/<sample>/*.root        input Delphes files (the directory gives the label)
    <root>/warehouse/<asset>/<partition>/  Parquet tables written by the assets
    <root>/models/                         trained model artifacts
    <root>/reports/                        evaluation reports and figures

The root defaults to ``./data`` and is overridden by the ``LHC_DATA_ROOT`` environment variable
or by Dagster resource config. On a cluster it is a path every executor sees (a shared filesystem).
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field

from lhc_assets.physics.schema import SAMPLES

DATA_ROOT_ENV = "LHC_DATA_ROOT"
DEFAULT_DATA_ROOT = "data"


class StorageResource(ConfigurableResource):
    """The on-disk layout under one data root."""

    root: str = Field(default=DEFAULT_DATA_ROOT, description="Data root directory (absolute or relative to cwd).")

    def setup_for_execution(self, context: InitResourceContext) -> None:
        # Every run that touches the data records which process executes it, so that a run whose process dies is
        # noticed (resources/process.py). Resources start in the run's own process (in-process executor).
        run = context.run
        if context.instance is not None and run is not None and context.instance.get_run_by_id(run.run_id):
            from resources.process import process_tags

            context.instance.add_run_tags(run.run_id, process_tags())

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser().resolve()

    @property
    def incoming(self) -> Path:
        return self.root_path / "incoming"

    def incoming_dir(self, sample: str) -> Path:
        if sample not in SAMPLES:
            raise ValueError(f"unknown sample {sample!r}; expected one of {sorted(SAMPLES)}")
        return self.incoming / sample

    @property
    def warehouse(self) -> Path:
        return self.root_path / "warehouse"

    @property
    def models(self) -> Path:
        return self.root_path / "models"

    @property
    def reports(self) -> Path:
        return self.root_path / "reports"

    def asset_dir(self, asset_name: str) -> Path:
        """Directory holding every partition of one asset's table."""
        if not asset_name or "/" in asset_name or asset_name.startswith("."):
            raise ValueError(f"invalid asset name for a path: {asset_name!r}")
        return self.warehouse / asset_name

    def input_files(self) -> dict[str, tuple[str, Path]]:
        """Every visible input file by partition key: key -> (sample, path). Unsupported names are skipped."""
        from lhc_assets.physics.partition_keys import UnsupportedFileName, partition_key

        found: dict[str, tuple[str, Path]] = {}
        for sample in SAMPLES:
            directory = self.incoming_dir(sample)
            if not directory.is_dir():
                continue
            for path in sorted(directory.glob("*.root")):
                try:
                    found[partition_key(sample, path.name)] = (sample, path)
                except UnsupportedFileName:
                    continue
        return found

    def input_file(self, key: str, file_id: str | None = None) -> tuple[str, Path] | None:
        """(sample, path) of the input file of one partition without listing ``incoming/``: the file named by
        ``file_id`` ('<sample>/<file name>', what the new-file sensor tags its run with), else
        ``<sample>/<stem>.root``; None when neither exists and maps to ``key`` (a renamed file: see
        ``input_files``)."""
        from lhc_assets.physics.partition_keys import UnsupportedFileName, parse_key, partition_key

        sample, stem = parse_key(key)
        for candidate in filter(None, (file_id, f"{sample}/{stem}.root")):
            file_sample, _, name = candidate.partition("/")
            try:
                if partition_key(file_sample, name) != key:
                    continue
            except UnsupportedFileName:
                continue
            path = self.incoming / file_sample / name
            if path.is_file():
                return file_sample, path
        return None

    def locate_input_files(self, keys: list[str], file_id: str | None = None) -> dict[str, tuple[str, Path]]:
        """(sample, path) of the input file of every key found; ``incoming/`` is listed (once) only for keys whose
        file name was changed to make the key (odd characters, long names)."""
        found = {k: hit for k in keys if (hit := self.input_file(k, file_id)) is not None}
        if len(found) < len(keys):
            listed = self.input_files()
            found.update({k: listed[k] for k in keys if k not in found and k in listed})
        return found

    def ensure_layout(self) -> None:
        """Create the top-level directories (idempotent)."""
        for d in (*(self.incoming_dir(s) for s in SAMPLES), self.warehouse, self.models, self.reports):
            d.mkdir(parents=True, exist_ok=True)


def storage_from_env() -> StorageResource:
    """The storage resource configured from ``LHC_DATA_ROOT`` (default ``./data``)."""
    return StorageResource(root=os.environ.get(DATA_ROOT_ENV, DEFAULT_DATA_ROOT))
