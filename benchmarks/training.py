"""Benchmark of the models: training throughput through the Petastorm reader and inference inside Spark.

Prints one JSON object. Runs in one process: generates Delphes files, materializes ingestion and the
training data (not timed), then

* HLF classifier (DESIGN.md section 6, batch 128) trained through the Petastorm reader: samples/s after
  the first epoch (tracing excluded), on 2 cores;
* inclusive classifier (XLA) trained through the Petastorm reader three times from the same seed on the
  same data: reading the last 128 rows of each particle list (``sequence_steps``, what ``make run`` uses),
  reading whole lists bucketed by length (the assets' default), and with every batch at all 801 steps;
  samples/s of each, and the largest per-class difference of test ROC AUC between the 128-row and the
  801-step model (`inclusive_auc_delta_vs_801`), and between the bucketed and the 801-step model;
* inference in Spark (``local[2]``, ``lhc_assets.spark.inference.score_events``): events/s per core for
  the HLF model (test and train HLF rows, repeated to a few hundred thousand events) and for the
  inclusive model (test_set), timed on the second of two passes (Python workers and models warm).

    python benchmarks/training.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _pipeline import prepare_training_data

from lhc_assets.ml.contract import FAST_SEQUENCE_STEPS, keras_model

BATCH = 128
CORES = 2


def _train(model_name: str, train_set: str, test_set: str, epochs: int, bucket_width: int, seed: int = 7,
           sequence_steps: int | None = None) -> dict:
    import keras

    from lhc_assets.ml.evaluation import roc_auc
    from lhc_assets.ml.inference import predict_arrays
    from lhc_assets.ml.readers import dataset_rows, load_arrays, petastorm_dataset
    from lhc_assets.ml.training import fit, training_batches

    spec = keras_model(model_name)
    inputs = spec.inputs
    keras.utils.set_random_seed(seed)
    kwargs = {"jit_compile": True, "sequence_steps": sequence_steps} if spec.reads_particles else {}
    model = spec.build(seed=seed, **kwargs)
    rows = dataset_rows(train_set)
    with petastorm_dataset(train_set, inputs, batch_size=1024, num_epochs=None, seed=seed) as train:
        result = fit(model, training_batches(train, BATCH, bucket_width, sequence_steps), rows, BATCH, epochs)
    x, labels = load_arrays(test_set, inputs)
    hlf = x["hlf_input"] if isinstance(x, dict) else (x if inputs == "hlf" else None)
    gru = x["gru_input"] if isinstance(x, dict) else (x if inputs == "gru" else None)
    probabilities = predict_arrays(model, hlf, gru)
    aucs = [roc_auc(labels[:, c] == 1, probabilities[:, c]) for c in range(labels.shape[1])]
    return {"samples_per_s": result.samples_per_s, "epoch_seconds": result.epoch_seconds, "train_events": rows,
            "epochs": epochs, "test_auc": aucs, "final_loss": result.final("loss"), "sequence_steps": sequence_steps}


def _save(model_name: str, train_set: str, directory: Path) -> str:
    """A briefly trained model of this kind saved in the native format, for the inference benchmark."""
    from lhc_assets.ml.readers import load_arrays

    spec = keras_model(model_name)
    inputs = spec.inputs
    kwargs = {"sequence_steps": FAST_SEQUENCE_STEPS} if spec.reads_particles else {}
    model = spec.build(seed=3, **kwargs)
    x, y = load_arrays(train_set, inputs)
    if kwargs:
        x["gru_input"] = x["gru_input"][:, -FAST_SEQUENCE_STEPS:]
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    path = directory / f"{model_name}.keras"
    model.save(path)
    return str(path)


def _inference(session, frame, models: dict[str, str]) -> dict:
    from lhc_assets.spark.inference import score_events

    events = frame.count()
    timings = []
    for _ in range(2):  # the first pass starts the Python workers, imports TensorFlow and loads the models
        t0 = time.perf_counter()
        score_events(frame, models).write.format("noop").mode("overwrite").save()
        timings.append(time.perf_counter() - t0)
    return {"events": events, "seconds": timings[-1], "first_pass_seconds": timings[0],
            "events_per_s_per_core": events / timings[-1] / CORES}


def _auc_delta(a: dict, b: dict) -> float:
    return max(abs(x - y) for x, y in zip(a["test_auc"], b["test_auc"], strict=True))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer events and epochs (under 5 minutes)")
    args = p.parse_args()
    events_per_file, files, epochs, hlf_repeat = (2000, 1, 2, 100) if args.quick else (3000, 3, 6, 100)
    with tempfile.TemporaryDirectory() as tmp:
        prep = prepare_training_data(Path(tmp), events_per_file, files, qcd_files=3 * files)
        hlf = _train("hlf_classifier", prep["hlf_train_set"], prep["hlf_test_set"], epochs=2 * epochs,
                     bucket_width=0)
        capped = _train("inclusive_classifier", prep["train_set"], prep["test_set"], epochs, bucket_width=0,
                        sequence_steps=FAST_SEQUENCE_STEPS)
        bucketed = _train("inclusive_classifier", prep["train_set"], prep["test_set"], epochs, bucket_width=100)
        full = _train("inclusive_classifier", prep["train_set"], prep["test_set"], epochs, bucket_width=0)

        from resources.spark import spark_resource_from_env

        session = spark_resource_from_env().get_session()
        models = {name: _save(name, prep[train], Path(tmp))
                  for name, train in (("hlf_classifier", "hlf_train_set"), ("inclusive_classifier", "train_set"))}
        hlf_rows = session.read.parquet(prep["hlf_train_set"]).unionByName(session.read.parquet(prep["hlf_test_set"]))
        hlf_rows = hlf_rows.crossJoin(session.range(hlf_repeat).withColumnRenamed("id", "copy")).drop("copy")
        hlf_rows.repartition(CORES * 2).write.parquet(str(Path(tmp) / "hlf_rows"))
        # HLF rows are small: the column batch size the session keeps low for the particle lists is not needed.
        reader_batch = session.conf.get("spark.sql.parquet.columnarReaderBatchSize")
        session.conf.set("spark.sql.parquet.columnarReaderBatchSize", "4096")
        hlf_rows = session.read.parquet(str(Path(tmp) / "hlf_rows"))
        hlf_inference = _inference(session, hlf_rows, {"hlf_classifier": models["hlf_classifier"]})
        session.conf.set("spark.sql.parquet.columnarReaderBatchSize", reader_batch)
        inclusive_inference = _inference(session, session.read.parquet(prep["test_set"]),
                                         {"inclusive_classifier": models["inclusive_classifier"]})
        session.stop()
    result = {
        "benchmark": "training",
        "hlf_train_samples_per_s": hlf["samples_per_s"],
        "inclusive_train_samples_per_s": capped["samples_per_s"],
        "inclusive_sequence_steps": FAST_SEQUENCE_STEPS,
        "inclusive_bucketed_train_samples_per_s": bucketed["samples_per_s"],
        "inclusive_801_train_samples_per_s": full["samples_per_s"],
        "inclusive_vs_801": capped["samples_per_s"] / full["samples_per_s"],
        "inclusive_auc_delta_vs_801": _auc_delta(capped, full),
        "inclusive_bucketed_auc_delta_vs_801": _auc_delta(bucketed, full),
        "hlf_inference_events_per_s_per_core": hlf_inference["events_per_s_per_core"],
        "inclusive_inference_events_per_s_per_core": inclusive_inference["events_per_s_per_core"],
        "targets": {"inclusive_train_samples_per_s": 900, "inclusive_auc_delta_vs_801": 0.005,
                    "hlf_inference_events_per_s_per_core": 100_000},
        "reference_2019_inclusive_train_samples_per_s": 225,
        "runs": {"preparation": {k: v for k, v in prep.items() if not k.endswith("_set")}, "hlf": hlf,
                 "inclusive": capped, "inclusive_bucketed": bucketed, "inclusive_801": full,
                 "hlf_inference": hlf_inference, "inclusive_inference": inclusive_inference},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
