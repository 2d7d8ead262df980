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
* image classifier (event images drawn in the graph, ``lhc_assets.ml.images``) trained through the Petastorm
  reader at the default 64 x 40 grid and at the study's 150 x 94; the reader with the image drawing alone
  (images/s, no training), to show that drawing is not the bottleneck;
* inference in Spark (``local[2]``, ``lhc_assets.spark.inference.score_events``): events/s per core for
  the HLF model (test and train HLF rows, repeated to a few hundred thousand events), the inclusive model and
  the image model (test_set), timed on the second of two passes (Python workers and models warm).

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
           sequence_steps: int | None = None, **builder_kwargs) -> dict:
    import keras

    from lhc_assets.ml.evaluation import roc_auc
    from lhc_assets.ml.inference import predict_arrays
    from lhc_assets.ml.readers import dataset_rows, load_arrays, petastorm_dataset
    from lhc_assets.ml.training import fit, training_batches

    spec = keras_model(model_name)
    inputs = spec.inputs
    keras.utils.set_random_seed(seed)
    kwargs = {"jit_compile": True, "sequence_steps": sequence_steps} if spec.reads_particles else {}
    model = spec.build(seed=seed, **{**kwargs, **builder_kwargs})
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


def _save(model_name: str, train_set: str, directory: Path, steps: int | None = FAST_SEQUENCE_STEPS,
          **builder_kwargs) -> str:
    """A briefly trained model of this kind saved in the native format, for the inference benchmark."""
    from lhc_assets.ml.readers import load_arrays

    spec = keras_model(model_name)
    inputs = spec.inputs
    kwargs = {"sequence_steps": steps} if spec.reads_particles and steps else {}
    model = spec.build(seed=3, **kwargs, **builder_kwargs)
    x, y = load_arrays(train_set, inputs)
    if kwargs:
        x["gru_input"] = x["gru_input"][:, -steps:]
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


def _image_reader(train_set: str, scalers: dict, grid, batches: int) -> dict:
    """Images/s of the Petastorm reader with the image drawing, nothing else (the first batch excluded)."""
    from lhc_assets.ml.images import image_dataset
    from lhc_assets.ml.readers import petastorm_dataset

    with petastorm_dataset(train_set, "inclusive", batch_size=BATCH, num_epochs=None, seed=1) as reader:
        iterator = iter(image_dataset(reader, scalers, grid))
        next(iterator)
        t0 = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        seconds = time.perf_counter() - t0
    return {"images_per_s": batches * BATCH / seconds, "batches": batches, "grid": list(grid.shape)}


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
        from lhc_assets.ml.images import DEFAULT_GRID, STUDY_GRID

        scalers = json.loads(Path(prep["feature_scalers_file"]).read_text())
        image = _train("image_classifier", prep["train_set"], prep["test_set"], epochs, bucket_width=100,
                       scalers=scalers, jit_compile=False)
        image_study = _train("image_classifier", prep["train_set"], prep["test_set"], max(1, epochs // 3),
                             bucket_width=100, scalers=scalers, jit_compile=False, **STUDY_GRID.as_dict())
        reader_batches = 20 if args.quick else 100
        image_reader = _image_reader(prep["train_set"], scalers, DEFAULT_GRID, reader_batches)
        image_reader_study = _image_reader(prep["train_set"], scalers, STUDY_GRID, reader_batches)

        from resources.spark import spark_resource_from_env

        session = spark_resource_from_env().get_session()
        models = {name: _save(name, prep[train], Path(tmp))
                  for name, train in (("hlf_classifier", "hlf_train_set"), ("inclusive_classifier", "train_set"))}
        models["image_classifier"] = _save("image_classifier", prep["train_set"], Path(tmp), steps=None,
                                           scalers=scalers)
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
        image_inference = _inference(session, session.read.parquet(prep["test_set"]),
                                     {"image_classifier": models["image_classifier"]})
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
        "image_train_samples_per_s": image["samples_per_s"],
        "image_reader_images_per_s": image_reader["images_per_s"],
        "image_reader_vs_train": image_reader["images_per_s"] / image["samples_per_s"],
        "image_study_grid_train_samples_per_s": image_study["samples_per_s"],
        "image_study_grid_reader_images_per_s": image_reader_study["images_per_s"],
        "image_inference_events_per_s_per_core": image_inference["events_per_s_per_core"],
        "image_test_auc": image["test_auc"],
        "targets": {"inclusive_train_samples_per_s": 900, "inclusive_auc_delta_vs_801": 0.005,
                    "hlf_inference_events_per_s_per_core": 100_000, "image_train_samples_per_s": 1000,
                    "image_reader_vs_train": 1.0},
        "reference_2019_inclusive_train_samples_per_s": 225,
        "runs": {"preparation": {k: v for k, v in prep.items() if not k.endswith("_set")}, "hlf": hlf,
                 "inclusive": capped, "inclusive_bucketed": bucketed, "inclusive_801": full,
                 "hlf_inference": hlf_inference, "inclusive_inference": inclusive_inference, "image": image,
                 "image_study_grid": image_study, "image_reader": image_reader,
                 "image_reader_study_grid": image_reader_study, "image_inference": image_inference},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
