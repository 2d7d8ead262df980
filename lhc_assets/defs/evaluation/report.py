"""Stage 4b: every model compared on the test split, with the checks that guard the comparison."""


from dagster import AssetCheckResult, AssetExecutionContext, AssetIn, MetadataValue, asset, asset_check

from lhc_assets.defs.evaluation.scores import CLASS_NAMES, OWNERS, SIGNAL
from lhc_assets.defs.metadata import png_markdown
from lhc_assets.ml.contract import KERAS_MODELS, RANDOM_FOREST
from lhc_assets.spark.metering import StageMeter
from resources.json_io_manager import Report
from resources.references import ModelRef

MIN_AUC = 0.8
INCLUSIVE_AUC_TOLERANCE = 0.005


@asset(
    group_name="evaluation",
    kinds={"spark", "json", "png"},
    owners=OWNERS,
    tags={"stage": "evaluation"},
    ins={RANDOM_FOREST: AssetIn(dagster_type=ModelRef)},
    io_manager_key="report_io_manager",
    description=("Every model on the test split: one-vs-rest ROC AUC per class, accuracy, row-normalised confusion "
                 "matrix, ROC curves per class comparing the models (PNG) and a JSON report under "
                 "<data root>/reports/model_evaluation."),
)
def model_evaluation(context: AssetExecutionContext, event_scores, undersampled_dataset,
                     random_forest_baseline: ModelRef) -> Report:
    from pyspark.ml import PipelineModel

    from lhc_assets.ml.evaluation import compare_models, comparison_table
    from lhc_assets.spark.baseline import forest_test_predictions
    from lhc_assets.spark.inference import collect_probabilities

    meter = StageMeter(event_scores.sparkSession.sparkContext.defaultParallelism)
    predictions = collect_probabilities(event_scores, list(KERAS_MODELS))
    forest = PipelineModel.load(str(random_forest_baseline.path))
    predictions[RANDOM_FOREST] = forest_test_predictions(forest, undersampled_dataset)
    report, figures = compare_models(predictions, CLASS_NAMES, SIGNAL)
    table = comparison_table(report)
    context.log.info("model comparison on the test split:\n" + table)
    return Report(report, figures, metadata={
        "comparison": MetadataValue.md(table),
        "test_events": len(next(iter(predictions.values()))[0]),
        **meter.metadata(len(next(iter(predictions.values()))[0])),
        **{f"roc_{c}": png_markdown(figures[f"roc_{c}.png"], f"ROC {c}") for c in CLASS_NAMES},
    })


@asset_check(asset=model_evaluation, description=f"Every model reaches a one-vs-rest ROC AUC above {MIN_AUC} on "
             "every class of the test split (chance is 0.5).")
def models_beat_chance(model_evaluation: dict) -> AssetCheckResult:
    models = model_evaluation["models"]
    failing = {f"{m}/{c}": auc for m, r in models.items() for c, auc in r["auc"].items()
               if auc is None or auc <= MIN_AUC}
    worst = min((auc for r in models.values() for auc in r["auc"].values() if auc is not None), default=0.0)
    return AssetCheckResult(passed=not failing, metadata={"below_threshold": MetadataValue.json(failing),
                                                          "lowest_auc": float(worst), "threshold": MIN_AUC})


@asset_check(asset=model_evaluation, description=(
    "The inclusive classifier is not worse than the HLF classifier: its one-vs-rest ROC AUC averaged over the "
    f"classes is at least the HLF classifier's minus {INCLUSIVE_AUC_TOLERANCE} (per-class AUCs on a test split "
    "of a few thousand events move by about that much between trainings)."))
def inclusive_not_worse_than_hlf(model_evaluation: dict) -> AssetCheckResult:
    models = model_evaluation["models"]
    inclusive, hlf = models["inclusive_classifier"]["auc"], models["hlf_classifier"]["auc"]
    mean_inclusive = sum(inclusive.values()) / len(inclusive)
    mean_hlf = sum(hlf.values()) / len(hlf)
    return AssetCheckResult(passed=mean_inclusive >= mean_hlf - INCLUSIVE_AUC_TOLERANCE, metadata={
        "mean_auc_inclusive": round(mean_inclusive, 5), "mean_auc_hlf": round(mean_hlf, 5),
        "auc_inclusive_minus_hlf": MetadataValue.json({c: round(inclusive[c] - hlf[c], 5) for c in CLASS_NAMES}),
    })


model_checks = [models_beat_chance, inclusive_not_worse_than_hlf]
