"""Small JSON artifacts (fitted scalers, reports) under ``<data root>/models/<asset>.json``, written atomically."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from dagster import ConfigurableIOManager, InputContext, OutputContext

from resources.storage import StorageResource


class JsonIOManager(ConfigurableIOManager):
    """One JSON-serialisable value per (unpartitioned) asset; the previous file stays until the new one is whole."""

    storage: StorageResource

    def path(self, asset_name: str) -> Path:
        if not asset_name or "/" in asset_name or asset_name.startswith("."):
            raise ValueError(f"invalid asset name for a path: {asset_name!r}")
        return self.storage.models / f"{asset_name}.json"

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        path = self.path(context.asset_key.path[-1])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        context.add_output_metadata({"path": str(path)})

    def load_input(self, context: InputContext) -> Any:
        path = self.path(context.asset_key.path[-1])
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: materialize {context.asset_key.to_user_string()} first")
        return json.loads(path.read_text())


class ReportIOManager(ConfigurableIOManager):
    """Loads an asset's current ``report.json`` from ``<data root>/reports/<asset>/``.

    The asset publishes the report together with its figures as one version directory (atomic), so storing
    is the asset's job and ``handle_output`` only checks the version is there; this manager makes the report
    loadable like any other asset value (``defs.load_asset_value("model_evaluation")``, a notebook, an input).
    """

    storage: StorageResource

    def _report(self, asset_name: str) -> Path | None:
        from resources.io_manager import current_version

        if not asset_name or "/" in asset_name or asset_name.startswith("."):
            raise ValueError(f"invalid asset name for a path: {asset_name!r}")
        version = current_version(self.storage.reports / asset_name)
        return None if version is None else version / "report.json"

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        path = self._report(context.asset_key.path[-1])
        if path is None or not path.is_file():
            raise RuntimeError(f"{context.asset_key.to_user_string()} did not publish its report.json")

    def load_input(self, context: InputContext) -> Any:
        path = self._report(context.asset_key.path[-1])
        if path is None or not path.is_file():
            raise FileNotFoundError(f"no report under {self.storage.reports / context.asset_key.path[-1]}: "
                                    f"materialize {context.asset_key.to_user_string()} first")
        return json.loads(path.read_text())
