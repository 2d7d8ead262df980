"""Benchmark of distributed HLF training (issue 20): MultiWorkerMirroredStrategy with 1 and 2 local workers.

Generates toy Delphes files, ingests them and materializes the training data (not timed; the full run's
balanced ``hlf_train_set`` holds about 77,700 events, over 10x ``make run``'s 7,300, and its preparation
needs about 29 GB free in TMPDIR), then trains ``hlf_classifier`` (DESIGN.md's 50-20-10, Adam 1e-3, seed 42)
on the same data for the same epochs with a batch of 128 per worker, each configuration in a fresh process:

* ``plain``: ``train_classifier`` in one process (the assets' default path: Keras ``fit`` through the
  Petastorm reader, XLA, validation on the test set after each epoch), the reference;
* ``mwms_1`` / ``mwms_2``: ``distributed.train_multi_worker`` with 1 / 2 worker processes, each reading its
  row-group shard of the Petastorm dataset (Petastorm's shard rule, read with pyarrow: ``readers.arrow_dataset``;
  no XLA); with 2 workers the global batch is 256 and an epoch has half the steps, at the same learning rate
  (not scaled);
* ``mwms_2_1thread``: as ``mwms_2`` with ``TF_NUM_INTRAOP_THREADS=1`` and ``TF_NUM_INTEROP_THREADS=1`` in
  the workers' environment (TensorFlow reads them; the workers set no thread counts themselves), so that
  2 workers do not run 2 x 2 compute threads on the 2 cores.

Keys per configuration (``configs``): ``wall_seconds`` (the whole training call: for the workers, process
start, TensorFlow import, strategy and model save included), ``samples`` (all workers'), ``samples_per_s``
(samples / wall), ``steps`` (per worker), ``train_seconds`` and ``train_samples_per_s`` (the workers' own
training loop, first step's tracing included), ``steady_samples_per_s`` (``plain`` only: after the first
epoch, validation excluded), ``cpu_seconds`` (user + system, all processes), ``peak_rss_mb`` (the largest
process), ``test_auc`` (one-vs-rest per class QCD, ttbar, W+jets on ``hlf_test_set``), ``mean_test_auc``,
``rejection`` (of QCD and W+jets at 99 % and 95 % ttbar efficiency), ``final_loss``, ``final_accuracy``.
Top level: ``two_vs_one_worker`` (samples/s of ``mwms_2`` / ``mwms_1``), ``two_vs_one_worker_train_loop``
(the same on ``train_samples_per_s``), ``two_1thread_vs_one_worker``, ``train_events``, ``test_events``,
``at_least_10x_make_run`` (train events >= 73,300).

    python benchmarks/distributed_training.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 128  # per worker
LEARNING_RATE = 1e-3
SEED = 42
MAKE_RUN_TRAIN_EVENTS = 7330  # make run's balanced hlf_train_set
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
CONFIGS = {"plain": (1, {}), "mwms_1": (1, {}), "mwms_2": (2, {}), "mwms_2_1thread": (2, ONE_THREAD)}


def _usage(who: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS in MB of the largest process) of this process or of its waited-for children."""
    u = resource.getrusage(who)
    return u.ru_utime + u.ru_stime, u.ru_maxrss / 1024


def _evaluate(model, test_set: str) -> dict:
    from lhc_assets.ml.evaluation import background_rejection, roc_auc
    from lhc_assets.ml.readers import load_arrays
    from lhc_assets.physics.schema import LABEL_NAMES

    x, onehot = load_arrays(test_set, "hlf")
    probabilities = model.predict(x, batch_size=4096, verbose=0)
    aucs = [roc_auc(onehot[:, c] == 1, probabilities[:, c]) for c in range(onehot.shape[1])]
    points = background_rejection(onehot.argmax(axis=1), probabilities, signal=1, efficiencies=(0.99, 0.95),
                                  class_names=LABEL_NAMES)
    rejection = {f"{p['signal_efficiency_target']:.2f}": {b: v["rejection"] for b, v in p["background"].items()}
                 for p in points}
    return {"test_events": len(x), "test_auc": aucs, "mean_test_auc": sum(aucs) / len(aucs), "rejection": rejection}


