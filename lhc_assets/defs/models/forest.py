"""Stage 3c: the Spark ML baseline, a random forest on the unscaled HLF (DESIGN section 6)."""


import time

from dagster import Config, asset
from pydantic import Field

from lhc_assets.defs.metadata import markdown_table
from lhc_assets.defs.models.search import OWNERS
from lhc_assets.spark.metering import StageMeter
from resources.model_io_manager import TrainedSparkModel


class RandomForestConfig(Config):
    num_trees: int = Field(default=100, gt=0, description="Trees (DESIGN: 100).")
    max_depth: int = Field(default=10, gt=0, description="Maximum depth (DESIGN: 10).")
    seed: int = Field(default=42, description="Seed of the bootstrap and feature subsets.")


@asset(
    group_name="models",
    kinds={"spark", "sparkml"},
    owners=OWNERS,
    tags={"stage": "models"},
    io_manager_key="model_io_manager",
    description=("Spark ML random forest (100 trees, depth 10) on the 14 unscaled HLF of the train split of "
                 "undersampled_dataset, saved with Spark ML persistence under <data root>/models."),
)
def random_forest_baseline(config: RandomForestConfig, undersampled_dataset) -> TrainedSparkModel:
    from pyspark.sql import functions as F

    from lhc_assets.spark.baseline import feature_importances, train_random_forest

    meter = StageMeter(undersampled_dataset.sparkSession.sparkContext.defaultParallelism)
    start = time.perf_counter()
    train = undersampled_dataset.where(F.col("split") == "train")
    model = train_random_forest(train, config.num_trees, config.max_depth, config.seed)
    importances = sorted(feature_importances(model).items(), key=lambda kv: -kv[1])
    return TrainedSparkModel(model, metadata={
        "num_trees": config.num_trees,
        "max_depth": config.max_depth,
        "training_seconds": round(time.perf_counter() - start, 1),
        "feature_importances": markdown_table(["HLF", "importance"], [[k, f"{v:.4f}"] for k, v in importances]),
        **meter.metadata(train.count()),
    })
