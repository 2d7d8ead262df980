"""The physics-grade event engine: Pythia 8 events, minimum-bias pileup, the Delphes-like fast simulation.

Pythia 8 (the ``pythia8mc`` wheel) makes the hard process, parton shower, multiple interactions and
hadronisation at 13 TeV with its default tune (Monash 2013); particles with c tau > 10 mm are left
stable, as in the CMS and Delphes set-ups, so K0S and Lambda reach the detector. Each sample is a
process card (``PROCESSES``, documented in docs/physics.md):

* ``ttbar``: gg, qqbar -> ttbar with at least one W -> l nu (l = e, mu, tau), required by a user hook
  before the shower, so almost no time is spent on all-hadronic events;
* ``wjets``: qqbar -> W g and q g -> W q with pT-hat > 20 GeV, W -> e nu or mu nu only;
* ``qcd``: a heavy-flavour-enriched multijet sample (unaffordable otherwise: inclusive QCD with a lepton
  filter keeps 0.05 events/s): gg, qqbar -> bbbar with pT-hat > 40 GeV, every weakly decaying b and c
  hadron forced to a decay with an electron or muon, and a generator-level filter keeping events with an
  electron or muon above 20 GeV in |eta| < 2.5. Of the variants measured (docs/physics.md) this one gives
  the most selected events per second; the bias it introduces is documented there.

Pileup: a pool of minimum-bias events (``SoftQCD:inelastic``) is generated once per seed, cached and shared
by every sample and file (as Delphes reads one minimum-bias file), and a Poisson number (mean
``pileup_mu``) of them is overlaid on every event, each rotated by a random azimuth, randomly mirrored in z
and placed at its own vertex along the beam, as Delphes' PileUpMerger does.

Deterministic: the same (seed, sample, file index, events, options) gives the same events.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np

from lhc_assets.physics.generators.detector import CMS, NEUTRINOS, DetectorCard, concat_ranges, simulate
from lhc_assets.physics.generators.events import EventBatch
from lhc_assets.physics.generators.kinematics import to_pt_eta_phi
from lhc_assets.physics.schema import SAMPLES

# Events per simulation batch: the fast simulation and the writer work on this many at a time.
BATCH_EVENTS = 200
PILEUP_MU = 20.0  # mean number of pileup interactions, the study's CMS-like set-up
PILEUP_POOL = 5000  # minimum-bias events generated once per seed (and cached), shared by every sample and file
BEAM_SPOT_XY, BEAM_SPOT_Z = 0.015, 45.0  # mm, luminous region (Gaussian widths)
LEPTON_FILTER_ETA = 2.5
_PYTHIA_SEED_MAX = 900_000_000  # Pythia accepts seeds up to 900,000,000
_ENGINE_TAG = 8  # separates the Pythia engine's random streams from the toy's for the same seed
_MAX_GENERATED_PER_KEPT = 10_000  # a filter keeping less than this is a broken process card, not a rare one

COMMON_SETTINGS = (
    "Beams:eCM = 13000.",
    "ParticleDecays:limitTau0 = on",
    "ParticleDecays:tau0Max = 10",
    "Print:quiet = on",
)

B_HADRONS = (511, 521, 531, 541, 5122, 5132, 5232, 5332)
C_HADRONS = (411, 421, 431, 4122, 4132, 4232, 4332)


def _forced_semileptonic(hadrons: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(s for h in hadrons for s in (f"{h}:onMode = off", f"{h}:onIfAny = 11 13"))


@dataclass(frozen=True)
class Process:
    """A sample's Pythia settings and its generator-level filter."""

    settings: tuple[str, ...]
    lepton_filter_pt: float | None = None  # keep events with an e or mu above this pT in |eta| < 2.5
    summary: str = ""
    leptonic_w: bool = False  # veto events without a W -> l nu (l = e, mu, tau) before the shower


PROCESSES: dict[str, Process] = {
    "ttbar": Process(
        ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on"),
        summary="ttbar, at least one W -> l nu (e, mu, tau)",
        leptonic_w=True,
    ),
    "wjets": Process(
        ("WeakBosonAndParton:qqbar2Wg = on", "WeakBosonAndParton:qg2Wq = on", "PhaseSpace:pTHatMin = 20.",
         "24:onMode = off", "24:onIfAny = 11 13"),
        summary="W(-> e nu, mu nu) + jet, pT-hat > 20 GeV",
    ),
    "qcd": Process(
        ("HardQCD:hardbbbar = on", "PhaseSpace:pTHatMin = 40.",
         *_forced_semileptonic(B_HADRONS), *_forced_semileptonic(C_HADRONS)),
        lepton_filter_pt=20.0,
        summary="bbbar, pT-hat > 40 GeV, b and c hadrons forced semileptonic, e/mu > 20 GeV filter",
    ),
}
MINIMUM_BIAS = ("SoftQCD:inelastic = on",)


