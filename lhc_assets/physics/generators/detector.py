"""A Delphes-like fast detector simulation over flat particle arrays (numpy, fastjet; no per-particle Python).

Input: the stable generator-level particles of a batch of events (hard scatter and overlaid pileup), one
row per particle with its event index, plus the heavy-flavour hadrons of the hard scatter for b-tagging.
Output: an ``EventBatch`` with the collections and fields of DESIGN.md section 3, as Delphes writes them.

The response follows the modules of Delphes' CMS card (``cards/delphes_card_CMS.tcl``: its efficiencies,
resolutions, thresholds and cell sizes), simplified where noted in ``DetectorCard`` or below:

* **Propagation** (B = 3.8 T in a cylinder of radius 1.29 m and half-length 3 m): charged particles follow
  their helix to the barrel or, if they reach the end of the cylinder first (forward particles, and
  those that curl up), to the endcap face; the calorimeter cell is the one at that position.
* **Tracker** (|eta| < 2.5): charged particles above 0.1 GeV are found with the card's efficiencies and
  their pT smeared log-normally with the card's resolution, hadrons, electrons and muons apart. A track's
  ``X``/``Y``/``Z`` are its production vertex, so b- and c-hadron decays give displaced tracks.
* **Calorimeters** (|eta| < 5): photons and electrons deposit in ECAL cells (0.0174 x 1 degree), hadrons
  in HCAL cells (0.087 x 5 degrees), K0S and Lambda 30 % / 70 %; muons and neutrinos nothing; beyond
  |eta| = 3 the forward calorimeter's cells (0.175 x 10 degrees) take both parts. Each cell's energy is
  smeared with the card's resolution and kept above its threshold and noise significance.
* **Energy flow**: every track is an ``EFlowTrack``; a cell gives an ``EFlowPhoton`` (ECAL) or
  ``EFlowNeutralHadron`` (HCAL) with the energy left after subtracting the tracks that hit it (electron
  tracks from ECAL cells, the others from HCAL cells), when that remainder is significant; its direction
  is drawn uniformly inside the cell. Like Delphes' calorimeter modules, the output is in cell order:
  tracks by the HCAL cell they reach, cells from eta = -5 to 5 (the particle lists keep the first 450
  tracks, 150 photons and 200 neutral hadrons in that order).
* **Leptons**: electrons (|eta| < 2.5) and muons (|eta| < 2.4) above 10 GeV among the found tracks, with
  the card's identification efficiencies; each is the same object as its ``EFlowTrack`` (same PT, Eta,
  Phi). No isolation is required here: the pipeline computes its own.
* **Jets**: anti-kT R = 0.4 (fastjet) on all energy-flow objects, pileup removed with the median pT density
  rho of the event times the jet area (pi R^2), the card's jet energy scale, kept above 20 GeV. ``BTag`` by
  matching to a b hadron (else a c hadron) within Delta R < 0.4, with the card's pT-dependent efficiencies.
* **MissingET**: minus the vector sum of all energy-flow objects.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass

import awkward as ak
import numpy as np

from lhc_assets.physics.generators.events import EventBatch
from lhc_assets.physics.generators.kinematics import to_pt_eta_phi, wrap_phi
from lhc_assets.physics.schema import field_dtype

Table = dict[str, np.ndarray]

# Stable particles the detector cannot see.
NEUTRINOS = (12, 14, 16)
# Long-lived neutral hadrons sharing their energy between the calorimeters (Delphes CMS card).
_SHARED_ECAL_FRACTION = {310: 0.3, 3122: 0.3}


@dataclass(frozen=True)
class DetectorCard:
    """Parameters of the fast simulation, CMS-like (Delphes' CMS card) unless noted."""

    b_field: float = 3.8  # T
    calo_radius: float = 1.29  # m, radius of the field volume the particles are propagated through
    calo_half_length: float = 3.0  # m, its half-length
    tracker_eta: float = 2.5
    track_min_pt: float = 0.1  # GeV
    calo_eta: float = 5.0  # the forward calorimeter (3 < |eta| < 5) included, as in the CMS card
    forward_eta: float = 3.0  # where the coarser forward cells begin
    ecal_deta: float = 0.0174
    ecal_nphi: int = 360
    hcal_deta: float = 0.087
    hcal_nphi: int = 72
    forward_deta: float = 0.175  # forward cells (ECAL and HCAL parts): 0.175 x 10 degrees
    forward_nphi: int = 36
    ecal_energy_min: float = 0.5  # GeV
    ecal_significance_min: float = 2.0
    hcal_energy_min: float = 1.0
    hcal_significance_min: float = 1.0
    electron_eta: float = 2.5
    muon_eta: float = 2.4
    lepton_min_pt: float = 10.0
    jet_radius: float = 0.4
    jet_min_pt: float = 20.0
    rho_eta: float = 2.5  # the median pT density is taken over |eta| < rho_eta
    rho_cells_eta: int = 10
    rho_cells_phi: int = 12
    btag_match_dr: float = 0.4
    heavy_hadron_min_pt: float = 5.0  # GeV, hadrons used for flavour matching

    @property
    def curl_pt(self) -> float:
        """pT (GeV) below which a charged particle curls up before the barrel surface: 0.3 B R / 2."""
        return 0.3 * self.b_field * self.calo_radius / 2.0


CMS = DetectorCard()


# ----------------------------------------------------------------------------------------------
# response functions (vectorized over particles)


def track_efficiency(kind: np.ndarray, pt: np.ndarray, abs_eta: np.ndarray) -> np.ndarray:
    """Probability that a charged particle in the tracker is found; ``kind`` 0 hadron, 1 electron, 2 muon."""
    barrel = abs_eta <= 1.5
    low = pt <= 1.0
    # (barrel low pT, barrel high pT, endcap low pT, endcap high pT) per kind, from the CMS card
    table = np.array([[0.70, 0.95, 0.60, 0.85], [0.73, 0.95, 0.50, 0.83], [0.75, 0.99, 0.70, 0.98]])
    column = np.where(barrel, np.where(low, 0, 1), np.where(low, 2, 3))
    return table[kind, column]


# Relative pT resolution sqrt(a^2 + (b pT)^2) in |eta| <= 0.5, <= 1.5, <= 2.5, per kind (CMS card).
_TRACK_RESOLUTION = np.array([
    [[0.06, 1.3e-3], [0.10, 1.7e-3], [0.25, 3.1e-3]],  # charged hadrons
    [[0.03, 1.3e-3], [0.05, 1.7e-3], [0.15, 3.1e-3]],  # electrons
    [[0.01, 1.0e-4], [0.015, 1.5e-4], [0.025, 3.5e-4]],  # muons
])


def track_resolution(kind: np.ndarray, pt: np.ndarray, abs_eta: np.ndarray) -> np.ndarray:
    """Relative pT resolution of a track; ``kind`` 0 hadron, 1 electron, 2 muon (the CMS card's formulas)."""
    band = np.where(abs_eta <= 0.5, 0, np.where(abs_eta <= 1.5, 1, 2))
    a, b = _TRACK_RESOLUTION[kind, band, 0], _TRACK_RESOLUTION[kind, band, 1]
    return np.sqrt(a * a + (b * pt) ** 2)


def ecal_sigma(energy: np.ndarray, abs_eta: np.ndarray) -> np.ndarray:
    """Absolute ECAL energy resolution (GeV), CMS card: barrel and endcap scaled with eta, forward beyond 2.5."""
    core = np.sqrt((0.008 * energy) ** 2 + 0.11**2 * energy + 0.40**2)
    forward = np.sqrt((0.107 * energy) ** 2 + 2.08**2 * energy)
    return np.where(abs_eta <= 1.5, (1.0 + 0.64 * abs_eta**2) * core,
                    np.where(abs_eta <= 2.5, (2.16 + 5.6 * (abs_eta - 2.0) ** 2) * core, forward))


def hcal_sigma(energy: np.ndarray, abs_eta: np.ndarray) -> np.ndarray:
    """Absolute HCAL energy resolution (GeV), CMS card: HCAL to |eta| = 3, the forward calorimeter beyond."""
    central = np.sqrt((0.050 * energy) ** 2 + 1.50**2 * energy)
    forward = np.sqrt((0.130 * energy) ** 2 + 2.70**2 * energy)
    return np.where(abs_eta <= 3.0, central, forward)


def btag_efficiency(flavour: np.ndarray, pt: np.ndarray) -> np.ndarray:
    """Tagging probability of b (5), c (4) and light (0) jets, the CMS card's formulas (arXiv:1211.4462)."""
    b = 0.85 * np.tanh(0.0025 * pt) * (25.0 / (1.0 + 0.063 * pt))
    c = 0.25 * np.tanh(0.018 * pt) / (1.0 + 0.0013 * pt)
    light = 0.01 + 0.000038 * pt
    return np.where(flavour == 5, b, np.where(flavour == 4, c, light))


def jet_energy_scale(pt: np.ndarray, abs_eta: np.ndarray) -> np.ndarray:
    """The CMS card's jet energy scale factor."""
    return np.sqrt((2.5 - 0.15 * abs_eta) ** 2 / np.maximum(pt, 1e-9) + 1.0)


def log_normal(rng: np.random.Generator, mean: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Log-normal draws with the given mean and standard deviation (Delphes' smearing: never negative)."""
    mean = np.maximum(mean, 1e-12)
    s2 = np.log1p((sigma / mean) ** 2)
    return mean * np.exp(np.sqrt(s2) * rng.standard_normal(mean.shape[0]) - 0.5 * s2)


def concat_ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Concatenation of arange(start, stop) for every pair, without a Python loop."""
    lengths = stops - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + (np.arange(total) - offsets)


def _take(table: Table, index: np.ndarray) -> Table:
    return {k: v[index] for k, v in table.items()}


# ----------------------------------------------------------------------------------------------
# the simulation steps


@dataclass
class _Truth:
    """Derived per-particle quantities of the visible input particles."""

    event: np.ndarray
    pid: np.ndarray
    charge: np.ndarray
    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    energy: np.ndarray
    mass2: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    vz: np.ndarray


def _truth(particles: Table) -> _Truth:
    # Invisible: neutrinos, and anything exactly along the beam (pT = 0) that never leaves the beam pipe.
    visible = ~np.isin(np.abs(particles["pid"]), NEUTRINOS) & ((particles["px"] != 0) | (particles["py"] != 0))
    p = _take(particles, np.flatnonzero(visible))
    pt, eta, phi = to_pt_eta_phi(p["px"], p["py"], p["pz"])
    mass2 = np.maximum(p["e"] ** 2 - pt**2 - p["pz"] ** 2, 0.0)
    return _Truth(p["event"], p["pid"], p["charge"], pt, eta, phi, p["e"], mass2, p["vx"], p["vy"], p["vz"])


def _kind(pid: np.ndarray) -> np.ndarray:
    apid = np.abs(pid)
    return np.select([apid == 11, apid == 13], [1, 2], 0)


def _tracks(t: _Truth, rng: np.random.Generator, card: DetectorCard) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the particles found as tracks (in input order) and their smeared pT."""
    abs_eta = np.abs(t.eta)
    candidates = np.flatnonzero((t.charge != 0) & (abs_eta < card.tracker_eta) & (t.pt > card.track_min_pt))
    kind = _kind(t.pid[candidates])
    found = rng.random(candidates.shape[0]) < track_efficiency(kind, t.pt[candidates], abs_eta[candidates])
    idx, kind = candidates[found], kind[found]
    pt = log_normal(rng, t.pt[idx], t.pt[idx] * track_resolution(kind, t.pt[idx], abs_eta[idx]))
    return idx, pt


def _leptons(t: _Truth, tracks: np.ndarray, track_pt: np.ndarray, rng: np.random.Generator,
             card: DetectorCard) -> dict[str, Table]:
    """Electrons and muons among the found tracks, with the card's identification efficiencies. A lepton is
    its track, as in Delphes: the same PT, Eta and Phi (the pipeline subtracts its own track's PT from its
    charged isolation)."""
    apid = np.abs(t.pid[tracks])
    abs_eta = np.abs(t.eta[tracks])
    out = {}
    # (collection, |PID|, acceptance, identification efficiency in the barrel / endcaps), CMS card
    for name, code, max_eta, barrel_eff, endcap_eff in (("Electron", 11, card.electron_eta, 0.95, 0.85),
                                                        ("Muon", 13, card.muon_eta, 0.95, 0.95)):
        cand = np.flatnonzero((apid == code) & (abs_eta < max_eta) & (track_pt > card.lepton_min_pt))
        eff = np.where(abs_eta[cand] <= 1.5, barrel_eff, endcap_eff)
        sel = cand[rng.random(cand.shape[0]) < eff]
        particle = tracks[sel]
        out[name] = {"event": t.event[particle], "PT": track_pt[sel], "Eta": t.eta[particle],
                     "Phi": t.phi[particle], "Charge": t.charge[particle]}
    return out


def calorimeter_position(t: _Truth, card: DetectorCard) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each particle meets the calorimeters: a mask (inside the calorimeters' acceptance), and the
    eta and phi of that point.

    Neutral particles fly straight. A charged particle follows its helix (radius pT / 0.3 B) from the beam
    line (its production vertex neglected) to the barrel (R = 1.29 m) if it gets there before the end of
    the field volume (|z| = 3 m), else to the endcap face, at the radius it has reached there: a particle
    curling up inside the barrel ends there too, far forward. As in Delphes' ParticlePropagator.
    """
    charged = t.charge != 0
    radius = card.calo_radius
    length = card.calo_half_length
    helix = np.where(charged, t.pt / (0.3 * card.b_field), np.inf)  # m
    sinh_eta = np.sinh(t.eta)
    with np.errstate(invalid="ignore", divide="ignore"):
        # Turning angle to reach the barrel radius (a chord of length R), and the z travelled by then.
        turn_barrel = 2.0 * np.arcsin(np.minimum(1.0, radius / (2.0 * helix)))
        z_barrel = np.where(charged, helix * turn_barrel, radius) * sinh_eta
        barrel = (2.0 * helix >= radius) & (np.abs(z_barrel) <= length)
        # Otherwise: the turning angle at |z| = L and the transverse distance from the beam there.
        turn_endcap = np.where(charged, length / (helix * np.abs(sinh_eta)), 0.0)
        rho_endcap = np.where(charged, 2.0 * helix * np.abs(np.sin(turn_endcap / 2.0)), length / np.abs(sinh_eta))
        eta_endcap = np.sign(t.eta) * np.arcsinh(length / rho_endcap)
        eta = np.where(barrel, np.arcsinh(z_barrel / radius), eta_endcap)
    turn = np.where(barrel, turn_barrel, turn_endcap)
    turn = np.where(np.isfinite(turn), turn, 0.0)  # a particle at eta = 0 that curls up never leaves: no cell
    # Positive charges turn clockwise seen from +z (B along +z).
    phi = wrap_phi(t.phi - np.where(charged, t.charge * turn / 2.0, 0.0))
    reach = np.isfinite(eta) & (np.abs(eta) < card.calo_eta)
    return reach, np.where(reach, eta, 0.0), phi


@dataclass(frozen=True)
class Segmentation:
    """Calorimeter cells: (deta x 2 pi / nphi) up to |eta| = forward_eta, coarser forward cells to max_eta.

    A cell is an integer growing with eta (phi within an eta band), as Delphes orders its towers: the
    forward bands of the negative side, the central bands, then the forward bands of the positive side.
    """

    deta: float
    nphi: int
    forward_eta: float
    max_eta: float
    forward_deta: float
    forward_nphi: int

    @property
    def _n_central_eta(self) -> int:
        return int(np.ceil(2.0 * self.forward_eta / self.deta))

    @property
    def _n_forward_eta(self) -> int:  # per side, counted outwards from |eta| = forward_eta
        return int(np.ceil((self.max_eta - self.forward_eta) / self.forward_deta))

    @property
    def _n_side(self) -> int:  # cells of one forward side
        return self._n_forward_eta * self.forward_nphi

    @property
    def n_cells(self) -> int:
        return self._n_central_eta * self.nphi + 2 * self._n_side

    def cell(self, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
        central = np.abs(eta) < self.forward_eta
        ieta = np.clip(((eta + self.forward_eta) / self.deta).astype(np.int64), 0, self._n_central_eta - 1)
        iphi = ((phi + np.pi) / (2.0 * np.pi) * self.nphi).astype(np.int64) % self.nphi
        band = np.minimum(((np.abs(eta) - self.forward_eta) / self.forward_deta).astype(np.int64),
                          self._n_forward_eta - 1)
        fphi = ((phi + np.pi) / (2.0 * np.pi) * self.forward_nphi).astype(np.int64) % self.forward_nphi
        negative = (self._n_forward_eta - 1 - band) * self.forward_nphi + fphi
        positive = self._n_side + self._n_central_eta * self.nphi + band * self.forward_nphi + fphi
        return np.where(central, self._n_side + ieta * self.nphi + iphi, np.where(eta < 0, negative, positive))

    def bounds(self, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Lower eta edge, eta width, lower phi edge and phi width of each cell."""
        n_central = self._n_central_eta * self.nphi
        c = cell - self._n_side
        central = (c >= 0) & (c < n_central)
        negative = c < 0
        f = np.where(negative, cell, c - n_central)  # position within its forward side
        band = f // self.forward_nphi
        forward_low = np.where(negative, -self.forward_eta - (self._n_forward_eta - band) * self.forward_deta,
                               self.forward_eta + band * self.forward_deta)
        eta_lo = np.where(central, -self.forward_eta + (c // self.nphi) * self.deta, forward_low)
        deta = np.where(central, self.deta, self.forward_deta)
        dphi = np.where(central, 2.0 * np.pi / self.nphi, 2.0 * np.pi / self.forward_nphi)
        iphi = np.where(central, c % self.nphi, f % self.forward_nphi)
        return eta_lo, deta, -np.pi + iphi * dphi, dphi


def _energy_flow_towers(
    event: np.ndarray, cell: np.ndarray, energy: np.ndarray, track_event: np.ndarray, track_cell: np.ndarray,
    track_energy: np.ndarray, track_var: np.ndarray, sigma, energy_min: float, significance_min: float,
    segmentation: Segmentation, rng: np.random.Generator,
) -> Table:
    """One calorimeter: deposits summed per cell, smeared, thresholded, tracks subtracted (energy flow).

    Returns the neutral energy-flow objects in cell order per event, as Delphes writes its towers.
    """
    n_cells = segmentation.n_cells
    keys = event * n_cells + cell
    towers, inverse = np.unique(keys, return_inverse=True)
    if towers.shape[0] == 0:
        return {k: np.zeros(0, np.int64 if k == "event" else np.float64) for k in ("event", "ET", "Eta", "Phi", "E")}
    deposit = np.bincount(inverse, energy, towers.shape[0])
    # Tracks pointing at a cell with a deposit (a track's own particle always deposits in that cell).
    tkeys = track_event * n_cells + track_cell
    pos = np.minimum(np.searchsorted(towers, tkeys), towers.shape[0] - 1)
    hit = towers[pos] == tkeys
    tower_tracks = np.bincount(pos[hit], track_energy[hit], towers.shape[0])
    tower_track_var = np.bincount(pos[hit], track_var[hit], towers.shape[0])

    eta_lo, deta, phi_lo, dphi = segmentation.bounds(towers % n_cells)
    centre = np.abs(eta_lo + 0.5 * deta)
    measured = log_normal(rng, deposit, sigma(deposit, centre))
    sig = sigma(measured, centre)  # as Delphes, thresholds on the resolution of the measured energy
    measured = np.where((measured < energy_min) | (measured < significance_min * sig), 0.0, measured)
    neutral = np.maximum(measured - tower_tracks, 0.0)
    significance = neutral / np.sqrt(tower_track_var + sig * sig)
    keep = np.flatnonzero((neutral > energy_min) & (significance > significance_min))
    n = keep.shape[0]
    eta = eta_lo[keep] + deta[keep] * rng.random(n)
    phi = phi_lo[keep] + dphi[keep] * rng.random(n)
    e = neutral[keep]
    return {"event": towers[keep] // n_cells, "ET": e / np.cosh(eta), "Eta": eta, "Phi": phi, "E": e}


def _calorimeters(t: _Truth, position: tuple[np.ndarray, np.ndarray, np.ndarray], tracks: np.ndarray,
                  track_pt: np.ndarray, rng: np.random.Generator, card: DetectorCard) -> tuple[Table, Table]:
    """EFlowPhoton (ECAL) and EFlowNeutralHadron (HCAL) objects."""
    apid = np.abs(t.pid)
    reach, eta_calo, phi_calo = position
    ecal_frac = np.where((apid == 22) | (apid == 11), 1.0, 0.0)
    for code, frac in _SHARED_ECAL_FRACTION.items():
        ecal_frac = np.where(apid == code, frac, ecal_frac)
    hadron = ~np.isin(apid, (11, 13, 22))
    hcal_frac = np.where(hadron, 1.0 - ecal_frac, 0.0)

    # Tracks subtracted from the cell they reach: electrons from ECAL, the others from HCAL (muons deposit
    # nothing, so they subtract from nothing). A track's energy uses its particle's mass, as the deposit does.
    t_reach = reach[tracks]
    t_apid = apid[tracks]
    t_energy = np.sqrt((track_pt * np.cosh(t.eta[tracks])) ** 2 + t.mass2[tracks])
    t_var = (t_energy * track_resolution(_kind(t.pid[tracks]), track_pt, np.abs(t.eta[tracks]))) ** 2
    out = []
    for frac, track_sel, segmentation, sigma, emin, smin in (
        (ecal_frac, t_reach & (t_apid == 11), ecal_segmentation(card), ecal_sigma,
         card.ecal_energy_min, card.ecal_significance_min),
        (hcal_frac, t_reach & (t_apid != 11) & (t_apid != 13), hcal_segmentation(card), hcal_sigma,
         card.hcal_energy_min, card.hcal_significance_min),
    ):
        dep = np.flatnonzero(reach & (frac > 0))
        ts = tracks[track_sel]
        out.append(_energy_flow_towers(
            t.event[dep], segmentation.cell(eta_calo[dep], phi_calo[dep]), t.energy[dep] * frac[dep],
            t.event[ts], segmentation.cell(eta_calo[ts], phi_calo[ts]), t_energy[track_sel],
            t_var[track_sel], sigma, emin, smin, segmentation, rng,
        ))
    return out[0], out[1]


def _forward(card: DetectorCard) -> dict:
    return {"forward_eta": card.forward_eta, "max_eta": card.calo_eta, "forward_deta": card.forward_deta,
            "forward_nphi": card.forward_nphi}


def ecal_segmentation(card: DetectorCard) -> Segmentation:
    return Segmentation(card.ecal_deta, card.ecal_nphi, **_forward(card))


def hcal_segmentation(card: DetectorCard) -> Segmentation:
    return Segmentation(card.hcal_deta, card.hcal_nphi, **_forward(card))


def _rho(event: np.ndarray, pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, n_events: int,
         card: DetectorCard) -> np.ndarray:
    """Median pT density (GeV per unit area) of each event over a grid of cells in |eta| < rho_eta."""
    inside = np.abs(eta) < card.rho_eta
    n_cells = card.rho_cells_eta * card.rho_cells_phi
    ieta = ((eta[inside] + card.rho_eta) / (2 * card.rho_eta) * card.rho_cells_eta).astype(np.int64)
    iphi = ((phi[inside] + np.pi) / (2 * np.pi) * card.rho_cells_phi).astype(np.int64) % card.rho_cells_phi
    keys = event[inside] * n_cells + np.minimum(ieta, card.rho_cells_eta - 1) * card.rho_cells_phi + iphi
    sums = np.bincount(keys, pt[inside], n_events * n_cells).reshape(n_events, n_cells)
    area = (2 * card.rho_eta / card.rho_cells_eta) * (2 * np.pi / card.rho_cells_phi)
    return np.median(sums, axis=1) / area


_FASTJET_READY = False


def _fastjet():
    """The fastjet module, its once-per-process banner kept off stdout (the citation it asks for is in
    docs/physics.md): it is printed by the C++ library at the first clustering, so that one runs on a
    dummy event with file descriptor 1 pointed at /dev/null."""
    global _FASTJET_READY
    import fastjet

    if not _FASTJET_READY:
        sys.stdout.flush()
        saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
            one = ak.Array([[{"px": 1.0, "py": 0.0, "pz": 0.0, "E": 1.0}]])
            fastjet.ClusterSequence(one, fastjet.JetDefinition(fastjet.antikt_algorithm, 0.4)).inclusive_jets()
            ctypes.CDLL(None).fflush(None)  # C stdio buffers go to /dev/null too
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
        _FASTJET_READY = True
    return fastjet


def _jets(flow: Table, n_events: int, hadrons: Table, rng: np.random.Generator, card: DetectorCard) -> Table:
    """anti-kT jets of the energy-flow objects, pileup-subtracted, b-tagged; in descending PT per event."""
    fastjet = _fastjet()
    order = np.argsort(flow["event"], kind="stable")
    f = _take(flow, order)
    counts = np.bincount(f["event"], minlength=n_events)
    px, py, pz = f["pt"] * np.cos(f["phi"]), f["pt"] * np.sin(f["phi"]), f["pt"] * np.sinh(f["eta"])
    energy = f["pt"] * np.cosh(f["eta"])  # massless, as the pipeline treats every object
    vectors = ak.unflatten(ak.zip({"px": px, "py": py, "pz": pz, "E": energy}), counts)
    definition = fastjet.JetDefinition(fastjet.antikt_algorithm, card.jet_radius)
    sequence = fastjet.ClusterSequence(vectors, definition)
    # The energy scale raises a jet's pT by at most ~18 % near the threshold (subtraction only lowers it):
    # cluster from 0.75 of it, so that no jet ending above the threshold is lost.
    raw = sequence.inclusive_jets(min_pt=0.75 * card.jet_min_pt)
    members = sequence.constituent_index(min_pt=0.75 * card.jet_min_pt)
    n_jets = ak.to_numpy(ak.num(raw))
    event = np.repeat(np.arange(n_events), n_jets)
    jx, jy, jz, je = (ak.to_numpy(ak.flatten(raw[c])) for c in ("px", "py", "pz", "E"))
    # Charged constituents: the constituent indices are positions within the event's energy-flow objects.
    n_const = ak.to_numpy(ak.flatten(ak.num(members, axis=-1)))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    member_global = np.repeat(offsets[event], n_const) + ak.to_numpy(ak.flatten(members, axis=None))
    jet_of_member = np.repeat(np.arange(n_const.shape[0]), n_const)
    n_charged = np.bincount(jet_of_member, f["charged"][member_global], n_const.shape[0]).astype(np.int64)

    rho = _rho(f["event"], f["pt"], f["eta"], f["phi"], n_events, card)
    jpt = np.hypot(jx, jy)
    scale = np.maximum(0.0, 1.0 - rho[event] * np.pi * card.jet_radius**2 / np.maximum(jpt, 1e-9))
    jx, jy, jz, je = jx * scale, jy * scale, jz * scale, je * scale
    # The card's jet energy scale, on the subtracted jet (its pT and |eta|).
    _, raw_eta, _ = to_pt_eta_phi(jx, jy, jz)
    scale = jet_energy_scale(jpt * scale, np.abs(raw_eta))
    jx, jy, jz, je = jx * scale, jy * scale, jz * scale, je * scale
    pt, eta, phi = to_pt_eta_phi(jx, jy, jz)
    mass = np.sqrt(np.maximum(je * je - jx * jx - jy * jy - jz * jz, 0.0))
    keep = np.flatnonzero(pt > card.jet_min_pt)
    jets = {"event": event[keep], "PT": pt[keep], "Eta": eta[keep], "Phi": phi[keep], "Mass": mass[keep],
            "NCharged": n_charged[keep], "NNeutrals": (n_const - n_charged)[keep]}
    flavour = _flavour(jets, hadrons, n_events, card)
    eff = np.where(np.abs(jets["Eta"]) < card.tracker_eta, btag_efficiency(flavour, jets["PT"]), 0.0)
    jets["BTag"] = (rng.random(keep.shape[0]) < eff).astype(np.int32)
    order = np.lexsort((-jets["PT"], jets["event"]))
    return _take(jets, order)


def _flavour(jets: Table, hadrons: Table, n_events: int, card: DetectorCard) -> np.ndarray:
    """5 for a jet with a b hadron within btag_match_dr, else 4 with a c hadron, else 0."""
    h = _take(hadrons, np.flatnonzero(hadrons["pt"] > card.heavy_hadron_min_pt))
    order = np.argsort(h["event"], kind="stable")
    h = _take(h, order)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(h["event"], minlength=n_events))])
    n_h = offsets[jets["event"] + 1] - offsets[jets["event"]]
    jet_of_pair = np.repeat(np.arange(jets["PT"].shape[0]), n_h)
    hadron_of_pair = concat_ranges(offsets[jets["event"]], offsets[jets["event"] + 1])
    deta = jets["Eta"][jet_of_pair] - h["eta"][hadron_of_pair]
    dphi = wrap_phi(jets["Phi"][jet_of_pair] - h["phi"][hadron_of_pair])
    close = deta * deta + dphi * dphi < card.btag_match_dr**2
    flavour = np.zeros(jets["PT"].shape[0], np.int64)
    np.maximum.at(flavour, jet_of_pair[close], h["flavour"][hadron_of_pair][close])
    return flavour


def _by_event(table: Table, n_events: int) -> tuple[Table, np.ndarray]:
    order = np.argsort(table["event"], kind="stable")
    return _take(table, order), np.bincount(table["event"], minlength=n_events)


def simulate(particles: Table, hadrons: Table, n_events: int, rng: np.random.Generator,
             card: DetectorCard = CMS, muon_collection: str = "MuonTight") -> EventBatch:
    """Detector response to a batch of events.

    ``particles``: stable particles (hard scatter and pileup) with ``event``, ``pid``, ``charge`` (units of
    e), ``px``/``py``/``pz``/``e`` (GeV) and ``vx``/``vy``/``vz`` (production vertex, mm). ``hadrons``: the
    b and c hadrons of the hard scatter (``event``, ``pt``, ``eta``, ``phi``, ``flavour`` 5 or 4).
    """
    t = _truth(particles)
    tracks, track_pt = _tracks(t, rng, card)
    leptons = _leptons(t, tracks, track_pt, rng, card)
    position = calorimeter_position(t, card)
    photons, neutrals = _calorimeters(t, position, tracks, track_pt, rng, card)
    # EFlowTrack in the order Delphes' HCAL module writes them: by the cell they reach (tracks reaching no
    # cell last), in input order within a cell.
    reach, eta_calo, phi_calo = position
    cell = np.where(reach[tracks], hcal_segmentation(card).cell(eta_calo[tracks], phi_calo[tracks]),
                    np.iinfo(np.int64).max)
    order = np.lexsort((cell, t.event[tracks]))
    tracks, track_pt = tracks[order], track_pt[order]

    track_table = {
        "event": t.event[tracks], "PT": track_pt, "Eta": t.eta[tracks], "Phi": t.phi[tracks],
        "PID": t.pid[tracks], "Charge": t.charge[tracks], "X": t.vx[tracks], "Y": t.vy[tracks], "Z": t.vz[tracks],
    }
    track_table["D0"] = track_table["X"] * np.sin(track_table["Phi"]) - track_table["Y"] * np.cos(track_table["Phi"])
    track_table["DZ"] = track_table["Z"]

    flow = {
        "event": np.concatenate([track_table["event"], photons["event"], neutrals["event"]]),
        "pt": np.concatenate([track_pt, photons["ET"], neutrals["ET"]]),
        "eta": np.concatenate([track_table["Eta"], photons["Eta"], neutrals["Eta"]]),
        "phi": np.concatenate([track_table["Phi"], photons["Phi"], neutrals["Phi"]]),
        "charged": np.concatenate([np.ones(tracks.shape[0], np.int64),
                                   np.zeros(photons["ET"].shape[0] + neutrals["ET"].shape[0], np.int64)]),
    }
    jets = _jets(flow, n_events, hadrons, rng, card)

    mx = -np.bincount(flow["event"], flow["pt"] * np.cos(flow["phi"]), n_events)
    my = -np.bincount(flow["event"], flow["pt"] * np.sin(flow["phi"]), n_events)
    mz = -np.bincount(flow["event"], flow["pt"] * np.sinh(flow["eta"]), n_events)
    met, met_eta, met_phi = to_pt_eta_phi(mx, my, mz)

    collections: dict[str, Table] = {
        "EFlowTrack": track_table, "EFlowPhoton": photons, "EFlowNeutralHadron": neutrals, "Jet": jets,
        "Electron": _by_pt(leptons["Electron"]), muon_collection: _by_pt(leptons["Muon"]),
        "MissingET": {"event": np.arange(n_events), "MET": met, "Eta": met_eta, "Phi": met_phi},
    }
    counts, fields = {}, {}
    for name, table in collections.items():
        grouped, counts[name] = _by_event(table, n_events)
        fields[name] = {k: np.ascontiguousarray(v, dtype=field_dtype(k)) for k, v in grouped.items() if k != "event"}
    return EventBatch(n_events, {k: v.astype(np.int64) for k, v in counts.items()}, fields)


def _by_pt(table: Table) -> Table:
    return _take(table, np.argsort(-table["PT"], kind="stable"))
