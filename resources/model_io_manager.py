"""Trained models under ``<data root>/models/<asset>/``: one versioned directory per training, like the warehouse.

::

    <models>/<asset>/v-20261125T101500-1a2b3c4d/model.keras   a Keras model: native format (no pickle)
                                               /history.json  its per-epoch losses and accuracies
    <models>/<asset>/v-.../model/                             a Spark ML model: Spark ML persistence
    <models>/<asset>/v-.../manifest.json, <files>             exported models (ONNX files, an HLS project, ...)
    <models>/<asset>/CURRENT                                   version readers use

Published with ``resources.publisher``: a failed or killed training never replaces (or deletes) the previous
good model.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import ConfigurableIOManager, InputContext, OutputContext

from lhc_assets.ml.contract import MODEL_FILE
from resources.publisher import current_version, new_staging, new_version, publish, staging
from resources.references import ModelRef
from resources.storage import StorageResource

HISTORY_FILE = "history.json"
SPARK_MODEL_DIR = "model"
MANIFEST_FILE = "manifest.json"


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


@dataclass
class ExportedModels:
    """What an export asset returns: a directory it wrote (``export_staging``: beside the versions, named after its
    process, so a dead run's is cleaned like any staging) whose files and directories become one version, with a
    manifest (``manifest``, JSON-serialisable) describing them. The IO manager moves them and removes the directory."""

    directory: Path
    manifest: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: Path) -> Path:
        for entry in sorted(self.directory.iterdir()):
            if entry.name == MANIFEST_FILE:
                raise ValueError(f"{entry}: {MANIFEST_FILE} is written from the manifest, not copied")
            entry.rename(directory / entry.name)  # same file system: both under the asset's base directory
        (directory / MANIFEST_FILE).write_text(json.dumps(self.manifest, indent=2) + "\n")
        return directory / MANIFEST_FILE


def export_staging(storage: StorageResource, asset_name: str) -> Path:
    """A new directory for an export asset to write its files into (see ``ExportedModels``)."""
    return new_staging(storage.models / asset_name)


class ModelNotTrained(Exception):
    pass


def model_ref(storage: StorageResource, asset_name: str) -> ModelRef:
    """The current version of a model asset; raises ModelNotTrained if it was never trained."""
    version = current_version(storage.models / asset_name)
    for name in (MODEL_FILE, SPARK_MODEL_DIR, MANIFEST_FILE):
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
    """Publishes ``TrainedModel`` (Keras), ``TrainedSparkModel`` and ``ExportedModels`` outputs; loads a Keras model
    back in safe mode, an export's manifest as a dict, or a ``ModelRef`` for inputs typed so."""

    storage: StorageResource

    def handle_output(self, context: OutputContext, obj: TrainedModel | TrainedSparkModel | ExportedModels) -> None:
        name = context.asset_key.path[-1]
        saved: list[Path] = []

        def write(directory: Path) -> None:
            saved.append(obj.save(directory).relative_to(directory))

        try:
            published = publish(self.storage.models / name, new_version(context.run_id), write)
        finally:
            if isinstance(obj, ExportedModels):
                shutil.rmtree(obj.directory, ignore_errors=True)
        context.add_output_metadata({**obj.metadata, "path": str(published / saved[0])})

    def load_input(self, context: InputContext):
        ref = model_ref(self.storage, context.asset_key.path[-1])
        if context.dagster_type.typing_type is ModelRef:
            return ref
        if ref.path.name == MANIFEST_FILE:
            return json.loads(ref.path.read_text())
        from lhc_assets.ml.models import load

        return load(ref.path)
