"""The Spark ML baseline of DESIGN section 6: a random forest on the 14 unscaled HLF of the undersampled dataset."""

from __future__ import annotations

import numpy as np
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import RandomForestClassifier
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lhc_assets.physics.schema import HLF_COLUMNS

FEATURES = "hlf_features"
PROBABILITY = "probability"


def train_random_forest(train: DataFrame, num_trees: int, max_depth: int, seed: int) -> PipelineModel:
    """Fit assembler + forest on rows with ``label`` (class index) and the HLF columns."""
    assembler = VectorAssembler(inputCols=list(HLF_COLUMNS), outputCol=FEATURES, handleInvalid="error")
    forest = RandomForestClassifier(
        featuresCol=FEATURES, labelCol="label", probabilityCol=PROBABILITY,
        numTrees=num_trees, maxDepth=max_depth, seed=seed,
    )
    return Pipeline(stages=[assembler, forest]).fit(train.withColumn("label", F.col("label").cast("double")))


def forest_probabilities(model: PipelineModel, events: DataFrame) -> DataFrame:
    """``label`` (int) and ``probability`` (array<float> of the classes) for every event."""
    from pyspark.ml.functions import vector_to_array

    scored = model.transform(events)
    return scored.select(F.col("label").cast("int").alias("label"),
                         vector_to_array(PROBABILITY, "float32").alias(PROBABILITY))


def feature_importances(model: PipelineModel) -> dict[str, float]:
    forest = model.stages[-1]
    return {name: float(v) for name, v in zip(HLF_COLUMNS, forest.featureImportances.toArray(), strict=True)}


def forest_test_predictions(model: PipelineModel, undersampled: DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(true class, class probabilities) of the forest on the test split of ``undersampled_dataset``."""
    scores = forest_probabilities(model, undersampled.where(F.col("split") == "test")).toArrow()
    labels = scores.column("label").to_numpy()
    return labels, scores.column(PROBABILITY).combine_chunks().flatten().to_numpy().reshape(len(labels), -1)
