"""``lhc-generate``: write Delphes-format ROOT files of generated QCD, ttbar and W+jets events.

Two engines (``lhc_assets.physics.generators``): ``toy``, the fast built-in generator (default), and
``pythia``, Pythia 8 with pileup and a Delphes-like fast simulation. Files land as
``OUT/<sample>/<sample>_seed<S>_<k>.root`` (toy) or ``OUT/<sample>/<sample>_pythia_seed<S>_<k>.root``,
each written under a hidden temporary name and renamed into place when complete, so a watcher never
sees a half-written file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import Manager
from pathlib import Path
from queue import Empty

from tqdm import tqdm

from lhc_assets.physics.generators import pythia, toy
from lhc_assets.physics.generators.rootio import COMPRESSION, write_delphes_file
from lhc_assets.physics.schema import SAMPLES

ENGINES = ("toy", "pythia")


@dataclass(frozen=True)
class FileJob:
    sample: str
    index: int
    n_events: int
    seed: int
    path: Path
    compression: str
    engine: str = "toy"
    options: dict = field(default_factory=dict)  # engine options (pythia: pileup_mu, pileup_pool)


def output_name(sample: str, seed: int, index: int, engine: str = "toy") -> str:
    tag = "" if engine == "toy" else f"_{engine}"
    return f"{sample}{tag}_seed{seed}_{index:04d}.root"


def plan(out: Path, samples: list[str], n_files: int, n_events: int, seed: int, compression: str,
         engine: str = "toy", options: dict | None = None) -> list[FileJob]:
    return [
        FileJob(s, k, n_events, seed, out / s / output_name(s, seed, k, engine), compression, engine, options or {})
        for s in samples
        for k in range(n_files)
    ]


def run_job(job: FileJob, progress: Callable[[int], object] | None = None) -> int:
    """Generate and write one file; ``progress`` is called with the events of every batch written."""
    source = pythia if job.engine == "pythia" else toy
    batches = source.generate_file_batches(job.sample, job.n_events, job.seed, job.index, **job.options)
    return write_delphes_file(job.path, batches, job.compression, progress)


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


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
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
    p.add_argument("--engine", choices=ENGINES, default="toy",
                   help="toy: fast built-in generator; pythia: Pythia 8 + pileup + Delphes-like fast simulation")
    p.add_argument("--pileup-mu", type=_non_negative_float, default=None, metavar="MU",
                   help=f"pythia: mean pileup interactions per event (default {pythia.PILEUP_MU:g})")
    p.add_argument("--pileup-pool", type=_positive, default=None, metavar="N",
                   help=f"pythia: size of the pileup pool a seed's files share (default {pythia.PILEUP_POOL})")
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


def _engine_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    options = {k: v for k, v in (("pileup_mu", args.pileup_mu), ("pileup_pool", args.pileup_pool)) if v is not None}
    if options and args.engine != "pythia":
        parser.error(f"--{next(iter(options)).replace('_', '-')} applies to --engine pythia only")
    return options


def _run_parallel(todo: list[FileJob], jobs: int, bar: tqdm) -> None:
    """Files in worker processes; their batches advance the progress bar as they are written."""
    with Manager() as manager, ProcessPoolExecutor(max_workers=min(jobs, os.cpu_count() or 1)) as pool:
        queue = manager.Queue()
        pending = {pool.submit(run_job, job, queue.put) for job in todo}
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(queue, bar)
            for future in done:
                future.result()  # a failed file stops the command with its error
        _drain(queue, bar)


def _drain(queue, bar: tqdm) -> None:
    while True:
        try:
            bar.update(queue.get_nowait())
        except Empty:
            return


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    options = _engine_options(args, parser)
    try:
        for sample in args.samples:
            _check_writable(args.out / sample)
    except OSError as exc:
        print(f"lhc-generate: error: {exc}", file=sys.stderr)
        return 2

    jobs = plan(args.out, args.samples, args.files_per_sample, args.events_per_file, args.seed, args.compression,
                args.engine, options)
    todo = [j for j in jobs if not (args.skip_existing and j.path.exists())]
    skipped = len(jobs) - len(todo)
    total = sum(j.n_events for j in todo)
    with tqdm(total=total, unit="ev", disable=args.quiet or total == 0, desc=f"generating ({args.engine})") as bar:
        try:
            if args.jobs == 1:
                for job in todo:
                    run_job(job, bar.update)
            else:
                _run_parallel(todo, args.jobs, bar)
        except pythia.PythiaError as exc:
            print(f"lhc-generate: error: {exc}", file=sys.stderr)
            return 1
    if not args.quiet:
        print(f"lhc-generate: wrote {len(todo)} file(s), {total} events under {args.out}"
              + (f"; kept {skipped} existing" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
