"""Stages 3 and 4 of the study (DESIGN.md section 6): hyperparameter search, classifiers, baseline, scores, evaluation.

hlf_train_set --------------------------> hlf_hyperparameter_search
hlf_train_set / hlf_test_set -----------> hlf_classifier ---------------.
train_set / test_set -------------------> particle_sequence_classifier -+-> event_scores -> model_evaluation
train_set / test_set -------------------> inclusive_classifier ---------'                  ^
undersampled_dataset -------------------> random_forest_baseline --------------------------'
"""


import base64
import json
import shutil
import time
import uuid
from typing import Any, Literal

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetSelection,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    Output,
    ResourceParam,
    asset,
    asset_check,
    define_asset_job,
)
from pydantic import Field

from lhc_assets.defs.partitions import delphes_files
from lhc_assets.ml.contract import KERAS_MODELS, RANDOM_FOREST, keras_model, normalize_sequence_steps
from lhc_assets.ml.hyperparameters import DEFAULT_BATCH_SIZES, DEFAULT_EPOCHS, DEFAULT_HIDDEN
from lhc_assets.physics.schema import LABEL_NAMES, LLF_ROWS
from resources.io_manager import (
    PartitionNotMaterialized,
    SparkParquetIOManager,
    SparkTable,
    StagedParquet,
    current_version,
    materialized_path,
    new_version,
    publish_version,
    staged_partition_dir,
)
from resources.model_io_manager import ModelNotTrained, TrainedModel, model_path, new_model_staging
from resources.spark import SparkResource
from resources.storage import StorageResource

_OWNERS = ["team:lhc-physics-ml"]
CLASS_NAMES = list(LABEL_NAMES)
SIGNAL = CLASS_NAMES.index("ttbar")
_READ_BATCH = 1024  # events per reader batch; bucketing regroups them into training batches
MIN_AUC = 0.8
INCLUSIVE_AUC_TOLERANCE = 0.005


def png_markdown(png: bytes, alt: str) -> MetadataValue:
    """A PNG shown inline in the Dagster UI (markdown metadata with a data URI)."""
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def _dataset_path(storage: StorageResource, asset_name: str):
    path = materialized_path(storage, asset_name)
    if path is None:
        raise Failure(description=f"{asset_name} has not been materialized: run training_data_job first")
    return path


# ---- hyperparameter search ------------------------------------------------------------------------------


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


@asset(
    group_name="models",
    kinds={"spark", "tensorflow", "json"},
    owners=_OWNERS,
    tags={"stage": "models"},
    deps=["hlf_train_set"],
    io_manager_key="json_io_manager",
    description=(
        "Grid search of the HLF classifier (batch size x epochs x hidden units, DESIGN section 6), k-fold "
        "cross-validated on a stratified sample of hlf_train_set; the trials run in parallel as Spark tasks. "
        "Holds every trial's scores and the best parameters."
    ),
)
def hlf_hyperparameter_search(
    context: AssetExecutionContext, config: HyperparameterSearchConfig, spark: SparkResource, storage: StorageResource
) -> dict:
    from lhc_assets.ml.hyperparameters import best_trial, grid, run_trial_unit, sample_indices, save_sample
    from lhc_assets.ml.readers import load_arrays
    from lhc_assets.spark.tasks import run_tasks

    trials = grid(config.batch_sizes, config.epochs, config.hidden_units)
    x, y = load_arrays(_dataset_path(storage, "hlf_train_set"), "hlf")
    rows = sample_indices(y, config.sample_fraction, config.seed)
    if len(rows) < config.folds * 3:
        raise Failure(description=(
            f"a {config.sample_fraction:.1%} sample of hlf_train_set has {len(rows)} events, too few for "
            f"{config.folds}-fold cross-validation: raise sample_fraction"))
    # The sample goes to storage every executor sees; each Python worker reads it once.
    staging = new_model_staging(storage, "hlf_hyperparameter_search")
    try:
        sample = staging / "sample.npz"
        save_sample(sample, x[rows], y[rows])
        tasks = config.parallelism or len(trials)
        units = [([t for k, t in enumerate(trials) if k % tasks == i], str(sample), config.folds, config.seed)
                 for i in range(min(tasks, len(trials)))]
        start = time.perf_counter()
        results = [r for chunk in run_tasks(spark.get_session(), run_trial_unit, units,
                                            description=f"hlf_hyperparameter_search: {len(trials)} trials")
                   for r in chunk]
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    best = best_trial(results)
    ranked = sorted(results, key=lambda r: -r["mean_val_accuracy"])
    table = ["| trial | batch | epochs | hidden | val accuracy | ± | val loss | s |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    table += [f"| {r['trial']} | {r['batch_size']} | {r['epochs']} | {r['hidden']} | {r['mean_val_accuracy']:.4f} | "
              f"{r['std_val_accuracy']:.4f} | {r['mean_val_loss']:.4f} | {r['seconds']:.1f} |" for r in ranked]
    context.add_output_metadata({
        "trials": MetadataValue.md("\n".join(table)),
        "best_parameters": MetadataValue.json({k: best[k] for k in ("batch_size", "epochs", "hidden")}),
        "best_mean_val_accuracy": best["mean_val_accuracy"],
        "trial_count": len(results),
        "sample_events": len(rows),
        "folds": config.folds,
        "spark_tasks": len(units),
        "seconds": round(seconds, 1),
    })
    return {"best": best, "trials": ranked, "sample_events": len(rows), "sample_fraction": config.sample_fraction,
            "folds": config.folds, "seed": config.seed}


