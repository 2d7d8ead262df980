"""Stage 4: scores of the Keras classifiers inside Spark (test split and per input file) and the comparison of
every model, with its checks."""

from dagster import AssetSelection, define_asset_job

from lhc_assets.defs.evaluation.report import model_checks, model_evaluation
from lhc_assets.defs.evaluation.scores import event_scores, file_event_scores

evaluation_assets = [event_scores, model_evaluation, file_event_scores]

# Per input file, so a job of its own (partitioned by file like the ingestion).
file_scores_job = define_asset_job(
    "file_scores_job", selection=AssetSelection.assets(file_event_scores),
    description="Scores of the trained Keras classifiers for every selected event of the chosen input files.",
)
evaluation_jobs = [file_scores_job]

__all__ = ["evaluation_assets", "evaluation_jobs", "model_checks"]
