"""Score events with trained Keras models inside Spark: one ``mapInArrow`` pass, models loaded once per worker.

The input is a DataFrame with the training-set columns (``label`` one-hot, ``hlf_input`` and, for the
sequence models, ``gru_input``) plus the event identity; the output has the identity, the true class
index and one ``array<float>`` of class probabilities per model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame

from lhc_assets.ml.contract import GRU_INPUT, GRU_WIDTH, HLF_INPUT, LABEL, N_CLASSES, N_HLF

IDENTITY = ("sample", "file", "entry")


def _matrix(column: pa.Array, width: int) -> np.ndarray:
    """A list<float> column as a (rows, width) float32 view of its flat values."""
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(column), width)


def score_events(df: DataFrame, models: Mapping[str, str]) -> DataFrame:
    """Per-event class probabilities of every model in ``models`` (name -> ``.keras`` path on shared storage)."""
    names = list(models)
    paths = dict(models)
    wants_particles = GRU_INPUT in df.columns
    columns = [*IDENTITY, LABEL, HLF_INPUT, *([GRU_INPUT] if wants_particles else [])]
    schema = ", ".join(["sample string", "file string", "entry long", "label int",
                        *(f"`{name}` array<float>" for name in names)])

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from lhc_assets.ml.inference import load_model, predict_arrays

        loaded = {name: load_model(path) for name, path in paths.items()}
        for batch in batches:
            hlf = _matrix(batch.column(HLF_INPUT), N_HLF)
            gru = _matrix(batch.column(GRU_INPUT), GRU_WIDTH) if wants_particles else None
            labels = np.argmax(_matrix(batch.column(LABEL), N_CLASSES), axis=1).astype(np.int32)
            arrays = [batch.column(c) for c in IDENTITY] + [pa.array(labels)]
            for name in names:
                probabilities = predict_arrays(loaded[name], hlf, gru)
                arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(probabilities.ravel()), N_CLASSES).cast(
                    pa.list_(pa.float32())))
            yield pa.RecordBatch.from_arrays(arrays, names=[*IDENTITY, "label", *names])

    return df.select(*columns).mapInArrow(score, schema)


def trigger_summary(scores: DataFrame, models: list[str], signal: int, efficiencies: list[float]) -> list[dict]:
    """For each model and target signal efficiency: the cut on the signal probability and the background efficiency
    and rejection (1 / efficiency) of every other class, computed with Spark aggregates (nothing is collected but
    the counts). The cut is the (1 - efficiency) quantile of the signal events' scores (relative error 1e-4).
    """
    from pyspark.sql import functions as F

    from lhc_assets.physics.schema import LABEL_NAMES

    totals = {r["label"]: r["count"] for r in scores.groupBy("label").count().collect()}
    if not totals.get(signal):
        raise ValueError(f"no {LABEL_NAMES[signal]} (signal) events among the scores: no cut keeps a fraction of them")
    signal_scores = scores.where(F.col("label") == signal)
    rows = []
    for name in models:
        column = F.col(f"`{name}`")[signal]
        cuts = signal_scores.select(column.alias("s")).approxQuantile("s", [1.0 - e for e in efficiencies], 1e-4)
        for efficiency, cut in zip(efficiencies, cuts, strict=True):
            passed = {r["label"]: r["count"] for r in scores.where(column >= cut).groupBy("label").count().collect()}
            background = {}
            for label, class_name in enumerate(LABEL_NAMES):
                if label != signal:  # a class without events is listed, with no efficiency to report
                    eff = passed.get(label, 0) / totals[label] if totals.get(label) else None
                    background[class_name] = {"efficiency": eff, "rejection": 1.0 / eff if eff else None}
            rows.append({"model": name, "signal_efficiency_target": efficiency, "cut": float(cut),
                         "signal_efficiency": passed.get(signal, 0) / totals[signal],
                         "background": background})
    return rows


def collect_probabilities(scores: DataFrame, models: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """model -> (true class, class probabilities) of every event of an ``event_scores`` table."""
    table = scores.select("label", *models).toArrow()
    labels = table.column("label").to_numpy()
    return {name: (labels, _matrix(table.column(name).combine_chunks(), N_CLASSES)) for name in models}
