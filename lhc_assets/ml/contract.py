"""The model and tensor contract: what each classifier reads, in which shapes, from which datasets.

One place for the columns and shapes of the training datasets (DESIGN.md section 5), derived from
``physics/schema.py``, and one registry of the Keras classifiers (DESIGN.md section 6): the builder, the
reader inputs, the training and validation datasets. The assets, the training loop, the distributed
workers, the readers and Spark scoring all read it, so adding a model to the platform means one
``KerasModelSpec`` here plus its builder in ``lhc_assets.ml.models``: its asset is made from the entry
(``lhc_assets/defs/models/classifiers.py``).

Pure Python: no TensorFlow at import time (the distributed launcher and Spark's driver import this), no
Dagster, no Spark.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from lhc_assets.physics.schema import HLF_COLUMNS, LABEL_NAMES, LLF_ROWS, N_LLF

if TYPE_CHECKING:
    import keras

# ---- tensors: the columns of the training datasets and their shapes -------------------------------------

LABEL: Final = "label"  # one-hot, float32[N_CLASSES]
HLF_INPUT: Final = "hlf_input"  # the 14 HLF, min-max scaled, float32[N_HLF]
GRU_INPUT: Final = "gru_input"  # the particle list, float32[LLF_ROWS * N_LLF], row-major, padding first

N_CLASSES: Final = len(LABEL_NAMES)
N_HLF: Final = len(HLF_COLUMNS)
HLF_SHAPE: Final = (N_HLF,)
GRU_SHAPE: Final = (LLF_ROWS, N_LLF)  # (801, 19): rows of the whole list, features per particle
GRU_WIDTH: Final = LLF_ROWS * N_LLF  # values per event as stored (flattened)
# Flattened list length stored on disk per column.
WIDTHS: Final = {HLF_INPUT: N_HLF, GRU_INPUT: GRU_WIDTH, LABEL: N_CLASSES}

# Reader inputs -> the model-input columns they load (the label always comes too).
INPUT_COLUMNS: Final = {"hlf": (HLF_INPUT,), "gru": (GRU_INPUT,), "inclusive": (HLF_INPUT, GRU_INPUT)}
INPUTS: Final = tuple(INPUT_COLUMNS)


def normalize_sequence_steps(steps: int | None) -> int | None:
    """The particle-list rows a model reads: None for the whole list (``LLF_ROWS`` means the same), else
    that many last rows (the particles nearest the lepton). ValueError outside 1..LLF_ROWS."""
    if steps is None or steps == LLF_ROWS:
        return None
    if not 1 <= steps <= LLF_ROWS:
        raise ValueError(f"sequence_steps must be between 1 and {LLF_ROWS}, got {steps}")
    return steps


# ---- the model family -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KerasModelSpec:
    """A Keras classifier of the platform; ``name`` is its asset name."""

    name: str
    builder: str  # function of lhc_assets.ml.models returning a compiled model
    inputs: str  # reader inputs (a key of INPUT_COLUMNS)
    train_set: str  # asset names of the datasets it trains and validates on
    test_set: str
    description: str = ""  # the architecture, for people (the asset's description)
    needs_scalers: bool = False  # the builder takes the fitted feature_scalers (scalers=...)

    def __post_init__(self) -> None:
        if self.inputs not in INPUT_COLUMNS:
            raise ValueError(f"{self.name}: inputs must be one of {INPUTS}, got {self.inputs!r}")

    @property
    def reads_particles(self) -> bool:
        """Whether the model reads the particle list (and so takes ``sequence_steps``)."""
        return GRU_INPUT in INPUT_COLUMNS[self.inputs]

    def build(self, **kwargs: Any) -> keras.Model:
        """The compiled model (kwargs go to the builder); imports TensorFlow."""
        models = importlib.import_module("lhc_assets.ml.models")
        return getattr(models, self.builder)(**kwargs)


KERAS_MODELS: Final = {spec.name: spec for spec in (
    KerasModelSpec("hlf_classifier", "hlf_classifier", "hlf", "hlf_train_set", "hlf_test_set",
                   "Dense 14 -> 50 -> 20 -> 10 -> 3 classifier on the scaled HLF (2,013 parameters)"),
    KerasModelSpec("particle_sequence_classifier", "particle_sequence_classifier", "gru", "train_set", "test_set",
                   "Masking -> GRU(50) -> Dropout -> 3 softmax over the particle lists (up to 801 x 19; or the "
                   "sequence_steps particles nearest the lepton)"),
    KerasModelSpec("inclusive_classifier", "inclusive_classifier", "inclusive", "train_set", "test_set",
                   "GRU branch over the particle lists concatenated with the HLF -> Dense 25 -> 3 softmax "
                   "(12,353 parameters)"),
    KerasModelSpec("image_classifier", "image_classifier", "inclusive", "train_set", "test_set",
                   "Event images drawn in the graph from the particle lists and MET (eta x phi x 5 channels: lepton, "
                   "photons, charged and neutral hadrons, MET; phi rotated to the lepton) -> a compact CNN "
                   "(periodic in phi) -> 3 softmax", needs_scalers=True),
)}
RANDOM_FOREST: Final = "random_forest_baseline"  # Spark ML, on the unscaled HLF of undersampled_dataset
MODEL_FILE: Final = "model.keras"  # the file a Keras model is saved as, in its version directory
# Particles nearest the lepton read by make run's and the benchmark's inclusive classifier: docs/performance.md.
FAST_SEQUENCE_STEPS: Final = 128


def keras_model(name: str) -> KerasModelSpec:
    """The spec of a Keras classifier by asset name; ValueError naming the known ones otherwise."""
    if name not in KERAS_MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(KERAS_MODELS)}")
    return KERAS_MODELS[name]
