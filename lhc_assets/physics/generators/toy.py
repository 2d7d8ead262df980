"""Delphes-format event generator for the three topologies (DESIGN.md section 7).

Pure numpy/awkward; no Dagster, no Spark. Every step works on flat arrays covering a whole batch
of events with an ``event`` index column, so that generating an event costs a handful of numpy
operations over all its particles rather than Python code per particle.

The physics, briefly:

* hard process per class: QCD dijets with a semileptonic heavy-flavour decay in one jet (the lepton
  is mostly non-isolated), W(-> l nu)+jets with the W recoiling against the jets, and ttbar with one
  leptonic and one hadronic top built from t -> W b and W -> l nu / q q' two-body decays;
* initial-state radiation jets in every class, balanced by the hard system;
* partons fragment into collimated sprays of charged hadrons (tracks), photons and neutral hadrons;
  gluon jets are wider and busier than quark jets; b and c hadrons fly before decaying, so part of
  their tracks start at a displaced vertex, and 1 in 5 b decays gives a soft lepton inside the jet;
* pileup: 30-65 extra vertices spread along the beam, each with soft charged and neutral particles,
  many below the pipeline's candidate thresholds;
* every reconstructed electron and muon is also an ``EFlowTrack`` with the same Eta and Phi;
* ``Jet`` is the visible sum of each parton's own particles; ``MissingET`` is minus the vector sum of
  all visible particles, so neutrinos, acceptance losses and pileup all show up in it.

Determinism: the same (seed, sample, file index, events per file) gives identical arrays; events
are produced in fixed-size batches so the stream of random numbers does not depend on how the file
is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from lhc_assets.physics.generators import kinematics as kin
from lhc_assets.physics.generators.events import EventBatch
from lhc_assets.physics.schema import EXTRA_FIELDS, REQUIRED_FIELDS, SAMPLES, field_dtype

# Events per generation batch. Part of the definition of the random stream: changing it changes
# the events a seed produces.
BATCH_EVENTS = 500

# Detector acceptance.
TRACKER_ETA = 2.5
CALO_ETA = 3.0
LEPTON_MIN_PT = 10.0
JET_MIN_PT = 20.0
MIN_PARTICLE_PT = 0.1

# Masses (GeV) and proper decay lengths (mm).
W_MASS, W_WIDTH = 80.38, 2.09
TOP_MASS = 172.5
B_QUARK_MASS = 4.8
B_HADRON_MASS, B_HADRON_CTAU = 5.28, 0.455
D_HADRON_MASS, D_HADRON_CTAU = 1.87, 0.20

# Parton flavours (PDG-like codes).
LIGHT, CHARM, BOTTOM, GLUON = 1, 4, 5, 21

# Pileup per extra vertex: mean multiplicity, negative-binomial shape, spectrum pT = min + Exp(scale).
_PILEUP = {
    "track": (12.0, 3.0, 0.1, 0.55),
    "photon": (9.0, 3.0, 0.2, 0.60),
    "neutral": (6.0, 3.0, 0.3, 0.90),
}
_PILEUP_BALANCE = 0.8  # fraction of the pileup's net pT removed, leaving a realistic MET resolution
_BEAM_SPOT_XY, _BEAM_SPOT_Z = 0.015, 45.0  # mm

Table = dict[str, np.ndarray]
SPEED_OF_LIGHT_MM_PER_NS = 299.792458


# ----------------------------------------------------------------------------------------------
# small table helpers


def _concat(tables: list[Table]) -> Table:
    keys = tables[0].keys()
    return {k: np.concatenate([t[k] for t in tables]) for k in keys}


def _take(table: Table, index: np.ndarray) -> Table:
    return {k: v[index] for k, v in table.items()}


def _power_law(rng: np.random.Generator, n: int, pmin: float, index: float) -> np.ndarray:
    """Samples of dN/dpT ~ pT^-index above pmin."""
    return pmin * rng.random(n) ** (-1.0 / (index - 1.0))


def _random_charge(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.where(rng.random(n) < 0.5, -1, 1).astype(np.int32)


# ----------------------------------------------------------------------------------------------
# hard processes: each returns a parton table and a table of prompt leptons from W decays


def _empty_leptons() -> Table:
    z = np.zeros(0)
    return {"event": np.zeros(0, np.int64), "pt": z, "eta": z, "phi": z, "pid": np.zeros(0, np.int32)}


def _partons(event: np.ndarray, pt, eta, phi, flavour) -> Table:
    n = event.shape[0]
    return {
        "event": event.astype(np.int64),
        "pt": np.asarray(pt, float),
        "eta": np.asarray(eta, float),
        "phi": kin.wrap_phi(np.asarray(phi, float)),
        "flavour": np.broadcast_to(np.asarray(flavour, np.int32), (n,)).copy(),
        "semileptonic": np.zeros(n, bool),
    }


def _isr(rng: np.random.Generator, n_events: int, mean: float, pmin: float, index: float) -> Table:
    """Initial-state radiation jets: mostly gluons, falling pT spectrum."""
    njet = rng.poisson(mean, n_events)
    event = np.repeat(np.arange(n_events), njet)
    n = event.shape[0]
    flavour = np.where(rng.random(n) < 0.7, GLUON, LIGHT)
    flavour = np.where(rng.random(n) < 0.04, CHARM, flavour)
    flavour = np.where(rng.random(n) < 0.015, BOTTOM, flavour)
    return _partons(
        event, _power_law(rng, n, pmin, index), rng.normal(0.0, 1.6, n), rng.uniform(-np.pi, np.pi, n), flavour
    )


def _recoil(partons: Table, n_events: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-event minus the transverse vector sum of a parton table (what the hard system must carry)."""
    px = np.bincount(partons["event"], partons["pt"] * np.cos(partons["phi"]), n_events)
    py = np.bincount(partons["event"], partons["pt"] * np.sin(partons["phi"]), n_events)
    return -px, -py


