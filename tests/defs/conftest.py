"""A Dagster instance and a data root with one generated file per sample, for materializing assets."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, instance_for_test

from lhc_assets.physics.partition_keys import partition_key


class Platform:
    """The definitions bound to one data root, with helpers to materialize partitions."""

    def __init__(self, root: Path, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("LHC_DATA_ROOT", str(root))
        from lhc_assets.definitions import build_definitions

        self.root = root
        self.instance = instance
        self.defs = build_definitions()
        self.io = self.defs.resources["warehouse_io_manager"]

    def add_file(self, sample: str, src: Path | None = None, name: str | None = None, maker=None) -> str:
        name = name or (src.name if src else "file.root")
        dest = self.root / "incoming" / sample / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if maker is not None:
            maker(dest)
        else:
            shutil.copyfile(src, dest)
        key = partition_key(sample, name)
        self.instance.add_dynamic_partitions("delphes_files", [key])
        return key

    def materialize(self, keys: list[str], job: str = "ingestion_job", run_config: dict | None = None):
        job_def = self.defs.resolve_job_def(job)
        if len(keys) == 1:
            return job_def.execute_in_process(instance=self.instance, partition_key=keys[0], raise_on_error=False,
                                              run_config=run_config)
        ordered = [k for k in self.instance.get_dynamic_partitions("delphes_files") if k in keys]
        return job_def.execute_in_process(
            instance=self.instance,
            tags={"dagster/asset_partition_range_start": ordered[0], "dagster/asset_partition_range_end": ordered[-1]},
            raise_on_error=False, run_config=run_config,
        )

    def version(self, asset: str, key: str) -> Path | None:
        from resources.io_manager import current_version

        return current_version(self.io.partition_dir(asset, key))

    def table(self, asset: str, key: str):
        import pyarrow.parquet as pq

        return pq.read_table(self.version(asset, key)).sort_by("entry")


def failure_messages(result) -> str:
    return "\n".join(
        e.step_failure_data.error.message + "".join(
            str(c.message) for c in ([e.step_failure_data.error.cause] if e.step_failure_data.error.cause else []))
        for e in result.all_events if e.is_step_failure
    )


@pytest.fixture
def platform(tmp_path, monkeypatch, spark) -> Iterator[Platform]:
    with instance_for_test() as instance:
        yield Platform(tmp_path / "data", instance, monkeypatch)