# ---- Keras classifiers ----------------------------------------------------------------------------------


class _TrainingConfig(Config):
    batch_size: int = Field(default=128, gt=0, description="Training batch size.")
    learning_rate: float = Field(default=1e-3, gt=0.0, description="Adam learning rate.")
    seed: int = Field(default=42, description="Seed of the weights, the dropout and the row-group order.")
    distribution: Literal["none", "multi_worker"] = Field(
        default="none", description="'multi_worker': tf.distribute.MultiWorkerMirroredStrategy over `workers` "
        "local processes, each reading its shard of the training set.")
    workers: int = Field(default=2, ge=2, description="Worker processes for distribution='multi_worker'.")
    reader_workers: int = Field(default=1, ge=1, description=(
        "Petastorm reader threads. One keeps the row-group order, and so the training, reproducible; more read "
        "faster but in a nondeterministic order."))


class HlfTrainingConfig(_TrainingConfig):
    epochs: int = Field(default=5, gt=0, description="Training epochs (DESIGN: 5).")
    hidden: list[int] = Field(default=[50, 20, 10], description="Hidden layer sizes (DESIGN: 50, 20, 10).")


class SequenceTrainingConfig(_TrainingConfig):
    epochs: int = Field(default=6, gt=0, description="Training epochs (DESIGN: 6 for the inclusive classifier).")
    sequence_steps: int | None = Field(default=None, ge=1, le=LLF_ROWS, description=(
        "Rows of each particle list the GRU reads: unset (or 801) reads whole lists (DESIGN.md; bucketed by "
        "length, see bucket_width); fewer reads only the particles nearest the lepton (the end of the list), a "
        "different input: 128 trains the inclusive classifier 3.7x faster at the same test AUC on the generated "
        "data, but costs the particle-sequence classifier accuracy (docs/performance.md)."))
    bucket_width: int = Field(
        default=100, ge=0, description="With whole lists: group events by particle count into buckets of "
        "this many steps and run the GRU only over each batch's bucket (0: always all 801 steps; same model, slower).")
    jit_compile: bool = Field(default=True, description=(
        "Compile the training step with XLA: 1.3-1.6x faster on CPU; each batch shape compiles once, a few "
        "seconds each."))


