"""Benchmark of the training data: feature tables -> balanced train/test Petastorm datasets, and readers.

Prints one JSON object. Runs in one process: generates Delphes files, materializes the ingestion graph
(not timed), then

* preparation: the Dagster ``training_data_job`` (undersampling, split, scalers, HLF-only and inclusive
  datasets, their checks) on ``local[2]``, the median of the second and third of three runs (JVM start,
  numba compilation and Python worker start excluded); events/s per core counts the selected events read
  from the feature tables;
* readers: Keras ``fit`` of the HLF classifier (on hlf_train_set) and of the inclusive classifier (on
  train_set), DESIGN.md section 6, fed from in-memory numpy arrays, from the Petastorm reader and from the
  plain pyarrow reader over the same dataset, samples/s after a warm-up fit, the median of interleaved
  rounds (one fit per feed each: this machine's speed drifts by up to 2x within a minute). The ratio to
  in-memory is the reader's cost.

    python benchmarks/datasets.py [--quick]

Keys: prep_events_per_s_per_core, hlf_inmemory_samples_per_s, hlf_petastorm_samples_per_s,
hlf_arrow_samples_per_s, hlf_petastorm_vs_inmemory, and the same for inclusive_..., plus the raw figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

from _pipeline import prepare_training_data

BATCH = 128


def _readers(train_set: str, inputs: str, epochs: int, max_steps: int | None, rounds: int) -> dict:
    """samples/s of Keras fit fed in-memory, by Petastorm and by plain Arrow: after a warm-up fit each
    (tracing, reader start), ``rounds`` rounds of one fit per feed, interleaved so that the machine's
    load drifts alike for all three; the median round of each feed counts."""
    import keras

    from lhc_assets.ml.models import hlf_classifier, inclusive_classifier
    from lhc_assets.ml.readers import arrow_dataset, load_arrays, petastorm_dataset

    keras.utils.set_random_seed(1)
    x, y = load_arrays(train_set, inputs)
    n = len(y)
    steps = n // BATCH if max_steps is None else min(max_steps, n // BATCH)
    samples = steps * BATCH * epochs
    x = {k: v[:steps * BATCH] for k, v in x.items()} if inputs == "inclusive" else x[:steps * BATCH]
    y = y[: steps * BATCH]
    build = hlf_classifier if inputs == "hlf" else inclusive_classifier
    out = {"train_events": n, "steps_per_epoch": steps, "epochs": epochs, "rounds": rounds}
    with contextlib.ExitStack() as stack:
        model = build(seed=1)
        fits = {"inmemory": lambda model=model: model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=True,
                                                          verbose=0)}
        for name, reader in (("petastorm", petastorm_dataset), ("arrow", arrow_dataset)):
            ds = stack.enter_context(reader(train_set, inputs, batch_size=BATCH, num_epochs=None, seed=5))
            model = build(seed=1)
            fits[name] = lambda ds=ds, model=model: model.fit(ds, epochs=epochs, steps_per_epoch=steps, verbose=0)
        seconds: dict[str, list[float]] = {name: [] for name in fits}
        for fit in fits.values():
            fit()
        for _ in range(rounds):
            for name, fit in fits.items():
                t0 = time.perf_counter()
                fit()
                seconds[name].append(time.perf_counter() - t0)
    for name, values in seconds.items():
        out[f"{name}_samples_per_s"] = samples / statistics.median(values)
        out[f"{name}_samples_per_s_rounds"] = [round(samples / v, 1) for v in values]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer events (under 3 minutes)")
    args = p.parse_args()
    # 90,000 selected events in the full run: a dozen Spark jobs and Dagster steps cost about 4 s whatever
    # the size, which at the earlier 22,000 events was most of the time measured.
    events_per_file, files = (3000, 2) if args.quick else (20000, 3)
    with tempfile.TemporaryDirectory() as tmp:
        prep = prepare_training_data(Path(tmp), events_per_file, files, timed_runs=3)
        hlf = _readers(prep["hlf_train_set"], "hlf", epochs=10 if args.quick else 20, max_steps=None,
                       rounds=3)
        inclusive = _readers(prep["train_set"], "inclusive", epochs=1, max_steps=4 if args.quick else 12,
                             rounds=2 if args.quick else 3)
    result = {
        "benchmark": "datasets",
        "prep_events_per_s_per_core": prep["feature_events"] / prep["seconds"] / 2,
        "prep_output_events_per_s_per_core": prep["train_events"] / 0.8 / prep["seconds"] / 2,
        **{f"hlf_{k}": v for k, v in hlf.items() if k.endswith("samples_per_s")},
        "hlf_petastorm_vs_inmemory": hlf["petastorm_samples_per_s"] / hlf["inmemory_samples_per_s"],
        "hlf_arrow_vs_inmemory": hlf["arrow_samples_per_s"] / hlf["inmemory_samples_per_s"],
        **{f"inclusive_{k}": v for k, v in inclusive.items() if k.endswith("samples_per_s")},
        "inclusive_petastorm_vs_inmemory": inclusive["petastorm_samples_per_s"] / inclusive["inmemory_samples_per_s"],
        "inclusive_arrow_vs_inmemory": inclusive["arrow_samples_per_s"] / inclusive["inmemory_samples_per_s"],
        "targets": {"prep_events_per_s_per_core": 2000, "hlf_petastorm_vs_inmemory": 0.9},
        "reference_2019_prep_events_per_s_per_core": 3,
        "runs": {"preparation": {k: v for k, v in prep.items() if not k.endswith("_set")}, "hlf": hlf,
                 "inclusive": inclusive},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
