"""Declarative automation of the downstream assets: retrain on a schedule, and only when new data has arrived.

* ``undersampled_dataset``, the first asset after the feature tables, is requested on the first evaluation
  after each tick of a cron schedule (nightly at 03:00 UTC by default) if any feature partition was
  materialized since it was last requested. A tick without new data passes; files arriving during the day
  wait for the next tick, so 500 new files cost one retraining, never one per file.
* Every other asset of the datasets, models, evaluation and deployment groups follows its inputs within those
  groups (a retrained model is re-evaluated, exported to ONNX and emulated in fixed point) and is requested in
  the same evaluation, so the whole chain is one run. New feature partitions alone never
  request them, and neither do missing or failed feature partitions block them.

The conditions are evaluated by the ``retrain_on_new_data`` sensor, which is **stopped by default**: turn it on
in the UI (Automation) or with ``dagster sensor start retrain_on_new_data -w workspace.yaml``. Automated runs
use the assets' default config, i.e. DESIGN.md's full grid and epochs. Ingestion is not automated here: the
new-file sensor requests one run per arriving file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from dagster import (
    AssetsDefinition,
    AssetSelection,
    AssetSpec,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    map_asset_specs,
)

RETRAIN_CRON_ENV = "LHC_RETRAIN_CRON"
DEFAULT_RETRAIN_CRON = "0 3 * * *"
AUTOMATED_GROUPS = ("datasets", "models", "evaluation", "deployment")


def retrain_cron() -> str:
    return os.environ.get(RETRAIN_CRON_ENV, DEFAULT_RETRAIN_CRON)


# Upstream of the automated groups: their updates trigger only the nightly root, never the chain below it.
FEATURE_GROUPS = AssetSelection.groups("ingestion", "features")


def nightly_if_new_data(cron: str) -> AutomationCondition:
    """Requested once, right after a tick of ``cron``, if a dependency was updated since last handled."""
    return (
        AutomationCondition.cron_tick_passed(cron)
        & AutomationCondition.any_deps_updated().since_last_handled()
        & ~AutomationCondition.in_progress()
    ).with_label(f"after each '{cron}' tick (UTC), if new features arrived")


def after_inputs_rebuilt() -> AutomationCondition:
    """Like ``eager()``, but blind to the feature tables: follows only its inputs in the automated groups."""
    return (
        AutomationCondition.any_deps_updated().ignore(FEATURE_GROUPS).since_last_handled()
        & ~AutomationCondition.any_deps_missing().ignore(FEATURE_GROUPS)
        & ~AutomationCondition.any_deps_in_progress()
        & ~AutomationCondition.in_progress()
    ).with_label("when its training-data or model inputs are rebuilt")


def with_retrain_conditions(assets: Sequence[AssetsDefinition]) -> Sequence[AssetsDefinition]:
    """The assets with their automation conditions: the nightly root for assets of the automated groups whose
    dependencies all lie outside them, the follower condition for the rest."""
    # Per-file scoring is on demand: retraining must not rescore every input file.
    automated = {spec.key for a in assets for spec in a.specs
                 if spec.group_name in AUTOMATED_GROUPS and spec.partitions_def is None}
    cron = retrain_cron()

    def condition(spec: AssetSpec) -> AssetSpec:
        if spec.key not in automated:
            return spec
        follows = any(dep.asset_key in automated for dep in spec.deps)
        return spec.replace_attributes(
            automation_condition=after_inputs_rebuilt() if follows else nightly_if_new_data(cron))

    return map_asset_specs(condition, assets)


retrain_on_new_data = AutomationConditionSensorDefinition(
    "retrain_on_new_data",
    target=AssetSelection.groups(*AUTOMATED_GROUPS),
    default_status=DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=60,
    description=f"Rebuilds the training data, retrains and re-evaluates the models after each tick of "
                f"'{retrain_cron()}' (UTC, ${RETRAIN_CRON_ENV}) once new feature partitions have arrived. "
                "Off by default.",
)
