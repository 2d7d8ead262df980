"""Pure training-data layer: preparation kernels, dataset writers and TensorFlow readers (no Dagster, no Spark)."""
