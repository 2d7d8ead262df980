"""``lhc-run``: what ``make run`` does. Generate the sample under the data root (skipping files that
already exist), materialize the asset graph, print a summary. Safe to re-run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from lhc_assets.cli import generate
from lhc_assets.physics.schema import SAMPLES
from resources.storage import storage_from_env

# Sample sizes for `make run`, chosen so the whole graph fits in about ten minutes on two cores.
DEFAULT_FILES_PER_SAMPLE = 3
DEFAULT_EVENTS_PER_FILE = 3000
DEFAULT_SEED = 42


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lhc-run", description=__doc__)
    p.add_argument("--files-per-sample", type=int,
                   default=int(os.environ.get("LHC_SAMPLE_FILES", DEFAULT_FILES_PER_SAMPLE)))
    p.add_argument("--events-per-file", type=int,
                   default=int(os.environ.get("LHC_SAMPLE_EVENTS", DEFAULT_EVENTS_PER_FILE)))
    p.add_argument("--seed", type=int, default=int(os.environ.get("LHC_SAMPLE_SEED", DEFAULT_SEED)))
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    storage = storage_from_env()
    storage.ensure_layout()
    print(f"data root: {storage.root_path}")

    t0 = time.perf_counter()
    rc = generate.main([
        "--out", str(storage.incoming), "--events-per-file", str(args.events_per_file),
        "--files-per-sample", str(args.files_per_sample), "--seed", str(args.seed),
        "--jobs", str(max(1, args.jobs)), "--skip-existing",
    ])
    if rc:
        return rc

    from lhc_assets.definitions import defs

    specs = list(defs.resolve_all_asset_specs())
    if not specs:
        print("asset graph: no assets defined yet; nothing to materialize")

    print(f"\nsummary ({time.perf_counter() - t0:.0f} s)")
    print(f"  {'sample':8s} {'files':>5s} {'size MB':>8s}")
    for sample in SAMPLES:
        files = sorted(storage.incoming_dir(sample).glob("*.root"))
        size = sum(f.stat().st_size for f in files) / 1e6
        print(f"  {sample:8s} {len(files):5d} {size:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
