"""The event sources compared: the toy generator against the Pythia engine, as the pipeline sees them.

``generator_comparison`` generates a small sample of each class with both engines (or reads a Pythia sample
already generated, for large statistics), runs the pipeline's own selection and feature kernels on them and
shows, per class, the selection efficiencies, the 14 HLF and the particle multiplicities of both sources
overlaid, with a Kolmogorov-Smirnov distance per feature (``lhc_assets.physics.generators.comparison``).
"""

import tempfile
from pathlib import Path

from dagster import Config, MetadataValue, asset
from pydantic import Field

from lhc_assets.defs.metadata import png_markdown
from lhc_assets.physics.generators import comparison, pythia, toy
from lhc_assets.physics.generators.rootio import write_delphes_file
from lhc_assets.physics.schema import SAMPLES
from resources.json_io_manager import Report


class GeneratorComparisonConfig(Config):
    toy_events: int = Field(default=5000, ge=1, description="Toy events generated per class.")
    pythia_events: int = Field(default=1500, ge=1, description=(
        "Pythia events generated per class (QCD: events passing its generator filter); about 1.5 minutes on "
        "one core at the default. Ignored with pythia_files."))
    seed: int = Field(default=1, ge=0, description="Seed of both samples.")
    pileup_mu: float = Field(default=pythia.PILEUP_MU, ge=0, description="Mean pileup of the Pythia sample.")
    pythia_files: str | None = Field(default=None, description=(
        "A directory laid out like incoming/ (<sample>/*.root) holding a Pythia sample already generated "
        "(lhc-generate --engine pythia), read instead of generating one: large statistics at no generation cost."))
    max_events: int | None = Field(default=None, ge=1, description="Events read per class from pythia_files.")


def _generated(engine, directory: Path, events: int, seed: int, **options) -> dict[str, list[Path]]:
    directory.mkdir(parents=True)
    files = {}
    for sample in SAMPLES:
        path = directory / f"{sample}.root"
        write_delphes_file(path, engine.generate_file_batches(sample, events, seed, 0, **options))
        files[sample] = [path]
    return files


def _existing(directory: str) -> dict[str, list[Path]]:
    files = {s: sorted(Path(directory, s).glob("*.root")) for s in SAMPLES}
    missing = [s for s, paths in files.items() if not paths]
    if missing:
        raise FileNotFoundError(f"pythia_files: no {', '.join(missing)} files under {directory}/<sample>/*.root")
    return files


@asset(
    group_name="physics",
    kinds={"python", "root", "png"},
    owners=["team:lhc-physics-ml"],
    tags={"stage": "validation"},
    io_manager_key="report_io_manager",
    description=("The toy generator against the Pythia engine as the pipeline sees them: per class the selection "
                 "efficiency, the 14 HLF and the particle multiplicities overlaid (PNG), a Kolmogorov-Smirnov "
                 "distance per feature; report.json under <data root>/reports/generator_comparison."),
)
def generator_comparison(config: GeneratorComparisonConfig) -> Report:
    # The generated samples are scratch: only the report and its figure are kept.
    with tempfile.TemporaryDirectory(prefix="generator-comparison-") as scratch:
        samples = Path(scratch)
        toy_files = _generated(toy, samples / "toy", config.toy_events, config.seed)
        if config.pythia_files:
            pythia_files, limit = _existing(config.pythia_files), config.max_events
        else:
            pythia_files = _generated(pythia, samples / "pythia", config.pythia_events, config.seed,
                                      pileup_mu=config.pileup_mu)
            limit = None
        sources = {
            "toy": {s: comparison.read_features(p, s) for s, p in toy_files.items()},
            "pythia": {s: comparison.read_features(p, s, limit) for s, p in pythia_files.items()},
        }
    report = comparison.compare(sources, "toy", "pythia")
    report["config"] = config.model_dump()
    figure = comparison.plot_features(sources)
    return Report(report, {"features.png": figure}, metadata={
        "selection_efficiency": MetadataValue.md(comparison.efficiency_table(report)),
        "ks_distance": MetadataValue.md(comparison.distance_table(report)),
        "features": png_markdown(figure, "toy (solid) and Pythia (dashed) per class"),
    })


physics_assets = [generator_comparison]
