"""Stage 3: the hyperparameter search, the Keras classifiers and the Spark ML baseline.

hlf_train_set --------------------------> hlf_hyperparameter_search
hlf_train_set / hlf_test_set -----------> hlf_classifier
train_set / test_set -------------------> particle_sequence_classifier, inclusive_classifier
undersampled_dataset -------------------> random_forest_baseline
"""

from dagster import AssetSelection, define_asset_job

from lhc_assets.defs.models.classifiers import keras_classifiers
from lhc_assets.defs.models.forest import random_forest_baseline
from lhc_assets.defs.models.search import hlf_hyperparameter_search

model_assets = [hlf_hyperparameter_search, *keras_classifiers, random_forest_baseline]

# The models, their evaluation on the test split and their ONNX export (fast); per-file scoring and the FPGA
# emulation are on demand (file_scores_job, deployment_job).
models_job = define_asset_job(
    "models_job",
    selection=(AssetSelection.groups("models", "evaluation") - AssetSelection.assets("file_event_scores"))
    | AssetSelection.assets("onnx_models"),
    description=("Stages 3-5: hyperparameter search, the Keras classifiers, the random forest, scores, evaluation, "
                 "the ONNX export."),
)
model_jobs = [models_job]

__all__ = ["model_assets", "model_jobs"]