def _w_lepton_decay(rng, event, energy, px, py, pz) -> tuple[Table, tuple[np.ndarray, ...]]:
    """W -> l nu for W four-vectors given per entry; returns the lepton table and the neutrino."""
    n = event.shape[0]
    mass = kin.invariant_mass(energy, px, py, pz)
    lep, nu = kin.two_body_decay(energy, px, py, pz, mass, 0.0, 0.0, rng)
    pt, eta, phi = kin.to_pt_eta_phi(lep[1], lep[2], lep[3])
    flavour = np.where(rng.random(n) < 0.5, 11, 13)
    charge = _random_charge(rng, n)
    leptons = {"event": event.astype(np.int64), "pt": pt, "eta": eta, "phi": phi,
               "pid": (-charge * flavour).astype(np.int32)}
    return leptons, nu


def _breit_wigner(rng: np.random.Generator, n: int, mass: float, width: float) -> np.ndarray:
    return np.clip(mass + 0.5 * width * np.tan(np.pi * (rng.random(n) - 0.5)), mass - 20.0, mass + 20.0)


def _wjets(rng: np.random.Generator, n: int) -> tuple[Table, Table]:
    jets = _isr(rng, n, mean=2.0, pmin=22.0, index=3.0)
    rx, ry = _recoil(jets, n)
    # The W carries the jets' recoil plus a little intrinsic transverse momentum.
    wpx, wpy = rx + rng.normal(0.0, 5.0, n), ry + rng.normal(0.0, 5.0, n)
    wpt, wphi = np.hypot(wpx, wpy), np.arctan2(wpy, wpx)
    w = kin.from_pt_rapidity_phi_m(wpt, rng.normal(0.0, 1.3, n), wphi, _breit_wigner(rng, n, W_MASS, W_WIDTH))
    leptons, _nu = _w_lepton_decay(rng, np.arange(n), *w)
    return jets, leptons


