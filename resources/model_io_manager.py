"""Trained models under ``<data root>/models/<asset>/``: one versioned directory per training, like the warehouse.

::

    <models>/<asset>/v-20261125T101500-1a2b3c4d/model.keras   native Keras format (no pickle)
                                               /history.json  per-epoch losses and accuracies
    <models>/<asset>/CURRENT                                   version readers use

The new version is written into a hidden staging directory and published by renames, so a failed or
killed training never replaces (or deletes) the previous good model.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import ConfigurableIOManager, InputContext, OutputContext

from lhc_assets.ml.contract import MODEL_FILE
from resources.io_manager import current_version, new_version, publish_version
from resources.storage import StorageResource

HISTORY_FILE = "history.json"


@dataclass
class TrainedModel:
    """What a model asset returns: the Keras model, its training history and extra materialization metadata."""

    model: Any  # keras.Model
    history: dict[str, list[float]]
    metadata: dict[str, Any] = field(default_factory=dict)


class ModelNotTrained(Exception):
    pass


def model_path(storage: StorageResource, asset_name: str) -> Path:
    """The current ``model.keras`` of a model asset; raises if it was never trained."""
    version = current_version(storage.models / asset_name)
    if version is None or not (version / MODEL_FILE).is_file():
        raise ModelNotTrained(f"model {asset_name!r} has not been trained: materialize it first")
    return version / MODEL_FILE


def new_model_staging(storage: StorageResource, asset_name: str) -> Path:
    """A fresh hidden directory beside the model's versions (same filesystem, so publishing is a rename)."""
    base = storage.models / asset_name
    base.mkdir(parents=True, exist_ok=True)
    staging = base / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    return staging


class KerasModelIOManager(ConfigurableIOManager):
    """Saves ``TrainedModel`` outputs in the native ``.keras`` format; loads them back in safe mode."""

    storage: StorageResource

    def handle_output(self, context: OutputContext, obj: TrainedModel) -> None:
        name = context.asset_key.path[-1]
        staging = new_model_staging(self.storage, name)
        try:
            obj.model.save(staging / MODEL_FILE)
            (staging / HISTORY_FILE).write_text(json.dumps(obj.history, indent=2) + "\n")
            published = publish_version(staging, self.storage.models / name, new_version(context.run_id))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        context.add_output_metadata({**obj.metadata, "path": str(published / MODEL_FILE)})

    def load_input(self, context: InputContext):
        import keras

        return keras.saving.load_model(model_path(self.storage, context.asset_key.path[-1]), safe_mode=True)
