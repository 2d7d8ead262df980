"""A snapshot of the Dagster definitions: an accidental change to the graph shows in review.

The snapshot (``tests/data/definitions_snapshot.json``) lists every asset (group, upstream assets,
partitions, checks, whether automation is attached), every job (its ops and partitions) and every sensor.
After an intended change, regenerate it and review the diff:

    LHC_UPDATE_SNAPSHOT=1 .venv/bin/python -m pytest tests/test_definitions_snapshot.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).parent / "data" / "definitions_snapshot.json"


def describe_definitions() -> dict[str, Any]:
    """The project's definitions as plain JSON-able data (sorted, so the file diffs cleanly)."""
    from lhc_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        partitions = node.partitions_def
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "upstream": sorted(k.to_user_string() for k in node.parent_keys),
            "partitions": None if partitions is None else f"{type(partitions).__name__}:{partitions.name}",
            "checks": sorted(c.name for c in node.check_keys),
            "automation": node.automation_condition is not None,
            "kinds": sorted(node.kinds),
        }
    repository = defs.get_repository_def()
    jobs = {
        job.name: {"ops": sorted(job.graph.node_names()),
                   "partitions": job.partitions_def.name if job.partitions_def else None}
        for job in sorted(repository.get_all_jobs(), key=lambda j: j.name) if not job.name.startswith("__")
    }
    sensors = {
        sensor.name: {"type": sensor.sensor_type.value,
                      "jobs": sorted(t.job_name for t in sensor.targets if t.job_name),
                      "minimum_interval_seconds": sensor.minimum_interval_seconds,
                      "default_status": sensor.default_status.value}
        for sensor in sorted(repository.sensor_defs, key=lambda s: s.name)
    }
    schedules = sorted(s.name for s in repository.schedule_defs)
    return {"assets": assets, "jobs": jobs, "sensors": sensors, "schedules": schedules}


def test_the_definitions_match_the_reviewed_snapshot():
    current = describe_definitions()
    if os.environ.get("LHC_UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    stored = json.loads(SNAPSHOT.read_text())
    changed = sorted(f"{part}: {name}" for part in ("assets", "jobs", "sensors")
                     for name in set(current[part]) | set(stored[part])
                     if current[part].get(name) != stored[part].get(name))
    assert not changed and current["schedules"] == stored["schedules"], (
        f"the definitions differ from {SNAPSHOT.name} in {changed or ['schedules']}; if intended, regenerate with "
        "LHC_UPDATE_SNAPSHOT=1 and review the diff")


def test_every_registered_keras_model_is_an_asset_reading_its_registered_datasets():
    from lhc_assets.ml.contract import KERAS_MODELS

    assets = describe_definitions()["assets"]
    for name, spec in KERAS_MODELS.items():
        assert assets[name]["group"] == "models"
        assert {spec.train_set, spec.test_set} <= set(assets[name]["upstream"]), name
        assert name in assets["event_scores"]["upstream"] and name in assets["file_event_scores"]["upstream"]