def _ttbar(rng: np.random.Generator, n: int) -> tuple[Table, Table]:
    isr = _isr(rng, n, mean=0.9, pmin=20.0, index=3.0)
    rx, ry = _recoil(isr, n)
    # Tops back to back in the transverse plane, sharing the ISR recoil.
    ptop = rng.gamma(2.2, 45.0, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    tpx = np.concatenate([ptop * np.cos(phi) + rx / 2, -ptop * np.cos(phi) + rx / 2])
    tpy = np.concatenate([ptop * np.sin(phi) + ry / 2, -ptop * np.sin(phi) + ry / 2])
    tops = kin.from_pt_rapidity_phi_m(
        np.hypot(tpx, tpy), rng.normal(0.0, 1.0, 2 * n), np.arctan2(tpy, tpx), np.full(2 * n, TOP_MASS)
    )
    w_mass = _breit_wigner(rng, 2 * n, W_MASS, W_WIDTH)
    w, b = kin.two_body_decay(*tops, np.full(2 * n, TOP_MASS), w_mass, B_QUARK_MASS, rng)
    event2 = np.concatenate([np.arange(n), np.arange(n)])
    # First half: leptonic top; second half: hadronic top.
    lep_w = tuple(c[:n] for c in w)
    had_w = tuple(c[n:] for c in w)
    leptons, _nu = _w_lepton_decay(rng, np.arange(n), *lep_w)
    q1, q2 = kin.two_body_decay(*had_w, w_mass[n:], 0.0, 0.0, rng)
    bpt, beta, bphi = kin.to_pt_eta_phi(b[1], b[2], b[3])
    q1pt, q1eta, q1phi = kin.to_pt_eta_phi(q1[1], q1[2], q1[3])
    q2pt, q2eta, q2phi = kin.to_pt_eta_phi(q2[1], q2[2], q2[3])
    # W -> c s in half of the hadronic decays.
    q1_flavour = np.where(rng.random(n) < 0.5, CHARM, LIGHT)
    partons = _concat(
        [
            isr,
            _partons(event2, bpt, beta, bphi, BOTTOM),
            _partons(np.arange(n), q1pt, q1eta, q1phi, q1_flavour),
            _partons(np.arange(n), q2pt, q2eta, q2phi, LIGHT),
        ]
    )
    return partons, leptons


def _qcd(rng: np.random.Generator, n: int) -> tuple[Table, Table]:
    isr = _isr(rng, n, mean=1.0, pmin=20.0, index=3.0)
    rx, ry = _recoil(isr, n)
    # Hard dijet with a heavy-flavour jet (lepton-enriched sample: it decays semileptonically).
    pt_hat = _power_law(rng, n, 35.0, 4.2)
    phi = rng.uniform(-np.pi, np.pi, n)
    px = np.concatenate([pt_hat * np.cos(phi) + rx / 2, -pt_hat * np.cos(phi) + rx / 2])
    py = np.concatenate([pt_hat * np.sin(phi) + ry / 2, -pt_hat * np.sin(phi) + ry / 2])
    event2 = np.concatenate([np.arange(n), np.arange(n)])
    hf_flavour = np.where(rng.random(n) < 0.6, BOTTOM, CHARM)
    # The recoiling jet is a b (bb production), a c, a gluon or a light quark.
    u = rng.random(n)
    other = np.where(u < 0.35, hf_flavour, np.where(u < 0.75, GLUON, LIGHT))
    dijet = _partons(
        event2, np.hypot(px, py), rng.normal(0.0, 1.3, 2 * n), np.arctan2(py, px),
        np.concatenate([hf_flavour, other]),
    )
    dijet["semileptonic"][:n] = True
    return _concat([isr, dijet]), _empty_leptons()


_HARD_PROCESS: dict[str, Callable[[np.random.Generator, int], tuple[Table, Table]]] = {
    "qcd": _qcd,
    "ttbar": _ttbar,
    "wjets": _wjets,
}


# ----------------------------------------------------------------------------------------------
# fragmentation, pileup, detector


@dataclass
class _Particles:
    tracks: list[Table]
    photons: list[Table]
    neutrals: list[Table]
    leptons: list[Table]  # reconstructable leptons (also added to tracks)


def _neutral_table(event, pt, eta, phi) -> Table:
    return {"event": event, "pt": pt, "eta": eta, "phi": phi}


def _track_table(event, pt, eta, phi, pid, charge, x, y, z) -> Table:
    return {"event": event, "pt": pt, "eta": eta, "phi": phi, "pid": pid.astype(np.int32),
            "charge": charge.astype(np.int32), "x": x, "y": y, "z": z}


def _hadron_pid(rng: np.random.Generator, charge: np.ndarray) -> np.ndarray:
    u = rng.random(charge.shape[0])
    species = np.where(u < 0.72, 211, np.where(u < 0.90, 321, 2212))
    return species * charge


def _fragment(
    rng: np.random.Generator, partons: Table, pv: np.ndarray, out: _Particles
) -> Table:
    """Turn partons into particles; returns the jets (visible sum of each parton's particles)."""
    n = partons["pt"].shape[0]
    event, pt, eta, phi, flavour = (partons[k] for k in ("event", "pt", "eta", "phi", "flavour"))
    heavy = (flavour == BOTTOM) | (flavour == CHARM)
    gluon = flavour == GLUON

    # Heavy hadrons fly before decaying: one secondary vertex per heavy-flavour parton.
    p = pt * np.cosh(eta)
    had_mass = np.where(flavour == BOTTOM, B_HADRON_MASS, D_HADRON_MASS)
    ctau = np.where(flavour == BOTTOM, B_HADRON_CTAU, D_HADRON_CTAU)
    flight = np.where(heavy, rng.exponential(1.0, n) * ctau * 0.7 * p / had_mass, 0.0)
    ux, uy, uz = np.cos(phi) / np.cosh(eta), np.sin(phi) / np.cosh(eta), np.tanh(eta)
    sv_x, sv_y, sv_z = flight * ux, flight * uy, pv[event] + flight * uz

    # Semileptonic decays: forced for the QCD tag jet, 21 % of other b, 10 % of other c.
    semi = partons["semileptonic"] | (
        ((flavour == BOTTOM) & (rng.random(n) < 0.21)) | ((flavour == CHARM) & (rng.random(n) < 0.10))
    )
    z_lep = np.where(semi, rng.beta(1.5, 3.0, n), 0.0)
    z_nu = np.where(semi, (1.0 - z_lep) * rng.beta(1.2, 3.0, n), 0.0)
    pt_rest = pt * (1.0 - z_lep - z_nu)

    # Constituents: gluon jets have more, softer and wider particles than quark jets.
    mean_n = np.where(gluon, 1.6, 1.0) * (1.5 + 5.0 * np.log(np.maximum(pt_rest, 2.0) / 2.0))
    nconst = 1 + rng.poisson(mean_n)
    owner = np.repeat(np.arange(n), nconst)
    m = owner.shape[0]
    w = rng.standard_gamma(np.where(gluon, 0.9, 0.6)[owner])
    z = w / np.bincount(owner, w, n)[owner]
    cpt = z * pt_rest[owner]
    width = np.where(gluon, 1.25, np.where(heavy, 1.1, 1.0))[owner] * 0.30 / np.sqrt(1.0 + cpt / 3.0)
    ceta = eta[owner] + rng.standard_normal(m) * width
    cphi = kin.wrap_phi(phi[owner] + rng.standard_normal(m) * width)
    cevent = event[owner]

    u = rng.random(m)
    charged = (u < 0.62) & (np.abs(ceta) < TRACKER_ETA)
    photon = (u >= 0.62) & (u < 0.88)
    neutral = ~charged & ~photon  # charged hadrons outside the tracker leave neutral deposits
    visible = (cpt > MIN_PARTICLE_PT) & ((charged) | (np.abs(ceta) < CALO_ETA))

    # Charged particles from a heavy-hadron decay start at the secondary vertex.
    displaced = charged & heavy[owner] & (rng.random(m) < np.where(flavour == BOTTOM, 0.55, 0.40)[owner])
    tsel = charged & visible
    towner = owner[tsel]
    tdisp = displaced[tsel]
    ntr = towner.shape[0]
    charge = _random_charge(rng, ntr)
    bs = rng.normal(0.0, _BEAM_SPOT_XY, (2, ntr))
    out.tracks.append(
        _track_table(
            cevent[tsel], cpt[tsel], ceta[tsel], cphi[tsel], _hadron_pid(rng, charge), charge,
            np.where(tdisp, sv_x[towner], bs[0]), np.where(tdisp, sv_y[towner], bs[1]),
            np.where(tdisp, sv_z[towner], pv[cevent[tsel]]),
        )
    )
    for sel, dest in ((photon & visible, out.photons), (neutral & visible, out.neutrals)):
        dest.append(_neutral_table(cevent[sel], cpt[sel], ceta[sel], cphi[sel]))

    # Leptons from semileptonic decays, close to the jet axis, starting at the secondary vertex.
    li = np.flatnonzero(semi)
    lpt = z_lep[li] * pt[li]
    spread = np.maximum(0.02, 2.0 / np.maximum(pt[li], 1.0))
    leta = eta[li] + rng.standard_normal(li.shape[0]) * spread
    lphi = kin.wrap_phi(phi[li] + rng.standard_normal(li.shape[0]) * spread)
    lcharge = _random_charge(rng, li.shape[0])
    lflav = np.where(rng.random(li.shape[0]) < 0.5, 11, 13)
    lep = {"event": event[li], "pt": lpt, "eta": leta, "phi": lphi, "pid": (-lcharge * lflav).astype(np.int32)}
    lep_vertex = (sv_x[li], sv_y[li], sv_z[li])
    _add_leptons(rng, lep, lep_vertex, out)

    # Jets: visible sum of each parton's own particles (its lepton included).
    in_lep_acc = np.abs(leta) < TRACKER_ETA
    jowner = np.concatenate([owner[visible], li[in_lep_acc]])
    jpt = np.concatenate([cpt[visible], lpt[in_lep_acc]])
    jeta = np.concatenate([ceta[visible], leta[in_lep_acc]])
    jphi = np.concatenate([cphi[visible], lphi[in_lep_acc]])
    e, px, py, pz = kin.from_pt_eta_phi_m(jpt, jeta, jphi)
    sums = [np.bincount(jowner, c, n) for c in (e, px, py, pz)]
    ncharged = np.bincount(owner[tsel], minlength=n) + np.bincount(li[in_lep_acc], minlength=n)
    nneutral = np.bincount(owner[visible & ~charged], minlength=n)
    jet_pt, jet_eta, jet_phi = kin.to_pt_eta_phi(sums[1], sums[2], sums[3])
    tag_eff = np.where(flavour == BOTTOM, 0.70, np.where(flavour == CHARM, 0.20, 0.01))
    return {
        "event": event, "pt": jet_pt, "eta": jet_eta, "phi": jet_phi,
        "mass": kin.invariant_mass(*sums), "btag": (rng.random(n) < tag_eff).astype(np.int32),
        "ncharged": ncharged.astype(np.int32), "nneutral": nneutral.astype(np.int32),
    }


def _add_leptons(rng: np.random.Generator, lep: Table, vertex: tuple[np.ndarray, ...], out: _Particles) -> None:
    """Leptons inside the tracker become tracks; reconstructed ones also enter Electron/MuonTight."""
    acc = (np.abs(lep["eta"]) < TRACKER_ETA) & (lep["pt"] > MIN_PARTICLE_PT)
    lep = _take(lep, acc)
    charge = (-np.sign(lep["pid"])).astype(np.int32)
    out.tracks.append(
        _track_table(lep["event"], lep["pt"], lep["eta"], lep["phi"], lep["pid"], charge,
                     vertex[0][acc], vertex[1][acc], vertex[2][acc])
    )
    efficiency = np.where(np.abs(lep["pid"]) == 11, 0.90, 0.95)
    reco = (lep["pt"] > LEPTON_MIN_PT) & (rng.random(lep["pt"].shape[0]) < efficiency)
    out.leptons.append(_take(lep, reco))


def _pileup(rng: np.random.Generator, n_events: int, out: _Particles) -> None:
    """Soft particles from 30-65 extra vertices per event, partly balanced in the transverse plane."""
    nvtx = rng.poisson(rng.uniform(30.0, 65.0, n_events))
    vtx_offset = np.concatenate([[0], np.cumsum(nvtx)[:-1]])
    vtx_z = rng.normal(0.0, _BEAM_SPOT_Z, int(nvtx.sum()))
    tables: dict[str, Table] = {}
    for kind, (mean, shape, pmin, scale) in _PILEUP.items():
        lam = rng.gamma(np.maximum(nvtx, 1) * shape, mean / shape)
        counts = rng.poisson(np.where(nvtx > 0, lam, 0.0))
        event = np.repeat(np.arange(n_events), counts)
        m = event.shape[0]
        pt = pmin + rng.exponential(scale, m)
        eta_max = TRACKER_ETA if kind == "track" else CALO_ETA
        tables[kind] = {"event": event, "pt": pt, "eta": rng.uniform(-eta_max, eta_max, m),
                        "phi": rng.uniform(-np.pi, np.pi, m)}

    # Remove most of the net pileup pT, spread over the particles in proportion to their pT.
    allp = _concat(list(tables.values()))
    cos, sin = np.cos(allp["phi"]), np.sin(allp["phi"])
    sx = np.bincount(allp["event"], allp["pt"] * cos, n_events)
    sy = np.bincount(allp["event"], allp["pt"] * sin, n_events)
    spt = np.bincount(allp["event"], allp["pt"], n_events)
    kx = _PILEUP_BALANCE * sx / np.maximum(spt, 1e-9)
    ky = _PILEUP_BALANCE * sy / np.maximum(spt, 1e-9)
    start = 0
    for t in tables.values():
        sl = slice(start, start + t["pt"].shape[0])
        start = sl.stop
        px = t["pt"] * (cos[sl] - kx[t["event"]])
        py = t["pt"] * (sin[sl] - ky[t["event"]])
        t["pt"], t["phi"] = np.hypot(px, py), np.arctan2(py, px)

    tr = tables["track"]
    m = tr["pt"].shape[0]
    charge = _random_charge(rng, m)
    vidx = vtx_offset[tr["event"]] + (rng.random(m) * np.maximum(nvtx[tr["event"]], 1)).astype(np.int64)
    vidx = np.minimum(vidx, max(vtx_z.shape[0] - 1, 0))
    z = vtx_z[vidx] if vtx_z.shape[0] else np.zeros(m)
    bs = rng.normal(0.0, _BEAM_SPOT_XY, (2, m))
    out.tracks.append(_track_table(tr["event"], tr["pt"], tr["eta"], tr["phi"],
                                   _hadron_pid(rng, charge), charge, bs[0], bs[1], z))
    out.photons.append(tables["photon"])
    out.neutrals.append(tables["neutral"])


def _group(table: Table, n_events: int) -> tuple[Table, np.ndarray]:
    """Group a flat table by event, keeping the order of rows within an event; returns counts too.

    A stable sort on 16-bit keys is a radix sort in numpy, linear in the number of particles.
    """
    order = np.argsort(table["event"].astype(np.int16), kind="stable")
    return _take(table, order), np.bincount(table["event"], minlength=n_events)


def _by_pt(table: Table) -> Table:
    """Rows in descending PT order (grouping afterwards keeps it within each event)."""
    return _take(table, np.argsort(-table["pt"], kind="stable"))


def generate_batch(sample: str, n_events: int, rng: np.random.Generator) -> EventBatch:
    """Generate ``n_events`` events of one sample (``qcd``, ``ttbar`` or ``wjets``)."""
    if sample not in SAMPLES:
        raise ValueError(f"unknown sample {sample!r}; expected one of {sorted(SAMPLES)}")
    partons, w_leptons = _HARD_PROCESS[sample](rng, n_events)
    pv = rng.normal(0.0, _BEAM_SPOT_Z, n_events)  # hard-scatter vertex z
    out = _Particles([], [], [], [])
    wl = w_leptons["event"].shape[0]
    _add_leptons(rng, w_leptons, (rng.normal(0, _BEAM_SPOT_XY, wl), rng.normal(0, _BEAM_SPOT_XY, wl),
                                  pv[w_leptons["event"]]), out)
    jets = _fragment(rng, partons, pv, out)
    _pileup(rng, n_events, out)

    tracks, photons, neutrals = _concat(out.tracks), _concat(out.photons), _concat(out.neutrals)
    leptons = _concat(out.leptons)

    # MissingET: minus the vector sum of everything visible.
    mx = np.zeros(n_events)
    my = np.zeros(n_events)
    for t in (tracks, photons, neutrals):
        mx -= np.bincount(t["event"], t["pt"] * np.cos(t["phi"]), n_events)
        my -= np.bincount(t["event"], t["pt"] * np.sin(t["phi"]), n_events)

    # Stored order as Delphes writes it after merging pileup: particle-flow candidates of the hard
    # scatter first (leptons, then jets parton by parton), pileup after them; physics objects by PT.
    tracks, n_tracks = _group(tracks, n_events)
    photons, n_photons = _group(photons, n_events)
    neutrals, n_neutrals = _group(neutrals, n_events)
    jets, n_jets = _group(_by_pt(_take(jets, jets["pt"] > JET_MIN_PT)), n_events)
    leptons = _by_pt(leptons)
    is_ele = np.abs(leptons["pid"]) == 11
    electrons, n_ele = _group(_take(leptons, is_ele), n_events)
    muons, n_mu = _group(_take(leptons, ~is_ele), n_events)

    d0 = tracks["x"] * np.sin(tracks["phi"]) - tracks["y"] * np.cos(tracks["phi"])
    fields = {
        "EFlowTrack": {
            "PT": tracks["pt"], "Eta": tracks["eta"], "Phi": tracks["phi"], "PID": tracks["pid"],
            "Charge": tracks["charge"], "X": tracks["x"], "Y": tracks["y"], "Z": tracks["z"],
            "D0": d0, "DZ": tracks["z"], "T": tracks["z"] / SPEED_OF_LIGHT_MM_PER_NS,
        },
        "EFlowPhoton": {
            "ET": photons["pt"], "Eta": photons["eta"], "Phi": photons["phi"],
            "E": photons["pt"] * np.cosh(photons["eta"]), "EhadOverEem": np.zeros(photons["pt"].shape[0]),
        },
        "EFlowNeutralHadron": {
            "ET": neutrals["pt"], "Eta": neutrals["eta"], "Phi": neutrals["phi"],
            "E": neutrals["pt"] * np.cosh(neutrals["eta"]),
            "EhadOverEem": np.full(neutrals["pt"].shape[0], 20.0),
        },
        "Electron": {
            "PT": electrons["pt"], "Eta": electrons["eta"], "Phi": electrons["phi"],
            "Charge": -np.sign(electrons["pid"]), "EhadOverEem": np.zeros(electrons["pt"].shape[0]),
            "IsolationVar": np.zeros(electrons["pt"].shape[0]),
        },
        "MuonTight": {
            "PT": muons["pt"], "Eta": muons["eta"], "Phi": muons["phi"],
            "Charge": -np.sign(muons["pid"]), "IsolationVar": np.zeros(muons["pt"].shape[0]),
        },
        "MissingET": {"MET": np.hypot(mx, my), "Phi": np.arctan2(my, mx), "Eta": np.zeros(n_events)},
        "Jet": {
            "PT": jets["pt"], "Eta": jets["eta"], "Phi": jets["phi"], "BTag": jets["btag"],
            "Mass": jets["mass"], "TauTag": np.zeros(jets["pt"].shape[0]),
            "NCharged": jets["ncharged"], "NNeutrals": jets["nneutral"],
        },
    }
    counts = {
        "EFlowTrack": n_tracks, "EFlowPhoton": n_photons, "EFlowNeutralHadron": n_neutrals,
        "Electron": n_ele, "MuonTight": n_mu, "MissingET": np.ones(n_events, np.int64), "Jet": n_jets,
    }
    typed = {
        coll: {
            f: np.ascontiguousarray(fields[coll][f], dtype=field_dtype(f))
            for f in (*REQUIRED_FIELDS[coll], *EXTRA_FIELDS[coll])
        }
        for coll in REQUIRED_FIELDS
    }
    return EventBatch(n_events, {k: v.astype(np.int64) for k, v in counts.items()}, typed)


def file_rng(seed: int, sample: str, file_index: int) -> np.random.Generator:
    """The random stream of one output file: independent per (seed, sample, file index)."""
    return np.random.default_rng(np.random.SeedSequence([seed, SAMPLES[sample], file_index]))


def generate_file_batches(
    sample: str, n_events: int, seed: int, file_index: int
) -> Iterator[EventBatch]:
    """All events of one file, in fixed-size batches (see ``BATCH_EVENTS``)."""
    rng = file_rng(seed, sample, file_index)
    done = 0
    while done < n_events:
        size = min(BATCH_EVENTS, n_events - done)
        yield generate_batch(sample, size, rng)
        done += size