def _train_keras(context: AssetExecutionContext, name: str, config: _TrainingConfig, storage: StorageResource,
                 builder_kwargs: dict[str, Any]) -> TrainedModel:
    import keras

    from lhc_assets.ml.evaluation import plot_training_curves
    from lhc_assets.ml.readers import arrow_dataset, dataset_rows, petastorm_dataset
    from lhc_assets.ml.training import fit, training_batches

    spec = keras_model(name)
    inputs = spec.inputs
    train_path, test_path = _dataset_path(storage, spec.train_set), _dataset_path(storage, spec.test_set)
    rows = dataset_rows(train_path)
    sequence = config if isinstance(config, SequenceTrainingConfig) else None
    bucket_width = sequence.bucket_width if sequence else 0
    steps = normalize_sequence_steps(sequence.sequence_steps) if sequence else None
    kwargs = {**builder_kwargs, "learning_rate": config.learning_rate, "seed": config.seed,
              **({"sequence_steps": steps} if spec.reads_particles else {})}
    start = time.perf_counter()
    if config.distribution == "multi_worker":
        from lhc_assets.ml.distributed import train_multi_worker

        staging = new_model_staging(storage, name)
        try:
            report = train_multi_worker(
                str(train_path), inputs, name, workers=config.workers, epochs=config.epochs,
                batch_size=config.batch_size, seed=config.seed, output_dir=str(staging), model_kwargs=kwargs)
            model = keras.saving.load_model(report["model_path"], safe_mode=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        history = report["history"]
        samples_per_s = sum(w["samples"] for w in report["workers"]) / max(time.perf_counter() - start, 1e-9)
        extra = {"workers": config.workers, "worker_samples": MetadataValue.json(
            {str(w["index"]): w["samples"] for w in report["workers"]})}
    else:
        keras.utils.set_random_seed(config.seed)
        model = spec.build(**kwargs)
        with petastorm_dataset(train_path, inputs, batch_size=_READ_BATCH, num_epochs=None, seed=config.seed,
                               workers_count=config.reader_workers) as train, \
                arrow_dataset(test_path, inputs, batch_size=_READ_BATCH, shuffle_row_groups=False) as test:
            result = fit(model, training_batches(train, config.batch_size, bucket_width, steps), rows,
                         config.batch_size, config.epochs,
                         validation=training_batches(test, config.batch_size, bucket_width, steps))
        history, samples_per_s = result.history, result.samples_per_s
        extra = {"steps_per_epoch": result.steps_per_epoch}
    seconds = time.perf_counter() - start
    png = plot_training_curves(history, name)
    final = {k: round(float(v[-1]), 4) for k, v in history.items() if v}
    context.log.info(f"{name}: {config.epochs} epochs on {rows} events in {seconds:.0f} s, final {final}")
    return TrainedModel(model, history, metadata={
        "parameters": model.count_params(),
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "train_events": rows,
        "training_seconds": round(seconds, 1),
        "samples_per_s": round(samples_per_s, 1),
        **{f"final_{k}": v for k, v in final.items()},
        "training_curves": png_markdown(png, f"{name} training curves"),
        "distribution": config.distribution,
        **({"sequence_steps": steps or LLF_ROWS, "bucket_width": bucket_width} if spec.reads_particles else {}),
        **extra,
    })


_MODEL_ASSET = dict(group_name="models", kinds={"tensorflow", "keras"}, owners=_OWNERS, tags={"stage": "models"},
                    io_manager_key="model_io_manager")


@asset(**_MODEL_ASSET, deps=["hlf_train_set", "hlf_test_set"], description=(
    "Dense 14 -> 50 -> 20 -> 10 -> 3 classifier on the scaled HLF (2,013 parameters), trained from the Petastorm "
    "reader of hlf_train_set with hlf_test_set as validation; native .keras file and training history."))
def hlf_classifier(context: AssetExecutionContext, config: HlfTrainingConfig, storage: StorageResource) -> TrainedModel:
    return _train_keras(context, "hlf_classifier", config, storage, {"hidden": tuple(config.hidden)})


@asset(**_MODEL_ASSET, deps=["train_set", "test_set"], description=(
    "Masking -> GRU(50) -> Dropout -> 3 softmax over the particle lists (up to 801 x 19; or the sequence_steps "
    "particles nearest the lepton), trained from the Petastorm reader of train_set; native .keras file and "
    "training history."))
def particle_sequence_classifier(
    context: AssetExecutionContext, config: SequenceTrainingConfig, storage: StorageResource
) -> TrainedModel:
    return _train_keras(context, "particle_sequence_classifier", config, storage, {"jit_compile": config.jit_compile})


@asset(**_MODEL_ASSET, deps=["train_set", "test_set"], description=(
    "GRU branch over the particle lists concatenated with the HLF -> Dense 25 -> 3 softmax (12,353 parameters), "
    "trained from the Petastorm reader of train_set; native .keras file and training history."))
def inclusive_classifier(
    context: AssetExecutionContext, config: SequenceTrainingConfig, storage: StorageResource
) -> TrainedModel:
    return _train_keras(context, "inclusive_classifier", config, storage, {"jit_compile": config.jit_compile})


# ---- Spark ML baseline ----------------------------------------------------------------------------------


class RandomForestConfig(Config):
    num_trees: int = Field(default=100, gt=0, description="Trees (DESIGN: 100).")
    max_depth: int = Field(default=10, gt=0, description="Maximum depth (DESIGN: 10).")
    seed: int = Field(default=42, description="Seed of the bootstrap and feature subsets.")


@asset(
    group_name="models",
    kinds={"spark", "sparkml"},
    owners=_OWNERS,
    tags={"stage": "models"},
    description=("Spark ML random forest (100 trees, depth 10) on the 14 unscaled HLF of the train split of "
                 "undersampled_dataset, saved with Spark ML persistence under <data root>/models."),
)
def random_forest_baseline(
    context: AssetExecutionContext, config: RandomForestConfig, storage: StorageResource, undersampled_dataset
) -> MaterializeResult:
    from pyspark.sql import functions as F

    from lhc_assets.spark.baseline import feature_importances, train_random_forest

    train = undersampled_dataset.where(F.col("split") == "train")
    start = time.perf_counter()
    model = train_random_forest(train, config.num_trees, config.max_depth, config.seed)
    seconds = time.perf_counter() - start
    staging = new_model_staging(storage, RANDOM_FOREST)
    try:
        model.write().save(str(staging / "model"))
        published = publish_version(staging, storage.models / RANDOM_FOREST, new_version(context.run.run_id))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    importances = sorted(feature_importances(model).items(), key=lambda kv: -kv[1])
    table = ["| HLF | importance |", "|---|---:|"] + [f"| {k} | {v:.4f} |" for k, v in importances]
    return MaterializeResult(metadata={
        "path": str(published / "model"),
        "num_trees": config.num_trees,
        "max_depth": config.max_depth,
        "training_seconds": round(seconds, 1),
        "feature_importances": MetadataValue.md("\n".join(table)),
    })


def forest_path(storage: StorageResource):
    version = current_version(storage.models / RANDOM_FOREST)
    if version is None:
        raise Failure(description=f"{RANDOM_FOREST} has not been trained: materialize it first")
    return version / "model"


# ---- inference and evaluation ---------------------------------------------------------------------------


class EventScoresConfig(Config):
    efficiencies: list[float] = Field(default=[0.99, 0.95, 0.90],
                                      description="ttbar efficiencies of the trigger-style summary.")


@asset(
    group_name="evaluation",
    kinds={"spark", "tensorflow", "parquet"},
    owners=_OWNERS,
    tags={"stage": "evaluation"},
    deps=list(KERAS_MODELS),
    io_manager_key="warehouse_io_manager",
    description=("Class probabilities of every Keras classifier for each test_set event, computed inside Spark "
                 "(one mapInArrow pass; each Python worker loads each model once), with a trigger-style summary: "
                 "background rejection of QCD and W+jets at fixed ttbar efficiencies."),
)
def event_scores(
    context: AssetExecutionContext, config: EventScoresConfig, storage: StorageResource, test_set
) -> SparkTable:
    from lhc_assets.spark.inference import score_events

    models = {name: str(model_path(storage, name)) for name in KERAS_MODELS}
    scored = score_events(test_set, models)

    def summary() -> dict[str, Any]:
        from lhc_assets.spark.inference import trigger_summary

        written = scored.sparkSession.read.parquet(str(materialized_path(storage, "event_scores")))
        rows = trigger_summary(written, list(KERAS_MODELS), SIGNAL, config.efficiencies)
        backgrounds = [c for c in CLASS_NAMES if c != CLASS_NAMES[SIGNAL]]
        lines = ["| model | ttbar efficiency | " + " | ".join(f"{b} efficiency | {b} rejection" for b in backgrounds)
                 + " |", "|---|---:|" + "---:|---:|" * len(backgrounds)]
        for r in rows:
            cells = [f"{_fmt(r['background'][b]['efficiency'])} | {_fmt(r['background'][b]['rejection'])}"
                     for b in backgrounds]
            lines.append(f"| {r['model']} | {r['signal_efficiency']:.3f} | " + " | ".join(cells) + " |")
        return {"trigger_summary": MetadataValue.md("\n".join(lines)), "trigger": MetadataValue.json(rows),
                "models": MetadataValue.json(models)}

    return SparkTable(scored, after_write=summary)


@asset(
    partitions_def=delphes_files,
    group_name="evaluation",
    kinds={"spark", "tensorflow", "parquet"},
    owners=_OWNERS,
    tags={"stage": "evaluation"},
    deps=["hlf_features", "llf_features", *KERAS_MODELS],
    io_manager_key="warehouse_io_manager",
    description=("Class probabilities of every Keras classifier for each selected event of an input file (any "
                 "partition of hlf_features/llf_features, not only the test split), the inputs scaled with "
                 "feature_scalers; one Spark task per file, each Python worker loading each model once."),
)
def file_event_scores(
    context: AssetExecutionContext, spark: SparkResource, storage: StorageResource,
    warehouse_io_manager: ResourceParam[SparkParquetIOManager], feature_scalers: dict,
) -> StagedParquet:
    from lhc_assets.ml.scoring import FileScoreTask, score_file, scores_schema
    from lhc_assets.spark.tasks import run_tasks

    io = warehouse_io_manager
    try:
        models = tuple((name, str(model_path(storage, name))) for name in KERAS_MODELS)
    except ModelNotTrained as exc:
        raise Failure(description=str(exc)) from None
    keys = sorted(context.partition_keys)
    staging = io.new_staging_dir("file_event_scores")
    tasks, missing = [], []
    for key in keys:
        try:
            hlf, llf = io.partition_files("hlf_features", key), io.partition_files("llf_features", key)
        except PartitionNotMaterialized as exc:
            missing.append(f"{key}: {exc}")
            continue
        tasks.append(FileScoreTask(key, tuple(map(str, hlf)), tuple(map(str, llf)), models, feature_scalers,
                                   str(staged_partition_dir(staging, key) / "part-00000.parquet")))
    if missing:
        shutil.rmtree(staging, ignore_errors=True)
        raise Failure(description="feature tables missing; materialize the ingestion first:\n" + "\n".join(missing))
    try:
        results = run_tasks(spark.get_session(), score_file, tasks, description=f"scores of {len(keys)} file(s)")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    rows = {r["partition_key"]: r["rows"] for r in results}
    context.log.info(f"scored {sum(rows.values())} events of {len(rows)} file(s) with {', '.join(KERAS_MODELS)}")
    return StagedParquet(staging, scores_schema(list(KERAS_MODELS)),
                         metadata={"events_scored": sum(rows.values()), "models": MetadataValue.json(dict(models))})


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _report_dir(storage: StorageResource):
    return current_version(storage.reports / "model_evaluation")


@asset(
    group_name="evaluation",
    kinds={"spark", "json", "png"},
    owners=_OWNERS,
    tags={"stage": "evaluation"},
    deps=[RANDOM_FOREST],
    io_manager_key="report_io_manager",
    description=("Every model on the test split: one-vs-rest ROC AUC per class, accuracy, row-normalised confusion "
                 "matrix, ROC curves per class comparing the models (PNG) and a JSON report under "
                 "<data root>/reports/model_evaluation."),
)
def model_evaluation(
    context: AssetExecutionContext, storage: StorageResource, event_scores, undersampled_dataset
) -> Output[dict]:
    import numpy as np
    from pyspark.ml import PipelineModel
    from pyspark.sql import functions as F

    from lhc_assets.ml.evaluation import (
        evaluate_model,
        plot_confusion_matrix,
        plot_roc_comparison,
        roc_curve,
    )
    from lhc_assets.spark.baseline import forest_probabilities

    predictions: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    scores = event_scores.select("label", *KERAS_MODELS).toArrow()
    labels = scores.column("label").to_numpy()
    for name in KERAS_MODELS:
        probabilities = np.asarray(scores.column(name).combine_chunks().flatten().to_numpy()).reshape(-1, 3)
        predictions[name] = (labels, probabilities)
    forest = PipelineModel.load(str(forest_path(storage)))
    test = undersampled_dataset.where(F.col("split") == "test")
    forest_scores = forest_probabilities(forest, test).toArrow()
    predictions[RANDOM_FOREST] = (forest_scores.column("label").to_numpy(),
                             forest_scores.column("probability").combine_chunks().flatten().to_numpy().reshape(-1, 3))

    report: dict[str, Any] = {"classes": CLASS_NAMES, "models": {}}
    for name, (y, p) in predictions.items():
        onehot = np.eye(len(CLASS_NAMES), dtype=np.float32)[y]
        report["models"][name] = evaluate_model(onehot, p.astype(np.float32), CLASS_NAMES, signal=SIGNAL)
    figures: dict[str, bytes] = {}
    for c, class_name in enumerate(CLASS_NAMES):
        curves = {}
        for name, (y, p) in predictions.items():
            fpr, tpr, _ = roc_curve(y == c, p[:, c])
            curves[name] = (fpr, tpr)
        aucs = {name: report["models"][name]["auc"][class_name] for name in predictions}
        figures[f"roc_{class_name}.png"] = plot_roc_comparison(curves, aucs, class_name)
    for name in predictions:
        matrix = np.asarray(report["models"][name]["confusion_matrix"])
        figures[f"confusion_{name}.png"] = plot_confusion_matrix(matrix, CLASS_NAMES, name)

    staging = storage.reports / "model_evaluation" / f".staging-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        (staging / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        for file, png in figures.items():
            (staging / file).write_bytes(png)
        published = publish_version(staging, storage.reports / "model_evaluation", new_version(context.run.run_id))
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    header = "| model | " + " | ".join(f"AUC {c}" for c in CLASS_NAMES) + " | accuracy |"
    lines = [header, "|---|" + "---:|" * (len(CLASS_NAMES) + 1)]
    for name, r in report["models"].items():
        aucs = " | ".join(f"{r['auc'][c]:.4f}" for c in CLASS_NAMES)
        lines.append(f"| {name} | {aucs} | {r['accuracy']:.4f} |")
    context.log.info("model comparison on the test split:\n" + "\n".join(lines))
    return Output(report, metadata={
        "comparison": MetadataValue.md("\n".join(lines)),
        "test_events": len(labels),
        "report": MetadataValue.path(str(published / "report.json")),
        **{f"roc_{c}": png_markdown(figures[f"roc_{c}.png"], f"ROC {c}") for c in CLASS_NAMES},
    })


def _load_report(storage: StorageResource) -> dict | None:
    directory = _report_dir(storage)
    return None if directory is None else json.loads((directory / "report.json").read_text())


@asset_check(asset=model_evaluation, description=f"Every model reaches a one-vs-rest ROC AUC above {MIN_AUC} on "
             "every class of the test split (chance is 0.5).")
def models_beat_chance(storage: StorageResource) -> AssetCheckResult:
    report = _load_report(storage)
    if report is None:
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR, metadata={"error": "no report"})
    failing = {f"{m}/{c}": auc for m, r in report["models"].items() for c, auc in r["auc"].items()
               if auc is None or auc <= MIN_AUC}
    worst = min((auc for r in report["models"].values() for auc in r["auc"].values() if auc is not None), default=0.0)
    return AssetCheckResult(passed=not failing, metadata={"below_threshold": MetadataValue.json(failing),
                                                          "lowest_auc": float(worst), "threshold": MIN_AUC})


