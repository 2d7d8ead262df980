"""Benchmark of the Delphes-format generator (issue: foundation). Prints one JSON object.

Measures, per class and overall, on one core: events/s for generate + write (the ``lhc-generate``
path), events/s for generation alone, bytes per event on disk and particles per event.
Target: at least 1,000 events/s on one core at realistic multiplicities.

    python benchmarks/generate.py [--quick] [--events N] [--compression lz4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from lhc_assets.physics.generators.rootio import write_delphes_file
from lhc_assets.physics.generators.toy import generate_file_batches
from lhc_assets.physics.schema import SAMPLES

PARTICLE_COLLECTIONS = ("EFlowTrack", "EFlowPhoton", "EFlowNeutralHadron")


def bench_sample(sample: str, n_events: int, out: Path, compression: str) -> dict:
    # Generation alone (batches kept, to count particles).
    t0 = time.perf_counter()
    batches = list(generate_file_batches(sample, n_events, seed=1234, file_index=0))
    gen_s = time.perf_counter() - t0
    particles = sum(int(b.counts[c].sum()) for b in batches for c in PARTICLE_COLLECTIONS)
    del batches

    # The full command path: generate and write a ROOT file.
    path = out / f"{sample}.root"
    t0 = time.perf_counter()
    write_delphes_file(path, generate_file_batches(sample, n_events, seed=1234, file_index=0), compression)
    total_s = time.perf_counter() - t0
    return {
        "events": n_events,
        "events_per_s": n_events / total_s,
        "generate_only_events_per_s": n_events / gen_s,
        "bytes_per_event": path.stat().st_size / n_events,
        "particles_per_event": particles / n_events,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer events (finishes well under 2 minutes)")
    p.add_argument("--events", type=int, default=None, help="events per class")
    p.add_argument("--compression", default="lz4")
    args = p.parse_args()
    n = args.events or (3000 if args.quick else 20000)

    # Warm-up: first-call costs (imports, allocator) are not part of the throughput.
    list(generate_file_batches("qcd", 200, seed=1, file_index=0))

    per_class = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sample in SAMPLES:
            per_class[sample] = bench_sample(sample, n, Path(tmp), args.compression)
    total_events = sum(r["events"] for r in per_class.values())
    total_time = sum(r["events"] / r["events_per_s"] for r in per_class.values())
    result = {
        "benchmark": "generate",
        "cores": 1,
        "compression": args.compression,
        "events_per_s": total_events / total_time,
        "target_events_per_s": 1000,
        "bytes_per_event": {s: round(r["bytes_per_event"]) for s, r in per_class.items()},
        "particles_per_event": {s: round(r["particles_per_event"], 1) for s, r in per_class.items()},
        "per_class": per_class,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