class PythiaError(RuntimeError):
    """Pythia refused a setting or failed to initialise."""


def init_cache_dir() -> Path:
    """Where Pythia's multiparton-interaction initialisation is cached (``LHC_PYTHIA_CACHE`` to move it)."""
    return Path(os.environ.get("LHC_PYTHIA_CACHE", Path.home() / ".cache" / "lhc-assets" / "pythia"))


def make_pythia(settings: tuple[str, ...], seed: int, cache_dir: Path | None = None, user_hook=None):
    """An initialised ``pythia8mc.Pythia`` with the common settings, ``settings`` and its random stream at ``seed``;
    ``user_hook`` is a ``pythia8mc.UserHooks`` (the caller keeps a reference: Pythia does not own the Python object).

    Initialising multiparton interactions costs about 5 s for minimum bias (once per file). Pythia can save
    that initialisation and read it back, so it is cached per set of settings (``init_cache_dir``). Events
    always come from an instance initialised from the cache file (written first if missing) and re-seeded
    after the initialisation: a table read back differs from the freshly computed one in the last digits,
    which would otherwise make the first run's events differ from later ones at 1e-6.
    """
    import pythia8mc

    settings = (*COMMON_SETTINGS, *settings)
    directory = init_cache_dir() if cache_dir is None else cache_dir
    hook_name = type(user_hook).__name__ if user_hook is not None else ""
    key = hashlib.sha256("\n".join((_pythia_version(), *settings, hook_name)).encode()).hexdigest()[:16]
    cache = directory / f"mpi-{key}.dat"

    def initialised(reuse: int, path: Path):
        pythia = pythia8mc.Pythia("", False)  # no banner
        for line in (*settings, "Random:setSeed = on", "Random:seed = 1",
                     f"MultipartonInteractions:reuseInit = {reuse}", f"MultipartonInteractions:initFile = {path}"):
            if not pythia.readString(line):
                raise PythiaError(f"Pythia rejected the setting {line!r}")
        if user_hook is not None:
            pythia.setUserHooksPtr(user_hook)
        return pythia if pythia.init() else None

    pythia = initialised(2, cache) if cache.exists() else None  # None: missing or damaged
    if pythia is None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
                pass
        except OSError as exc:
            raise PythiaError(f"cannot write Pythia's initialisation cache to {directory} ({exc.strerror or exc}); "
                              "set LHC_PYTHIA_CACHE to a writable directory") from None
        partial = directory / f".mpi-{key}.{os.getpid()}.partial"
        if initialised(1, partial) is None or not partial.exists():
            partial.unlink(missing_ok=True)
            raise PythiaError(f"Pythia failed to initialise with {list(settings)}")
        os.replace(partial, cache)  # atomic: a concurrent reader sees the whole file or none
        pythia = initialised(2, cache)
        if pythia is None:
            raise PythiaError(f"Pythia cannot read back its initialisation {cache}")
    pythia.rndm.init(seed)
    return pythia


def _pythia_version() -> str:
    from importlib.metadata import version

    return version("pythia8mc")


def leptonic_w_filter():
    """A Pythia user hook vetoing, at the process level (before the shower, so at almost no cost), events
    without a charged lepton from a W decay. Pythia's own ResonanceDecayFilterHook reads its settings
    through a reference that the Python binding does not keep alive, and filters nothing."""
    import pythia8mc

    class LeptonicW(pythia8mc.UserHooks):
        tried = 0  # hard processes seen, for the filter's efficiency

        def canVetoProcessLevel(self) -> bool:
            return True

        def doVetoProcessLevel(self, process) -> bool:
            self.tried += 1
            for i in range(process.size()):  # a dozen entries: the hard process and its resonance decays
                p = process[i]
                if p.idAbs() in (11, 13, 15) and process[p.mother1()].idAbs() == 24:
                    return False
            return True

    return LeptonicW()


def _seed(sequence: np.random.SeedSequence) -> int:
    return int(sequence.generate_state(1)[0]) % _PYTHIA_SEED_MAX + 1


