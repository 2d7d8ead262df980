"""Benchmark of the Delphes-format event engines. Prints one JSON object.

``--engine toy`` (default; issue: foundation): per class and overall, on one core, events/s for generate +
write (the ``lhc-generate`` path), events/s for generation alone, bytes and particles per event.
Target: at least 1,000 events/s on one core at realistic multiplicities.

``--engine pythia`` (issue 17): per class, on one core, at the default pileup: events/s for the whole
``lhc-generate`` path (Pythia, pileup, fast simulation, writing), the time split between Pythia's hard
events, the pileup (pool and overlay), the fast simulation and writing, the generator filter's efficiency
and the fraction of events passing the pipeline's selection. Targets: fast simulation + pileup + writing
cost less than Pythia's hard events; ttbar and W+jets at least 40 events/s per core; QCD at least 10
filtered events/s per core.

    python benchmarks/generate.py [--engine toy|pythia] [--quick] [--events N] [--compression lz4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from lhc_assets.physics import features
from lhc_assets.physics.delphes_reader import read_batches
from lhc_assets.physics.generators import pythia
from lhc_assets.physics.generators.rootio import write_delphes_file
from lhc_assets.physics.generators.toy import generate_file_batches
from lhc_assets.physics.schema import SAMPLES

PARTICLE_COLLECTIONS = ("EFlowTrack", "EFlowPhoton", "EFlowNeutralHadron")
BENCH_SEED = 1234


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


def selected_fraction(path: Path, sample: str, n_events: int) -> float:
    """Fraction of a file's events passing the pipeline's selection (one isolated e/mu above 23 GeV)."""
    selected = 0
    for batch in read_batches(str(path), sample, f"{sample}/bench", 0, n_events):
        selected += int((features.select(batch).reason == features.REASON_SELECTED).sum())
    return selected / n_events


def bench_pythia_sample(sample: str, n_events: int, out: Path, compression: str) -> dict:
    path = out / f"{sample}.root"
    t0 = time.perf_counter()
    source = pythia.PythiaSource(sample, seed=BENCH_SEED, file_index=0)  # its initialisation counts as Pythia time
    write_delphes_file(path, source.batches(n_events), compression)
    total_s = time.perf_counter() - t0
    st = source.stats
    writing_s = total_s - st.pythia_s - st.pileup_s - st.detector_s
    rest_s = st.pileup_s + st.detector_s + writing_s
    return {
        "events": n_events,
        "events_per_s_per_core": n_events / total_s,
        "seconds": {"pythia": st.pythia_s, "pileup": st.pileup_s, "fast_simulation": st.detector_s,
                    "writing": writing_s, "total": total_s},
        "time_fraction": {"pythia": st.pythia_s / total_s, "pileup": st.pileup_s / total_s,
                          "fast_simulation": st.detector_s / total_s, "writing": writing_s / total_s},
        "simulation_pileup_writing_vs_pythia": rest_s / st.pythia_s,
        "generated_hard_events": st.generated,
        "filter_efficiency": st.kept / st.generated,
        "selected_fraction": selected_fraction(path, sample, n_events),
        "bytes_per_event": path.stat().st_size / n_events,
    }


def main_pythia(args: argparse.Namespace) -> dict:
    defaults = {"ttbar": 2000, "wjets": 2000, "qcd": 1000}
    scale = 0.1 if args.quick else 1.0
    # Warm-up: Pythia's initialisation cache (minimum bias costs ~5 s once) and first-call costs.
    list(pythia.generate_file_batches("wjets", 5, seed=1, file_index=0, pileup_pool=5))
    # The seed's pileup pool is made once and shared by every file of the seed: a one-off cost, reported
    # apart from the per-event overlay (generated here unless a previous run cached it).
    warm = pythia.PythiaSource("wjets", seed=BENCH_SEED, file_index=0)
    pool_cached = pythia.PileupPool.cache_path(warm.pileup_pool, warm.pileup_seed).exists()
    list(warm.batches(5))
    pool = {"events": warm.pileup_pool, "seconds": round(warm.stats.pileup_s, 2), "from_cache": pool_cached}
    per_class = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sample in ("ttbar", "wjets", "qcd"):
            n = args.events or max(20, int(defaults[sample] * scale))
            per_class[sample] = bench_pythia_sample(sample, n, Path(tmp), args.compression)
    qcd = per_class["qcd"]
    return {
        "benchmark": "generate",
        "engine": "pythia",
        "cores": 1,
        "pileup_mu": pythia.PILEUP_MU,
        "pileup_pool": pool,
        "compression": args.compression,
        "events_per_s_per_core": {s: round(r["events_per_s_per_core"], 1) for s, r in per_class.items()},
        "target_events_per_s_per_core": {"ttbar": 40, "wjets": 40, "qcd": 10},
        "simulation_pileup_writing_vs_pythia": {s: round(r["simulation_pileup_writing_vs_pythia"], 3)
                                                for s, r in per_class.items()},
        "target_simulation_pileup_writing_vs_pythia": 1.0,
        "qcd_filtered_events_per_s_per_core": round(qcd["events_per_s_per_core"], 2),
        "qcd_filter_efficiency": round(qcd["filter_efficiency"], 4),
        "selected_fraction": {s: round(r["selected_fraction"], 4) for s, r in per_class.items()},
        "selected_events_per_s_per_core": {s: round(r["selected_fraction"] * r["events_per_s_per_core"], 2)
                                           for s, r in per_class.items()},
        "per_class": per_class,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", choices=("toy", "pythia"), default="toy")
    p.add_argument("--quick", action="store_true", help="fewer events (finishes in about 2 minutes)")
    p.add_argument("--events", type=int, default=None, help="events per class")
    p.add_argument("--compression", default="lz4")
    args = p.parse_args()
    if args.engine == "pythia":
        print(json.dumps(main_pythia(args), indent=2))
        return
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
        "engine": "toy",
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
