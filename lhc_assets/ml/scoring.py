"""Scores of the trained Keras models for the selected events of one input file's feature tables.

The model inputs are built exactly as the training data builds them (``lhc_assets.ml.preparation``: HLF
min-max scaled with the train ranges, the GRU input sorted by dR to the lepton and standardised with the
train mean/std), in chunks, so any partition of ``hlf_features``/``llf_features`` can be scored, not only
the test split. Pure pyarrow/numpy/Keras: no Dagster, no Spark (``lhc_assets.spark.tasks`` runs it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lhc_assets.ml.dataset_writer import FLOAT_LIST, float_lists
from lhc_assets.ml.preparation import FeatureScalers, gru_input, scale_hlf
from lhc_assets.physics.llf_format import llf_rows
from lhc_assets.physics.schema import HLF_COLUMNS

IDENTITY = ("sample", "file", "entry", "label")
CHUNK = 2048  # events per forward pass: bounds the padded GRU inputs to about 125 MB


def scores_schema(models: list[str]) -> pa.Schema:
    """Identity, true class index and one float[3] of class probabilities per model."""
    return pa.schema([pa.field("sample", pa.string()), pa.field("file", pa.string()), pa.field("entry", pa.int64()),
                      pa.field("label", pa.int32()), *(pa.field(m, FLOAT_LIST) for m in models)])


@dataclass(frozen=True)
class FileScoreTask:
    partition_key: str
    hlf_files: tuple[str, ...]
    llf_files: tuple[str, ...]
    models: tuple[tuple[str, str], ...]  # (model name, .keras path)
    scalers: dict
    out_file: str


def _read(files: tuple[str, ...], columns: list[str]) -> pa.Table | None:
    tables = [pq.read_table(f, columns=columns) for f in files]
    return pa.concat_tables(tables) if tables else None


def feature_chunks(hlf: pa.Table, llf: pa.Table | None, scalers: FeatureScalers, source: str,
                   chunk: int = CHUNK) -> Iterator[tuple[slice, np.ndarray, np.ndarray | None]]:
    """(rows of ``hlf``, scaled HLF inputs, GRU inputs or None) chunk by chunk, the particle lists matched by entry."""
    if llf is not None:
        entries, llf_entries = hlf["entry"].to_numpy(), llf["entry"].to_numpy()
        order = np.argsort(llf_entries, kind="stable")
        pos = np.minimum(np.searchsorted(llf_entries[order], entries), max(len(order) - 1, 0))
        if len(llf) != len(hlf) or (len(order) and not np.array_equal(llf_entries[order][pos], entries)):
            raise ValueError(f"{source}: hlf_features and llf_features hold different events ({len(hlf)} and "
                             f"{len(llf)} rows); re-materialize both for this partition")
        match = order[pos] if len(order) else np.zeros(0, np.int64)
    hlf_raw = np.column_stack([hlf[c].to_numpy() for c in HLF_COLUMNS]).astype(np.float32) if len(hlf) else (
        np.zeros((0, len(HLF_COLUMNS)), np.float32))
    for start in range(0, len(hlf), chunk):
        rows = slice(start, min(start + chunk, len(hlf)))
        hlf_in = scale_hlf(hlf_raw[rows], scalers.hlf_min, scalers.hlf_max)
        gru = None
        if llf is not None:
            offsets, particles = llf_rows(llf["llf"].take(pa.array(match[rows])))
            gru = gru_input(offsets, particles, scalers)
        yield rows, hlf_in, gru


def score_file(task: FileScoreTask) -> dict:
    """Score one partition's feature files with every model; writes ``task.out_file`` atomically."""
    from lhc_assets.ml.inference import load_model, predict_arrays

    scalers = FeatureScalers.from_dict(task.scalers)
    models = {name: load_model(path) for name, path in task.models}
    wants_particles = any(any(t.name == "gru_input" for t in m.inputs) for m in models.values())
    hlf = _read(task.hlf_files, [*IDENTITY, *HLF_COLUMNS])
    llf = _read(task.llf_files, ["entry", "llf"]) if wants_particles else None
    names = list(models)
    source = f"partition {task.partition_key!r}"
    if hlf is None:
        raise ValueError(f"{source}: no hlf_features files")
    if wants_particles and llf is None:
        raise ValueError(f"{source}: no llf_features files, which the particle models need")
    probabilities = {name: np.zeros((len(hlf), 3), np.float32) for name in names}
    for rows, hlf_in, gru in feature_chunks(hlf, llf, scalers, source):
        for name, model in models.items():
            probabilities[name][rows] = predict_arrays(model, hlf_in, gru)
    table = pa.table([*(hlf[c] for c in IDENTITY), *(float_lists(probabilities[n]) for n in names)],
                     schema=scores_schema(names))
    out = Path(task.out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, out)
    return {"partition_key": task.partition_key, "rows": len(hlf)}
