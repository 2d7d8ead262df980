"""``lhc-generate``: write Delphes-format ROOT files of generated QCD, ttbar and W+jets events.

Files land as ``OUT/<sample>/<sample>_seed<S>_<k>.root``, each written under a hidden temporary
name and renamed into place when complete, so a watcher never sees a half-written file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from lhc_assets.physics.generators.rootio import COMPRESSION, write_delphes_file
from lhc_assets.physics.generators.toy import generate_file_batches
from lhc_assets.physics.schema import SAMPLES


@dataclass(frozen=True)
class FileJob:
    sample: str
    index: int
    n_events: int
    seed: int
    path: Path
    compression: str


def output_name(sample: str, seed: int, index: int) -> str:
    return f"{sample}_seed{seed}_{index:04d}.root"


def plan(out: Path, samples: list[str], n_files: int, n_events: int, seed: int, compression: str) -> list[FileJob]:
    return [
        FileJob(s, k, n_events, seed, out / s / output_name(s, seed, k), compression)
        for s in samples
        for k in range(n_files)
    ]


def run_job(job: FileJob, progress: tqdm | None = None) -> int:
    update = progress.update if progress is not None else None
    return write_delphes_file(
        job.path, generate_file_batches(job.sample, job.n_events, job.seed, job.index), job.compression, update
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _samples(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SAMPLES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown sample(s) {unknown or text!r}; choose from {','.join(SAMPLES)}")
    return list(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lhc-generate",
        description="Generate Delphes-format ROOT files (TTree 'Delphes') for the QCD, ttbar and W+jets samples.",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory; files go to OUT/<sample>/")
    p.add_argument("--events-per-file", required=True, type=_positive, metavar="N")
    p.add_argument("--files-per-sample", required=True, type=_positive, metavar="K")
    p.add_argument("--seed", required=True, type=_non_negative, metavar="S")
    p.add_argument("--samples", type=_samples, default=list(SAMPLES), help="comma-separated (default: %(default)s)")
    p.add_argument("--compression", choices=sorted(COMPRESSION), default="lz4")
    p.add_argument("--jobs", type=_positive, default=1, help="files generated in parallel (processes)")
    p.add_argument("--skip-existing", action="store_true", help="keep files that already exist under their name")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _check_writable(directory: Path) -> None:
    """Create the directory and prove we can write to it, before spending time generating."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise OSError(f"cannot write to {directory}: {exc.strerror or exc}") from exc


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for sample in args.samples:
            _check_writable(args.out / sample)
    except OSError as exc:
        print(f"lhc-generate: error: {exc}", file=sys.stderr)
        return 2

    jobs = plan(args.out, args.samples, args.files_per_sample, args.events_per_file, args.seed, args.compression)
    todo = [j for j in jobs if not (args.skip_existing and j.path.exists())]
    skipped = len(jobs) - len(todo)
    total = sum(j.n_events for j in todo)
    with tqdm(total=total, unit="ev", disable=args.quiet or total == 0, desc="generating") as bar:
        if args.jobs == 1:
            for job in todo:
                run_job(job, bar)
        else:
            with ProcessPoolExecutor(max_workers=min(args.jobs, os.cpu_count() or 1)) as pool:
                futures = {pool.submit(run_job, job): job for job in todo}
                for fut in as_completed(futures):
                    bar.update(fut.result())
    if not args.quiet:
        print(f"lhc-generate: wrote {len(todo)} file(s), {total} events under {args.out}"
              + (f"; kept {skipped} existing" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
