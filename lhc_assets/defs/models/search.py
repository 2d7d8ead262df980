"""Stage 3a: the grid search of the HLF classifier, its cross-validated trials run as Spark tasks."""


import time

from dagster import AssetExecutionContext, Config, Failure, MetadataValue, asset
from pydantic import Field

from lhc_assets.defs.metadata import markdown_table
from lhc_assets.ml.hyperparameters import DEFAULT_BATCH_SIZES, DEFAULT_EPOCHS, DEFAULT_HIDDEN
from lhc_assets.spark.metering import StageMeter
from resources.model_io_manager import model_scratch
from resources.references import TableRef
from resources.spark import SparkResource
from resources.storage import StorageResource

OWNERS = ["team:lhc-physics-ml"]


class HyperparameterSearchConfig(Config):
    batch_sizes: list[int] = Field(default=list(DEFAULT_BATCH_SIZES), description="Batch sizes to try.")
    epochs: list[int] = Field(default=list(DEFAULT_EPOCHS), description="Epoch counts to try.")
    hidden_units: list[list[int]] = Field(
        default=[list(u) for u in DEFAULT_HIDDEN],
        description="Candidate unit counts per hidden layer (the grid takes one value per layer).")
    sample_fraction: float = Field(default=0.02, gt=0.0, le=1.0,
                                   description="Fraction of hlf_train_set to cross-validate on (stratified).")
    folds: int = Field(default=3, ge=2, description="Cross-validation folds.")
    parallelism: int = Field(default=0, ge=0, description="Spark tasks to spread the trials over (0: one per trial).")
    seed: int = Field(default=42, description="Seed of the sample, the folds and the weights.")


def _search_metadata(best: dict, ranked: list[dict], units: int, sample_events: int, folds: int,
                     seconds: float) -> dict:
    return {
        "trials": markdown_table(
            ["trial", "batch", "epochs", "hidden", "val accuracy", "±", "val loss", "s"],
            [[r["trial"], r["batch_size"], r["epochs"], r["hidden"], f"{r['mean_val_accuracy']:.4f}",
              f"{r['std_val_accuracy']:.4f}", f"{r['mean_val_loss']:.4f}", f"{r['seconds']:.1f}"] for r in ranked]),
        "best_parameters": MetadataValue.json({k: best[k] for k in ("batch_size", "epochs", "hidden")}),
        "best_mean_val_accuracy": best["mean_val_accuracy"],
        "trial_count": len(ranked),
        "sample_events": sample_events,
        "folds": folds,
        "spark_tasks": units,
        "seconds": round(seconds, 1),
    }


@asset(
    group_name="models",
    kinds={"spark", "tensorflow", "json"},
    owners=OWNERS,
    tags={"stage": "models"},
    io_manager_key="json_io_manager",
    description=(
        "Grid search of the HLF classifier (batch size x epochs x hidden units, DESIGN section 6), k-fold "
        "cross-validated on a stratified sample of hlf_train_set; the trials run in parallel as Spark tasks. "
        "Holds every trial's scores and the best parameters."
    ),
)
def hlf_hyperparameter_search(
    context: AssetExecutionContext, config: HyperparameterSearchConfig, spark: SparkResource, storage: StorageResource,
    hlf_train_set: TableRef,
) -> dict:
    from lhc_assets.ml.hyperparameters import best_trial, grid, run_trial_unit, sample_indices, save_sample, trial_units
    from lhc_assets.ml.readers import load_arrays
    from lhc_assets.spark.tasks import run_tasks

    meter = StageMeter(spark.get_session().sparkContext.defaultParallelism)
    trials = grid(config.batch_sizes, config.epochs, config.hidden_units)
    x, y = load_arrays(hlf_train_set.path, "hlf")
    rows = sample_indices(y, config.sample_fraction, config.seed)
    if len(rows) < config.folds * 3:
        raise Failure(description=(
            f"a {config.sample_fraction:.1%} sample of hlf_train_set has {len(rows)} events, too few for "
            f"{config.folds}-fold cross-validation: raise sample_fraction"))
    # The sample goes to storage every executor sees; each Python worker reads it once.
    with model_scratch(storage, "hlf_hyperparameter_search") as scratch:
        save_sample(scratch / "sample.npz", x[rows], y[rows])
        units = trial_units(trials, str(scratch / "sample.npz"), config.folds, config.seed, config.parallelism)
        start = time.perf_counter()
        results = [r for chunk in run_tasks(spark.get_session(), run_trial_unit, units,
                                            description=f"hlf_hyperparameter_search: {len(trials)} trials")
                   for r in chunk]
        seconds = time.perf_counter() - start
    best, ranked = best_trial(results), sorted(results, key=lambda r: -r["mean_val_accuracy"])
    # Its events: each trial cross-validates the whole sample.
    context.add_output_metadata({**_search_metadata(best, ranked, len(units), len(rows), config.folds, seconds),
                                 **meter.metadata(len(rows) * len(trials))})
    return {"best": best, "trials": ranked, "sample_events": len(rows),
            "sample_fraction": config.sample_fraction, "folds": config.folds, "seed": config.seed}