def run_config(name: str, train_set: str, test_set: str, epochs: int, scratch: str) -> dict:
    """Train and evaluate one configuration in this (fresh) process."""
    from lhc_assets.ml.contract import keras_model

    workers, _ = CONFIGS[name]
    spec = keras_model("hlf_classifier")
    if name == "plain":
        from lhc_assets.ml.training import TrainingSettings, train_classifier

        trained = train_classifier(spec, train_set, test_set, TrainingSettings(epochs, BATCH, LEARNING_RATE, SEED))
        model, history, wall = trained.model, trained.history, trained.seconds
        steps = trained.details["steps_per_epoch"] * epochs
        cpu, rss = _usage(resource.RUSAGE_SELF)
        loop = {"steady_samples_per_s": trained.samples_per_s}
    else:
        from lhc_assets.ml.distributed import train_multi_worker
        from lhc_assets.ml.models import load

        t0 = time.perf_counter()
        report = train_multi_worker(train_set, spec.inputs, spec.name, workers=workers, epochs=epochs,
                                    batch_size=BATCH, seed=SEED, output_dir=scratch, timeout_s=7200,
                                    model_kwargs={"learning_rate": LEARNING_RATE, "seed": SEED})
        wall = time.perf_counter() - t0
        cpu, rss = _usage(resource.RUSAGE_CHILDREN)  # the workers (the launcher itself idles)
        model, history = load(report["model_path"]), report["history"]
        reports = report["workers"]
        steps = reports[0]["steps"]
        train_seconds = max(r["train_seconds"] for r in reports)
        loop = {"train_seconds": train_seconds, "train_samples_per_s": workers * steps * BATCH / train_seconds,
                "shard_rows": [r["shard_rows"] for r in reports],
                "replicas_in_sync": len({r["weights_sha256"] for r in reports}) == 1}
    samples = workers * steps * BATCH
    return {"workers": workers, "env": CONFIGS[name][1], "wall_seconds": wall, "samples": samples,
            "samples_per_s": samples / wall, "steps": steps, **loop, "cpu_seconds": cpu, "peak_rss_mb": rss,
            "final_loss": history["loss"][-1], "final_accuracy": history["accuracy"][-1],
            **_evaluate(model, test_set)}


def _subprocess(name: str, train_set: str, test_set: str, epochs: int, scratch: Path) -> dict:
    env = {**os.environ, **CONFIGS[name][1], "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, __file__, "--config", name, "--train", train_set, "--test", test_set,
                          "--epochs", str(epochs), "--scratch", str(scratch / name)],
                         env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="about 2,300 train events and 2 epochs (a few minutes)")
    p.add_argument("--config", choices=CONFIGS, help=argparse.SUPPRESS)  # one configuration, in a child process
    p.add_argument("--train", help=argparse.SUPPRESS)
    p.add_argument("--test", help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    p.add_argument("--scratch", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.config:
        print(json.dumps(run_config(args.config, args.train, args.test, args.epochs, args.scratch)))
        return

    from _pipeline import prepare_training_data

    # QCD passes the selection about 11 % of the time, ttbar and W+jets about 67-70 %; the balanced sets
    # follow QCD, so it gets six times the files. Full: 390,000 events -> ~32,400 per class -> ~77,700 train.
    events_per_file, files, qcd_files, epochs = (3000, 1, 3, 2) if args.quick else (10_000, 5, 29, 5)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        prep = prepare_training_data(Path(tmp), events_per_file, files, qcd_files=qcd_files)
        prep_seconds = time.perf_counter() - t0
        from pyspark import SparkContext

        if SparkContext._active_spark_context is not None:  # no idle Spark executors next to the training
            SparkContext._active_spark_context.stop()
        configs = {name: _subprocess(name, prep["hlf_train_set"], prep["hlf_test_set"], epochs, Path(tmp))
                   for name in CONFIGS}
    one, two = configs["mwms_1"], configs["mwms_2"]
    result = {
        "benchmark": "distributed_training",
        "model": "hlf_classifier",
        "train_events": prep["train_events"],
        "at_least_10x_make_run": prep["train_events"] >= MAKE_RUN_TRAIN_EVENTS * 10,
        "test_events": one["test_events"],
        "epochs": epochs,
        "batch_size_per_worker": BATCH,
        "learning_rate": LEARNING_RATE,
        "cores": os.cpu_count(),
        "two_vs_one_worker": two["samples_per_s"] / one["samples_per_s"],
        "two_vs_one_worker_train_loop": two["train_samples_per_s"] / one["train_samples_per_s"],
        "two_1thread_vs_one_worker": configs["mwms_2_1thread"]["samples_per_s"] / one["samples_per_s"],
        "configs": configs,
        "preparation": {"events_per_file": events_per_file, "files_per_sample": files, "qcd_files": qcd_files,
                        "seconds": prep_seconds, "feature_events": prep["feature_events"],
                        "training_data_seconds": prep["seconds"]},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