@asset_check(asset=model_evaluation, description=(
    "The inclusive classifier is not worse than the HLF classifier: its one-vs-rest ROC AUC averaged over the "
    f"classes is at least the HLF classifier's minus {INCLUSIVE_AUC_TOLERANCE} (per-class AUCs on a test split "
    "of a few thousand events move by about that much between trainings)."))
def inclusive_not_worse_than_hlf(storage: StorageResource) -> AssetCheckResult:
    report = _load_report(storage)
    if report is None:
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR, metadata={"error": "no report"})
    inclusive, hlf = report["models"]["inclusive_classifier"]["auc"], report["models"]["hlf_classifier"]["auc"]
    mean_inclusive = sum(inclusive.values()) / len(inclusive)
    mean_hlf = sum(hlf.values()) / len(hlf)
    return AssetCheckResult(passed=mean_inclusive >= mean_hlf - INCLUSIVE_AUC_TOLERANCE, metadata={
        "mean_auc_inclusive": round(mean_inclusive, 5), "mean_auc_hlf": round(mean_hlf, 5),
        "auc_inclusive_minus_hlf": MetadataValue.json({c: round(inclusive[c] - hlf[c], 5) for c in CLASS_NAMES}),
    })


_whole_sample_assets = [hlf_hyperparameter_search, hlf_classifier, particle_sequence_classifier,
                        inclusive_classifier, random_forest_baseline, event_scores, model_evaluation]
model_assets = [*_whole_sample_assets, file_event_scores]
model_checks = [models_beat_chance, inclusive_not_worse_than_hlf]

models_job = define_asset_job(
    "models_job",
    selection=AssetSelection.assets(*_whole_sample_assets),
    description="Stages 3-4: hyperparameter search, the Keras classifiers, the random forest, scores, evaluation.",
)
# Per input file, so a job of its own (partitioned by file like the ingestion).
file_scores_job = define_asset_job(
    "file_scores_job", selection=AssetSelection.assets(file_event_scores), partitions_def=delphes_files,
    description="Scores of the trained Keras classifiers for every selected event of the chosen input files.",
)
model_jobs = [models_job, file_scores_job]