def _heavy_flavour(pid: np.ndarray) -> np.ndarray:
    """5 for b hadrons, 4 for c hadrons (heaviest quark of the hadron), 0 otherwise (quarks, diquarks, ...)."""
    a = np.abs(pid) % 10000
    meson = (a >= 100) & (a < 1000)
    baryon = (a >= 1000) & ((a // 10) % 10 != 0)  # diquarks have a zero tens digit
    heaviest = np.where(meson, (a // 100) % 10, np.where(baryon, a // 1000, 0))
    return np.where((heaviest == 5) | (heaviest == 4), heaviest, 0)


@dataclass
class GenerationStats:
    """Where the time of a file went, and how many hard events the filter kept."""

    pythia_s: float = 0.0  # hard-process events, including those the filter rejected
    pileup_s: float = 0.0  # the minimum-bias pool and the overlay
    detector_s: float = 0.0  # the fast simulation, jets included
    generated: int = 0  # hard events generated (for ttbar: hard processes the W filter looked at)
    kept: int = 0  # of which passing the generator-level filter


class _ChargeTable:
    """Electric charge of particle codes, looked up once per code in Pythia's particle data."""

    def __init__(self, pythia):
        self._data = pythia.particleData
        self._known: dict[int, float] = {}

    def __call__(self, pid: np.ndarray) -> np.ndarray:
        codes, inverse = np.unique(pid, return_inverse=True)
        for c in codes.tolist():
            if c not in self._known:
                self._known[c] = float(self._data.charge(c))
        return np.array([self._known[c] for c in codes.tolist()], np.int32)[inverse]


def _records(batch) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-event record sizes and the flat columns of a ``nextBatch`` result."""
    prt = batch["prt"]
    counts = ak.to_numpy(ak.num(prt)).astype(np.int64)
    flat = ak.flatten(prt)
    cols = {k: ak.to_numpy(flat[k]) for k in ("id", "status")}
    for k in ("px", "py", "pz", "e"):
        cols[k] = ak.to_numpy(flat["p"][k])
    vertex = flat["vProd"]
    for k, name in (("px", "vx"), ("py", "vy"), ("pz", "vz")):
        cols[name] = ak.to_numpy(ak.fill_none(vertex[k], 0.0))
    return counts, cols


def _stable(cols: dict[str, np.ndarray], event: np.ndarray, charges: _ChargeTable) -> dict[str, np.ndarray]:
    """Final-state particles the detector can see, as the fast simulation's input table."""
    keep = np.flatnonzero((cols["status"] > 0) & ~np.isin(np.abs(cols["id"]), NEUTRINOS))
    pid = cols["id"][keep]
    return {"event": event[keep], "pid": pid, "charge": charges(pid),
            **{k: cols[k][keep] for k in ("px", "py", "pz", "e", "vx", "vy", "vz")}}


class PileupPool:
    """Minimum-bias events generated once and overlaid many times, each time rotated and displaced."""

    _FLOAT = ("px", "py", "pz", "e", "vx", "vy", "vz")

    def __init__(self, size: int, seed: int, particles: dict[str, np.ndarray] | None = None,
                 offsets: np.ndarray | None = None):
        if particles is None:
            particles, offsets = self._generate(size, seed)
        self.size = size
        self.particles = particles
        self.offsets = offsets

    @classmethod
    def _generate(cls, size: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        pythia = make_pythia(MINIMUM_BIAS, seed)
        charges = _ChargeTable(pythia)
        parts, n = [], 0
        while n < size:
            counts, cols = _records(pythia.nextBatch(size - n))
            if counts.shape[0] == 0:
                raise PythiaError("Pythia produced no minimum-bias event for the pileup pool")
            event = np.repeat(np.arange(n, n + counts.shape[0]), counts)
            parts.append(_stable(cols, event, charges))
            n += counts.shape[0]
        table = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        offsets = np.concatenate([[0], np.cumsum(np.bincount(table.pop("event"), minlength=size))])
        # float32 like the files, and the same whether generated now or read from the cache
        return {k: v.astype(np.float32) if k in cls._FLOAT else v.astype(np.int32) for k, v in table.items()}, offsets

    @classmethod
    def cache_path(cls, size: int, seed: int, cache_dir: Path | None = None) -> Path:
        """Where the pool of a seed is cached (it exists once :meth:`shared` has made it)."""
        directory = init_cache_dir() if cache_dir is None else cache_dir
        key = hashlib.sha256("\n".join((_pythia_version(), *COMMON_SETTINGS, *MINIMUM_BIAS, str(size), str(seed)))
                             .encode()).hexdigest()[:16]
        return directory / f"pileup-{key}.npz"

    @classmethod
    def shared(cls, size: int, seed: int, cache_dir: Path | None = None) -> PileupPool:
        """The pool of a seed, generated once and cached (``LHC_PYTHIA_CACHE``): every sample and file of
        that seed overlays the same minimum-bias events, as Delphes reads one minimum-bias file, so pileup
        carries nothing that tells one class (or file) from another."""
        path = cls.cache_path(size, seed, cache_dir)
        directory = path.parent
        try:
            with np.load(path) as stored:
                particles = {k: stored[k] for k in stored.files if k != "offsets"}
                return cls(size, seed, particles, stored["offsets"])
        except (OSError, ValueError, KeyError):  # missing, or damaged: generate (again)
            pass
        pool = cls(size, seed)
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / f".{path.stem}.{os.getpid()}.partial.npz"
        np.savez(partial, offsets=pool.offsets, **pool.particles)
        os.replace(partial, path)  # atomic: a concurrent reader sees the whole pool or none
        return pool

    def overlay(self, n_events: int, mu: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Pileup particles of ``n_events`` events, ordered by event, with an ``event`` column."""
        n_pileup = rng.poisson(mu, n_events)
        total = int(n_pileup.sum())
        chosen = rng.integers(0, self.size, total)
        angle = rng.uniform(-np.pi, np.pi, total)
        mirror = np.where(rng.random(total) < 0.5, -1.0, 1.0)
        vx, vy = rng.normal(0.0, BEAM_SPOT_XY, (2, total))
        vz = rng.normal(0.0, BEAM_SPOT_Z, total)
        starts, stops = self.offsets[chosen], self.offsets[chosen + 1]
        sizes = stops - starts
        index = concat_ranges(starts, stops)
        interaction = np.repeat(np.arange(total), sizes)
        p = {k: v[index] for k, v in self.particles.items()}
        cos, sin, m = np.cos(angle)[interaction], np.sin(angle)[interaction], mirror[interaction]
        return {
            "event": np.repeat(np.repeat(np.arange(n_events), n_pileup), sizes), "pid": p["pid"],
            "charge": p["charge"], "px": p["px"] * cos - p["py"] * sin, "py": p["px"] * sin + p["py"] * cos,
            "pz": p["pz"] * m, "e": p["e"],
            "vx": p["vx"] * cos - p["vy"] * sin + vx[interaction],
            "vy": p["vx"] * sin + p["vy"] * cos + vy[interaction],
            "vz": p["vz"] * m + vz[interaction],
        }


@dataclass
class PythiaSource:
    """The events of one output file: Pythia hard events, pileup, fast simulation, in batches."""

    sample: str
    seed: int
    file_index: int
    pileup_mu: float = PILEUP_MU
    pileup_pool: int = PILEUP_POOL
    card: DetectorCard = CMS
    muon_collection: str = "MuonTight"
    stats: GenerationStats = field(default_factory=GenerationStats)

    def __post_init__(self) -> None:
        if self.sample not in SAMPLES:
            raise ValueError(f"unknown sample {self.sample!r}; expected one of {sorted(SAMPLES)}")
        if self.pileup_mu < 0:
            raise ValueError(f"pileup_mu must not be negative, got {self.pileup_mu}")
        if self.pileup_pool < 1:
            raise ValueError(f"pileup_pool must be at least 1, got {self.pileup_pool}")
        per_file = np.random.SeedSequence([self.seed, SAMPLES[self.sample], self.file_index, _ENGINE_TAG])
        hard, detector = per_file.spawn(2)
        pileup = np.random.SeedSequence([self.seed, _ENGINE_TAG])  # one pool per seed, whatever the sample
        self.process = PROCESSES[self.sample]
        t0 = time.perf_counter()
        self._hook = leptonic_w_filter() if self.process.leptonic_w else None  # alive as long as Pythia
        self._pythia = make_pythia(self.process.settings, _seed(hard), user_hook=self._hook)
        self.stats.pythia_s += time.perf_counter() - t0
        self._charges = _ChargeTable(self._pythia)
        self.pileup_seed = _seed(pileup)  # of the shared pool (PileupPool.cache_path)
        self._pool: PileupPool | None = None
        self._rng = np.random.default_rng(detector)
        # Filtered events generated beyond the current batch, kept for the next one.
        self._buffer: dict[str, np.ndarray] = {}
        self._buffer_counts = np.zeros(0, np.int64)

    def _hard_events(self, n: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The next ``n`` events passing the process's filter: stable particles and heavy-flavour hadrons.

        Events that pass beyond ``n`` wait in a buffer for the next batch, so none is generated in vain.
        """
        t0 = time.perf_counter()
        while self._buffer_counts.shape[0] < n:
            efficiency = self.stats.kept / self.stats.generated if self.stats.generated else 1.0
            need = n - self._buffer_counts.shape[0]
            ask = need if self.process.lepton_filter_pt is None else min(
                math.ceil(need / max(efficiency, 0.01)), 20 * BATCH_EVENTS)
            counts, cols = _records(self._pythia.nextBatch(ask))
            record_event = np.repeat(np.arange(counts.shape[0]), counts)
            passed = self._filter(counts, cols, record_event)
            self.stats.generated += counts.shape[0]
            self.stats.kept += passed.shape[0]
            if self.stats.generated >= _MAX_GENERATED_PER_KEPT * max(1, self.stats.kept):
                raise PythiaError(f"{self.sample}: the generator filter kept {self.stats.kept} of "
                                  f"{self.stats.generated} events; its settings cannot make this sample")
            rows = np.isin(record_event, passed)
            self._buffer = {k: np.concatenate([self._buffer[k], v[rows]]) if self._buffer else v[rows]
                            for k, v in cols.items()}
            self._buffer_counts = np.concatenate([self._buffer_counts, counts[passed]])
        stop = int(self._buffer_counts[:n].sum())
        cols = {k: v[:stop] for k, v in self._buffer.items()}
        event = np.repeat(np.arange(n), self._buffer_counts[:n])
        self._buffer = {k: v[stop:] for k, v in self._buffer.items()}
        self._buffer_counts = self._buffer_counts[n:]
        flavour = _heavy_flavour(cols["id"])
        h = np.flatnonzero(flavour > 0)
        pt, eta, phi = to_pt_eta_phi(cols["px"][h], cols["py"][h], cols["pz"][h])
        hadrons = {"event": event[h], "pt": pt, "eta": eta, "phi": phi, "flavour": flavour[h]}
        stable = _stable(cols, event, self._charges)
        if self._hook is not None:
            self.stats.generated = self._hook.tried
        self.stats.pythia_s += time.perf_counter() - t0
        return stable, hadrons

    def _filter(self, counts: np.ndarray, cols: dict[str, np.ndarray], record_event: np.ndarray) -> np.ndarray:
        """Indices of the events of a Pythia batch that pass the generator-level filter."""
        threshold = self.process.lepton_filter_pt
        if threshold is None:
            return np.arange(counts.shape[0])
        pt, eta, _ = to_pt_eta_phi(cols["px"], cols["py"], cols["pz"])
        lepton = ((cols["status"] > 0) & np.isin(np.abs(cols["id"]), (11, 13)) & (pt > threshold)
                  & (np.abs(eta) < LEPTON_FILTER_ETA))
        return np.flatnonzero(np.bincount(record_event[lepton], minlength=counts.shape[0]) > 0)

    def _with_pileup(self, hard: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """Hard-scatter particles moved to their event's vertex, then each event's pileup after them."""
        t0 = time.perf_counter()
        pv = self._rng.normal(0.0, [BEAM_SPOT_XY, BEAM_SPOT_XY, BEAM_SPOT_Z], (n, 3))
        for axis, name in enumerate(("vx", "vy", "vz")):
            hard[name] = hard[name] + pv[hard["event"], axis]
        if self.pileup_mu > 0:
            if self._pool is None:
                self._pool = PileupPool.shared(self.pileup_pool, self.pileup_seed)
            pileup = self._pool.overlay(n, self.pileup_mu, self._rng)
            merged = {k: np.concatenate([hard[k], pileup[k]]) for k in hard}
            order = np.argsort(merged["event"], kind="stable")
            hard = {k: v[order] for k, v in merged.items()}
        self.stats.pileup_s += time.perf_counter() - t0
        return hard

    def batches(self, n_events: int) -> Iterator[EventBatch]:
        """All events of the file, in batches of ``BATCH_EVENTS``."""
        done = 0
        while done < n_events:
            n = min(BATCH_EVENTS, n_events - done)
            hard, hadrons = self._hard_events(n)
            particles = self._with_pileup(hard, n)
            t0 = time.perf_counter()
            batch = simulate(particles, hadrons, n, self._rng, self.card, self.muon_collection)
            self.stats.detector_s += time.perf_counter() - t0
            done += n
            yield batch


def generate_file_batches(sample: str, n_events: int, seed: int, file_index: int, **options) -> Iterator[EventBatch]:
    """All events of one file from the Pythia engine (``options``: ``PythiaSource`` fields)."""
    yield from PythiaSource(sample, seed, file_index, **options).batches(n_events)
