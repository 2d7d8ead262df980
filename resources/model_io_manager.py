"""Trained models under ``<data root>/models/<asset>/``: one versioned directory per training, like the warehouse.

::

    <models>/<asset>/v-20261125T101500-1a2b3c4d/model.keras   a Keras model: native format (no pickle)
                                               /history.json  its per-epoch losses and accuracies
    <models>/<asset>/v-.../model/                             a Spark ML model: Spark ML persistence
    <models>/<asset>/CURRENT                                   version readers use

Published with ``resources.publisher``: a failed or killed training never replaces (or deletes) the previous
good model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import ConfigurableIOManager, InputContext, OutputContext

from lhc_assets.ml.contract import MODEL_FILE
from resources.publisher import current_version, new_version, publish, staging
from resources.references import ModelRef
from resources.storage import StorageResource

HISTORY_FILE = "history.json"
SPARK_MODEL_DIR = "model"


@dataclass
class TrainedModel:
    """What a Keras model asset returns: the model, its training history and extra materialization metadata."""

    model: Any  # keras.Model
    history: dict[str, list[float]]
    metadata: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: Path) -> Path:
        self.model.save(directory / MODEL_FILE)
        (directory / HISTORY_FILE).write_text(json.dumps(self.history, indent=2) + "\n")
        return directory / MODEL_FILE


@dataclass
class TrainedSparkModel:
    """What a Spark ML model asset returns: the fitted model (saved with Spark ML persistence) and metadata."""

    model: Any  # pyspark.ml.Model
    metadata: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: Path) -> Path:
        self.model.write().save(str(directory / SPARK_MODEL_DIR))
        return directory / SPARK_MODEL_DIR


class ModelNotTrained(Exception):
    pass


def model_ref(storage: StorageResource, asset_name: str) -> ModelRef:
    """The current version of a model asset; raises ModelNotTrained if it was never trained."""
    version = current_version(storage.models / asset_name)
    for name in (MODEL_FILE, SPARK_MODEL_DIR):
        if version is not None and (version / name).exists():
            return ModelRef(asset_name, version / name)
    raise ModelNotTrained(f"model {asset_name!r} has not been trained: materialize it first")


def model_path(storage: StorageResource, asset_name: str) -> Path:
    """The current model file (or directory) of a model asset; raises if it was never trained."""
    return model_ref(storage, asset_name).path


def model_scratch(storage: StorageResource, asset_name: str):
    """A scratch directory beside the model's versions, removed afterwards (a context manager): for what a
    training writes on the way (a sample for the Spark tasks, the workers' checkpoints)."""
    return staging(storage.models / asset_name)


class KerasModelIOManager(ConfigurableIOManager):
    """Publishes ``TrainedModel`` (Keras) and ``TrainedSparkModel`` outputs; loads a Keras model back in safe
    mode, or a ``ModelRef`` for inputs typed so."""

    storage: StorageResource

    def handle_output(self, context: OutputContext, obj: TrainedModel | TrainedSparkModel) -> None:
        name = context.asset_key.path[-1]
        saved: list[Path] = []

        def write(directory: Path) -> None:
            saved.append(obj.save(directory).relative_to(directory))

        published = publish(self.storage.models / name, new_version(context.run_id), write)
        context.add_output_metadata({**obj.metadata, "path": str(published / saved[0])})

    def load_input(self, context: InputContext):
        ref = model_ref(self.storage, context.asset_key.path[-1])
        if context.dagster_type.typing_type is ModelRef:
            return ref
        from lhc_assets.ml.models import load

        return load(ref.path)
