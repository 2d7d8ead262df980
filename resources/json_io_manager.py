"""Small JSON artifacts (fitted scalers, search results) under ``<data root>/models/<asset>.json``, written atomically,
and reports with their figures under ``<data root>/reports/<asset>/``."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext

from resources.publisher import current_version, new_version, publish
from resources.storage import StorageResource

REPORT_FILE = "report.json"


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


@dataclass
class Report:
    """What a report asset returns: a JSON-serialisable report, its figures (file name -> PNG bytes) and extra
    materialization metadata."""

    data: dict[str, Any]
    figures: dict[str, bytes] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


class ReportIOManager(ConfigurableIOManager):
    """A report and its figures as one version directory under ``<data root>/reports/<asset>/`` (published
    atomically with ``resources.publisher``); loads back the current ``report.json`` as a dict, so a report is
    loadable like any other asset value (``defs.load_asset_value("model_evaluation")``, a notebook, an input)."""

    storage: StorageResource

    def _base(self, asset_name: str) -> Path:
        if not asset_name or "/" in asset_name or asset_name.startswith("."):
            raise ValueError(f"invalid asset name for a path: {asset_name!r}")
        return self.storage.reports / asset_name

    def handle_output(self, context: OutputContext, obj: Report) -> None:
        bad = [n for n in obj.figures if n == REPORT_FILE or not n or "/" in n or n.startswith(".")]
        if bad:
            raise ValueError(f"{context.asset_key.to_user_string()}: figure names must be plain file names other than "
                             f"{REPORT_FILE}, got {bad}")

        def write(directory: Path) -> None:
            (directory / REPORT_FILE).write_text(json.dumps(obj.data, indent=2) + "\n")
            for name, png in obj.figures.items():
                (directory / name).write_bytes(png)

        published = publish(self._base(context.asset_key.path[-1]), new_version(context.run_id), write)
        context.add_output_metadata({**obj.metadata, "report": MetadataValue.path(str(published / REPORT_FILE))})

    def load_input(self, context: InputContext) -> Any:
        base = self._base(context.asset_key.path[-1])
        version = current_version(base)
        if version is None or not (version / REPORT_FILE).is_file():
            raise FileNotFoundError(f"no report under {base}: materialize {context.asset_key.to_user_string()} first")
        return json.loads((version / REPORT_FILE).read_text())
