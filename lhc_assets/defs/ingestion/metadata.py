"""Materialization metadata of the ingestion and the failure that names each bad partition."""

import json

from dagster import AssetExecutionContext, Failure, MetadataValue

from lhc_assets.operations.failures import FAILED_PARTITIONS_METADATA
from lhc_assets.physics.features import SELECTED
from lhc_assets.physics.schema import DROP_NO_LEPTON, DROP_NOT_ISOLATED


def fail_partitions(problems: dict[str, str], published: list[str] | None = None) -> None:
    """Fail the step naming every bad partition; ``failed_partitions`` ({key: problem}) is what the
    failure ledger and ``lhc backfill`` read (lhc_assets/operations/failures.py)."""
    metadata = {"bad_inputs": MetadataValue.md("\n".join(f"* {p}" for p in problems.values())),
                FAILED_PARTITIONS_METADATA: MetadataValue.json(problems)}
    description = "\n".join(problems.values())
    if published:
        metadata["published_partitions"] = MetadataValue.md("\n".join(f"* {k}" for k in published))
        description += (f"\n({len(published)} other partition(s) of this run were materialized; "
                        "re-run only the failed ones)")
    raise Failure(description=description, metadata=metadata)


def raw_metadata(files: list[dict], summary: dict) -> dict:
    metadata = {"events_read": sum(s["events_read"] for s in summary.values()), "files": len(files)}
    if len(files) == 1:
        metadata["input_file"] = files[0]["path"]
    return metadata | collections_metadata(files)


def collections_metadata(files: list[dict]) -> dict:
    """``collections_read`` (role -> the collection read; a table per partition when the files of the run
    differ) and ``collection_warnings`` when a role fell back to another well-known collection."""
    if not files:
        return {}
    read = {f["partition_key"]: f["collections"] for f in files}
    if len({json.dumps(m, sort_keys=True) for m in read.values()}) == 1:
        metadata = {"collections_read": MetadataValue.json(files[0]["collections"])}
    else:
        roles = list(files[0]["collections"])
        lines = [f"| partition | {' | '.join(roles)} |", "|---|" + "---|" * len(roles)]
        lines += [f"| {key} | {' | '.join(m[r] for r in roles)} |" for key, m in read.items()]
        metadata = {"collections_read": MetadataValue.md("\n".join(lines))}
    warnings = [f"* {f['partition_key']}: {w}" if len(files) > 1 else f"* {w}"
                for f in files for w in f["collection_warnings"]]
    if warnings:
        metadata["collection_warnings"] = MetadataValue.md("\n".join(warnings))
    return metadata


def _selected(s: dict) -> int:
    return s["reasons"].get(SELECTED, 0)


def selection_counts(summary: dict) -> dict:
    """Events read, selected and dropped (by reason) over the partitions of ``summary``."""
    read = sum(s["events_read"] for s in summary.values())
    n_selected = sum(_selected(s) for s in summary.values())
    return {
        "events_read": read,
        "events_selected": n_selected,
        **{f"dropped_{r}": sum(s["reasons"].get(r, 0) for s in summary.values())
           for r in (DROP_NO_LEPTON, DROP_NOT_ISOLATED)},
        "selection_efficiency": round(n_selected / read, 4) if read else 0.0,
    }


def partition_counts(table: str, files: list[dict], summary: dict, key: str) -> dict:
    """The counts of one partition of a run over several: recorded on that partition's materialization, where
    they replace the run's totals (Dagster copies an output's metadata to every partition it materializes)."""
    one = {key: summary.get(key, {"events_read": 0, "rows": {}, "reasons": {}})}
    if table != "raw_events":
        return selection_counts(one)
    paths = [f["path"] for f in files if f["partition_key"] == key and "path" in f]
    return {"events_read": one[key]["events_read"], **({"input_file": paths[0]} if paths else {})}


def selection_metadata(context: AssetExecutionContext, summary: dict) -> dict:
    selected = _selected
    for key, s in summary.items():
        if s["events_read"] and not selected(s):
            context.log.warning(f"{key}: none of its {s['events_read']} events passed the selection (0 rows written)")
    metadata = selection_counts(summary)
    if len(summary) > 1:
        lines = ["| partition | read | selected | efficiency |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {s['events_read']} | {selected(s)} | "
                  f"{(selected(s) / s['events_read'] if s['events_read'] else 0):.3f} |" for k, s in summary.items()]
        metadata["per_partition"] = MetadataValue.md("\n".join(lines))
    return metadata


def table_metadata(context: AssetExecutionContext, table: str, files: list[dict], summary: dict) -> dict:
    """The metadata of one ingestion output (the run's totals, the per-partition table); in a run over several
    partitions each partition's own counts go on its own materialization."""
    keys = sorted(context.partition_keys)
    if len(keys) > 1:
        for key in keys:
            context.add_asset_metadata(partition_counts(table, files, summary, key), asset_key=table, partition_key=key)
    return raw_metadata(files, summary) if table == "raw_events" else selection_metadata(context, summary)
