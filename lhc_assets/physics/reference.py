"""Plain, readable per-event reference of the selection and features of DESIGN.md section 4.

Slow on purpose: one event at a time, written to be checked by eye against the design. The fast
vectorized kernels are tested against it. An event is a mapping from branch name
(``"EFlowTrack.PT"``, ...) to that event's 1-D numpy array.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from lhc_assets.physics import schema as S

Event = Mapping[str, np.ndarray]


def delta_phi(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """a - b wrapped into [-pi, pi]."""
    return (np.asarray(a) - b + np.pi) % (2 * np.pi) - np.pi


def delta_r(eta1, phi1, eta2, phi2) -> np.ndarray:
    return np.sqrt((np.asarray(eta1) - eta2) ** 2 + delta_phi(phi1, phi2) ** 2)


@dataclass(frozen=True)
class Candidates:
    """The three candidate lists used for isolation and for the particle list."""

    track_idx: np.ndarray  # indices into EFlowTrack of tracks with PT > 0.5 GeV, stored order
    photon_idx: np.ndarray
    neutral_idx: np.ndarray


def candidates(ev: Event) -> Candidates:
    return Candidates(
        np.flatnonzero(ev["EFlowTrack.PT"] > S.TRACK_MIN_PT),
        np.flatnonzero(ev["EFlowPhoton.ET"] > S.PHOTON_MIN_ET),
        np.flatnonzero(ev["EFlowNeutralHadron.ET"] > S.NEUTRAL_MIN_ET),
    )


def cone_sum(eta: float, phi: float, list_eta, list_phi, list_pt) -> float:
    """Sum of pT of list members within dR < 0.3 of (eta, phi)."""
    inside = delta_r(eta, phi, list_eta, list_phi) < S.ISOLATION_CONE
    return float(np.sum(np.asarray(list_pt, dtype=np.float64)[inside]))


def isolation(
    ev: Event, cand: Candidates, pt: float, eta: float, phi: float, charged: bool
) -> tuple[float, float, float]:
    """(ChPFIso, GammaPFIso, NeuPFIso) of one particle."""
    ch = cone_sum(eta, phi, ev["EFlowTrack.Eta"][cand.track_idx], ev["EFlowTrack.Phi"][cand.track_idx],
                  ev["EFlowTrack.PT"][cand.track_idx]) / pt
    if charged:
        ch -= 1.0  # the particle's own track is in the track list
    gamma = cone_sum(eta, phi, ev["EFlowPhoton.Eta"][cand.photon_idx], ev["EFlowPhoton.Phi"][cand.photon_idx],
                     ev["EFlowPhoton.ET"][cand.photon_idx]) / pt
    neu = cone_sum(eta, phi, ev["EFlowNeutralHadron.Eta"][cand.neutral_idx],
                   ev["EFlowNeutralHadron.Phi"][cand.neutral_idx], ev["EFlowNeutralHadron.ET"][cand.neutral_idx]) / pt
    return ch, gamma, neu


@dataclass(frozen=True)
class Lepton:
    pt: float
    eta: float
    phi: float
    charge: float
    is_electron: bool
    iso: tuple[float, float, float]


def select_lepton(ev: Event, cand: Candidates) -> tuple[Lepton | None, str | None]:
    """The highest-PT isolated electron or tight muon with PT > 23 GeV, or the reason there is none."""
    best: Lepton | None = None
    any_above_pt = False
    for coll, is_ele in (("Electron", True), ("MuonTight", False)):
        for i in range(len(ev[f"{coll}.PT"])):
            pt = float(ev[f"{coll}.PT"][i])
            if not pt > S.LEPTON_MIN_PT:
                continue
            any_above_pt = True
            eta, phi = float(ev[f"{coll}.Eta"][i]), float(ev[f"{coll}.Phi"][i])
            iso = isolation(ev, cand, pt, eta, phi, charged=True)
            if sum(iso) < S.LEPTON_MAX_ISO and (best is None or pt > best.pt):
                best = Lepton(pt, eta, phi, float(ev[f"{coll}.Charge"][i]), is_ele, iso)
    if best is not None:
        return best, None
    return None, (S.DROP_NOT_ISOLATED if any_above_pt else S.DROP_NO_LEPTON)


def hlf(ev: Event, lep: Lepton) -> np.ndarray:
    """The 14 high-level features, float32, in ``schema.HLF_COLUMNS`` order."""
    jet_pt, jet_eta = ev["Jet.PT"], ev["Jet.Eta"]
    good = (jet_pt > S.JET_MIN_PT) & (np.abs(jet_eta) < S.JET_MAX_ABS_ETA)
    ht = float(np.sum(jet_pt[good], dtype=np.float64))
    n_jets = int(np.sum(good))
    n_bjets = int(np.sum(good & (ev["Jet.BTag"] > 0)))
    met, phi_met = float(ev["MissingET.MET"][0]), float(ev["MissingET.Phi"][0])
    mt = np.sqrt(2.0 * met * lep.pt * (1.0 - np.cos(lep.phi - phi_met)))
    return np.array(
        [ht, met, phi_met, mt, n_jets, n_bjets, lep.pt, lep.eta, lep.phi, *lep.iso, lep.charge,
         1.0 if lep.is_electron else 0.0],
        dtype=np.float32,
    )


def _row(pt, eta, phi, vtx, iso, flags, charge) -> list[float]:
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    energy = np.sqrt(px**2 + py**2 + pz**2)
    return [energy, px, py, pz, pt, eta, phi, *vtx, *iso, *flags, charge]


def llf(ev: Event, cand: Candidates, lep: Lepton) -> np.ndarray:
    """The 801 x 19 particle list, float32, columns in ``schema.LLF_COLUMNS`` order."""
    rows = [_row(lep.pt, lep.eta, lep.phi, (0.0, 0.0, 0.0), lep.iso,
                 (0, 0, 0, 1 if lep.is_electron else 0, 0 if lep.is_electron else 1), lep.charge)]
    n_tracks = 0
    for i in cand.track_idx:
        if n_tracks == S.MAX_TRACKS:
            break
        pt, eta, phi = (float(ev[f"EFlowTrack.{f}"][i]) for f in ("PT", "Eta", "Phi"))
        if delta_r(eta, phi, lep.eta, lep.phi) < S.OWN_TRACK_DR:
            continue  # the selected lepton's own track
        pid = abs(int(ev["EFlowTrack.PID"][i]))
        flags = (0 if pid in (11, 13) else 1, 0, 0, 1 if pid == 11 else 0, 1 if pid == 13 else 0)
        vtx = tuple(float(ev[f"EFlowTrack.{f}"][i]) for f in ("X", "Y", "Z"))
        rows.append(_row(pt, eta, phi, vtx, isolation(ev, cand, pt, eta, phi, True), flags,
                         float(ev["EFlowTrack.Charge"][i])))
        n_tracks += 1
    for coll, idx, cap, flags in (
        ("EFlowPhoton", cand.photon_idx, S.MAX_PHOTONS, (0, 0, 1, 0, 0)),
        ("EFlowNeutralHadron", cand.neutral_idx, S.MAX_NEUTRALS, (0, 1, 0, 0, 0)),
    ):
        for i in idx[:cap]:
            pt, eta, phi = (float(ev[f"{coll}.{f}"][i]) for f in ("ET", "Eta", "Phi"))
            rows.append(_row(pt, eta, phi, (0.0, 0.0, 0.0), isolation(ev, cand, pt, eta, phi, False), flags, 0.0))
    out = np.zeros((S.LLF_ROWS, len(S.LLF_COLUMNS)), dtype=np.float32)
    out[: len(rows)] = np.asarray(rows, dtype=np.float64)
    return out


@dataclass(frozen=True)
class EventFeatures:
    selected: bool
    drop_reason: str | None
    hlf: np.ndarray | None
    llf: np.ndarray | None


def process_event(ev: Event, with_llf: bool = True) -> EventFeatures:
    """Selection, HLF and (optionally) LLF of one event."""
    cand = candidates(ev)
    lep, reason = select_lepton(ev, cand)
    if lep is None:
        return EventFeatures(False, reason, None, None)
    return EventFeatures(True, None, hlf(ev, lep), llf(ev, cand, lep) if with_llf else None)
