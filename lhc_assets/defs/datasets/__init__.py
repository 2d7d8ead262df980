"""Stage 2b: the balanced selection, the scalers and the Petastorm training datasets, with their checks."""

from lhc_assets.defs.datasets.assets import dataset_assets, dataset_jobs
from lhc_assets.defs.datasets.checks import dataset_asset_checks

__all__ = ["dataset_asset_checks", "dataset_assets", "dataset_jobs"]
