"""Fast selection, isolation, HLF and LLF kernels (DESIGN.md section 4) over Arrow record batches.

Pure numpy + numba: no Spark, no Dagster. Spark calls ``hlf_table`` / ``llf_table`` from
``mapInArrow``; tests compare them with ``reference.py`` event by event.

Events are processed as flat arrays plus per-event offsets (the Arrow layout, no copies). The only
loops are numba-compiled. Isolation sums use a per-event eta-phi grid of cells at least as large as
the cone, so each particle looks at the candidates of 3 x 3 cells instead of all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa

from lhc_assets.physics import schema as S
from lhc_assets.physics.delphes_reader import IDENTITY_FIELDS
from lhc_assets.physics.llf_format import LLF_FIELD, encode_llf, llf_matrix, llf_rows  # noqa: F401 (re-exported)

_TWO_PI = 2.0 * np.pi
# Cells a bit wider than the cone so float rounding at a cell edge can never hide a neighbour.
_ETA_CELL = S.ISOLATION_CONE * (1.0 + 1e-6)
_N_PHI_CELLS = int(_TWO_PI / (S.ISOLATION_CONE * (1.0 + 1e-6)))  # 20 cells of 0.314 rad
_PHI_CELL = _TWO_PI / _N_PHI_CELLS

REASON_SELECTED, REASON_NO_LEPTON, REASON_NOT_ISOLATED = 0, 1, 2
REASON_NAMES = {REASON_NO_LEPTON: S.DROP_NO_LEPTON, REASON_NOT_ISOLATED: S.DROP_NOT_ISOLATED}


@numba.njit(cache=True, inline="always")
def _dphi(a, b):
    return (a - b + np.pi) % _TWO_PI - np.pi


@numba.njit(cache=True, inline="always")
def _dr(eta1, phi1, eta2, phi2):
    de = eta1 - eta2
    dp = _dphi(phi1, phi2)
    return np.sqrt(de * de + dp * dp)


@numba.njit(cache=True)
def _cone_sums_brute(eta, phi, c_eta, c_phi, c_pt, c_kind, lo, hi, out):
    """Per-kind sums of candidate pT within the cone of (eta, phi), candidates [lo, hi)."""
    out[0] = 0.0
    out[1] = 0.0
    out[2] = 0.0
    for j in range(lo, hi):
        if _dr(eta, phi, c_eta[j], c_phi[j]) < S.ISOLATION_CONE:
            out[c_kind[j]] += c_pt[j]


@numba.njit(cache=True, inline="always")
def _append_candidates(n, lo, hi, pt, eta, phi, threshold, kind, c_eta, c_phi, c_pt, c_kind, c_src):
    for i in range(lo, hi):
        if pt[i] > threshold:
            c_eta[n] = eta[i]
            c_phi[n] = phi[i]
            c_pt[n] = pt[i]
            c_kind[n] = kind
            c_src[n] = i
            n += 1
    return n


@numba.njit(cache=True)
def _gather_candidates(e, trk_off, trk_pt, trk_eta, trk_phi, ph_off, ph_et, ph_eta, ph_phi,
                       nh_off, nh_et, nh_eta, nh_phi, c_eta, c_phi, c_pt, c_kind, c_src):
    """Candidates of event e (tracks, then photons, then neutral hadrons above threshold, each in
    stored order) into scratch arrays; returns how many."""
    n = _append_candidates(0, trk_off[e], trk_off[e + 1], trk_pt, trk_eta, trk_phi, S.TRACK_MIN_PT, 0,
                           c_eta, c_phi, c_pt, c_kind, c_src)
    n = _append_candidates(n, ph_off[e], ph_off[e + 1], ph_et, ph_eta, ph_phi, S.PHOTON_MIN_ET, 1,
                           c_eta, c_phi, c_pt, c_kind, c_src)
    return _append_candidates(n, nh_off[e], nh_off[e + 1], nh_et, nh_eta, nh_phi, S.NEUTRAL_MIN_ET, 2,
                              c_eta, c_phi, c_pt, c_kind, c_src)


@numba.njit(cache=True)
def _consider_leptons(e, off, pt, eta, phi, q, is_ele, c_eta, c_phi, c_pt, c_kind, n_c, sums, lep, best_pt):
    """Update the best isolated lepton of event e from one collection; returns (best_pt, any above PT)."""
    any_above = False
    for i in range(off[e], off[e + 1]):
        if not pt[i] > S.LEPTON_MIN_PT:
            continue
        any_above = True
        lpt = np.float64(pt[i])
        _cone_sums_brute(np.float64(eta[i]), np.float64(phi[i]), c_eta, c_phi, c_pt, c_kind, 0, n_c, sums)
        ich = sums[0] / lpt - 1.0
        ig = sums[1] / lpt
        ineu = sums[2] / lpt
        if ich + ig + ineu < S.LEPTON_MAX_ISO and lpt > best_pt:
            best_pt = lpt
            lep[e, 0] = lpt
            lep[e, 1] = eta[i]
            lep[e, 2] = phi[i]
            lep[e, 3] = q[i]
            lep[e, 4] = is_ele
            lep[e, 5] = ich
            lep[e, 6] = ig
            lep[e, 7] = ineu
    return best_pt, any_above


@numba.njit(cache=True)
def _has_lepton_above(e, off, pt):
    for i in range(off[e], off[e + 1]):  # noqa: SIM110 (numba compiles loops, not generators)
        if pt[i] > S.LEPTON_MIN_PT:
            return True
    return False


@numba.njit(cache=True)
def _select(trk_off, trk_pt, trk_eta, trk_phi, ph_off, ph_et, ph_eta, ph_phi, nh_off, nh_et, nh_eta, nh_phi,
            el_off, el_pt, el_eta, el_phi, el_q, mu_off, mu_pt, mu_eta, mu_phi, mu_q):
    """Lepton selection per event. Returns reason codes and the selected lepton's properties."""
    n_ev = trk_off.shape[0] - 1
    reason = np.empty(n_ev, np.int8)
    lep = np.zeros((n_ev, 8))  # pt, eta, phi, charge, is_ele, iso_ch, iso_gamma, iso_neu
    max_c = 1
    for e in range(n_ev):
        m = (trk_off[e + 1] - trk_off[e]) + (ph_off[e + 1] - ph_off[e]) + (nh_off[e + 1] - nh_off[e])
        max_c = max(max_c, m)
    c_eta = np.empty(max_c)
    c_phi = np.empty(max_c)
    c_pt = np.empty(max_c)
    c_kind = np.empty(max_c, np.int64)
    c_src = np.empty(max_c, np.int64)
    sums = np.empty(3)
    for e in range(n_ev):
        if not (_has_lepton_above(e, el_off, el_pt) or _has_lepton_above(e, mu_off, mu_pt)):
            reason[e] = REASON_NO_LEPTON
            continue
        n_c = _gather_candidates(e, trk_off, trk_pt, trk_eta, trk_phi, ph_off, ph_et, ph_eta, ph_phi,
                                 nh_off, nh_et, nh_eta, nh_phi, c_eta, c_phi, c_pt, c_kind, c_src)
        best_pt, _ = _consider_leptons(e, el_off, el_pt, el_eta, el_phi, el_q, 1.0,
                                       c_eta, c_phi, c_pt, c_kind, n_c, sums, lep, -1.0)
        best_pt, _ = _consider_leptons(e, mu_off, mu_pt, mu_eta, mu_phi, mu_q, 0.0,
                                       c_eta, c_phi, c_pt, c_kind, n_c, sums, lep, best_pt)
        reason[e] = REASON_SELECTED if best_pt > 0 else REASON_NOT_ISOLATED
    return reason, lep


@numba.njit(cache=True)
def _jets(jet_off, jet_pt, jet_eta, jet_btag):
    n_ev = jet_off.shape[0] - 1
    out = np.zeros((n_ev, 3))  # HT, nJets, nBjets
    for e in range(n_ev):
        for i in range(jet_off[e], jet_off[e + 1]):
            if jet_pt[i] > S.JET_MIN_PT and abs(jet_eta[i]) < S.JET_MAX_ABS_ETA:
                out[e, 0] += jet_pt[i]
                out[e, 1] += 1.0
                if jet_btag[i] > 0:
                    out[e, 2] += 1.0
    return out


@numba.njit(cache=True)
def _count_rows(sel, lep, trk_off, trk_pt, trk_eta, trk_phi, ph_off, ph_et, nh_off, nh_et):
    """Rows of each selected event's particle list, and the largest particle count of any event."""
    n_sel = sel.shape[0]
    counts = np.zeros(n_sel, np.int64)
    max_c = 1
    for k in range(n_sel):
        e = sel[k]
        leta, lphi = lep[e, 1], lep[e, 2]
        nt = 0
        for i in range(trk_off[e], trk_off[e + 1]):
            if nt == S.MAX_TRACKS:
                break
            if trk_pt[i] > S.TRACK_MIN_PT and not _dr(trk_eta[i], trk_phi[i], leta, lphi) < S.OWN_TRACK_DR:
                nt += 1
        npho = 0
        for i in range(ph_off[e], ph_off[e + 1]):
            if ph_et[i] > S.PHOTON_MIN_ET:
                npho += 1
        nneu = 0
        for i in range(nh_off[e], nh_off[e + 1]):
            if nh_et[i] > S.NEUTRAL_MIN_ET:
                nneu += 1
        counts[k] = 1 + nt + min(npho, S.MAX_PHOTONS) + min(nneu, S.MAX_NEUTRALS)
        m = (trk_off[e + 1] - trk_off[e]) + (ph_off[e + 1] - ph_off[e]) + (nh_off[e + 1] - nh_off[e])
        max_c = max(max_c, m)
    return counts, max_c


@numba.njit(cache=True)
def _candidate_isolation(n_c, c_eta, c_phi, c_pt, c_kind, iso, cell_of, order, cell_start):
    """Cone sums per kind for every candidate against every candidate (itself included).

    dR is symmetric, so each pair is visited once: a cell is paired with itself and with the four
    neighbouring cells ahead of it (same eta row, next phi; next eta row, three phi cells).
    """
    eta_min = c_eta[0]
    eta_max = c_eta[0]
    for j in range(n_c):
        eta_min = min(eta_min, c_eta[j])
        eta_max = max(eta_max, c_eta[j])
    n_eta = int((eta_max - eta_min) / _ETA_CELL) + 1
    n_cells = n_eta * _N_PHI_CELLS
    if cell_start.shape[0] < n_cells + 1:
        cell_start = np.zeros(n_cells + 1, np.int64)
    cell_start[: n_cells + 1] = 0
    for j in range(n_c):
        ie = int((c_eta[j] - eta_min) / _ETA_CELL)
        ip = min(max(int((c_phi[j] + np.pi) / _PHI_CELL), 0), _N_PHI_CELLS - 1)
        cell_of[j] = ie * _N_PHI_CELLS + ip
        cell_start[cell_of[j] + 1] += 1
    for c in range(n_cells):
        cell_start[c + 1] += cell_start[c]
    for j in range(n_c):  # counting sort: order[pos] = candidate
        c = cell_of[j]
        order[cell_start[c]] = j
        cell_start[c] += 1
    for c in range(n_cells, 0, -1):  # restore the starts
        cell_start[c] = cell_start[c - 1]
    cell_start[0] = 0
    iso[:n_c, :] = 0.0
    cone2 = S.ISOLATION_CONE * S.ISOLATION_CONE
    for c in range(n_cells):
        ie = c // _N_PHI_CELLS
        ip = c - ie * _N_PHI_CELLS
        for a in range(cell_start[c], cell_start[c + 1]):
            ja = order[a]
            iso[ja, c_kind[ja]] += c_pt[ja]
            ea, pa_ = c_eta[ja], c_phi[ja]
            for nb in range(5):
                if nb == 0:
                    c2, first = c, a + 1
                else:
                    if nb == 1:
                        ie2, ip2 = ie, ip + 1
                    else:
                        ie2, ip2 = ie + 1, ip + nb - 3
                    if ie2 >= n_eta:
                        continue
                    if ip2 < 0:
                        ip2 += _N_PHI_CELLS
                    elif ip2 >= _N_PHI_CELLS:
                        ip2 -= _N_PHI_CELLS
                    c2 = ie2 * _N_PHI_CELLS + ip2
                    first = cell_start[c2]
                for b in range(first, cell_start[c2 + 1]):
                    jb = order[b]
                    de = ea - c_eta[jb]
                    if de * de >= cone2:
                        continue
                    d = pa_ - c_phi[jb]  # both in [-pi, pi]: one correction wraps the difference
                    if d > np.pi:
                        d -= _TWO_PI
                    elif d < -np.pi:
                        d += _TWO_PI
                    if de * de + d * d < cone2:
                        iso[ja, c_kind[jb]] += c_pt[jb]
                        iso[jb, c_kind[ja]] += c_pt[ja]
    return cell_start


@numba.njit(cache=True)
def _llf_rows(sel, lep, trk_off, trk_pt, trk_eta, trk_phi, trk_pid, trk_q, trk_x, trk_y, trk_z,
              ph_off, ph_et, ph_eta, ph_phi, nh_off, nh_et, nh_eta, nh_phi):
    """Particle lists of the selected events ``sel``: (rows per event, rows as float32 [n, 19])."""
    counts, max_c = _count_rows(sel, lep, trk_off, trk_pt, trk_eta, trk_phi, ph_off, ph_et, nh_off, nh_et)
    rows = np.zeros((counts.sum(), 19), np.float32)
    c_eta = np.empty(max_c)
    c_phi = np.empty(max_c)
    c_pt = np.empty(max_c)
    c_kind = np.empty(max_c, np.int64)
    c_src = np.empty(max_c, np.int64)
    cell_of = np.empty(max_c, np.int64)
    order = np.empty(max_c, np.int64)
    iso = np.empty((max_c, 3))
    cell_start = np.zeros(1024, np.int64)
    r = 0
    for k in range(sel.shape[0]):
        e = sel[k]
        n_c = _gather_candidates(e, trk_off, trk_pt, trk_eta, trk_phi, ph_off, ph_et, ph_eta, ph_phi,
                                 nh_off, nh_et, nh_eta, nh_phi, c_eta, c_phi, c_pt, c_kind, c_src)
        if n_c > 0:
            cell_start = _candidate_isolation(n_c, c_eta, c_phi, c_pt, c_kind, iso, cell_of, order, cell_start)
        leta, lphi = lep[e, 1], lep[e, 2]
        end = r + counts[k]
        # Row 0: the selected lepton (its isolation was computed by the selection).
        _fill_row(rows, r, lep[e, 0], leta, lphi, 0.0, 0.0, 0.0, lep[e, 5], lep[e, 6], lep[e, 7],
                  0.0, 0.0, 0.0, lep[e, 4], 1.0 - lep[e, 4], lep[e, 3])
        r += 1
        # Candidates were gathered as tracks, then photons, then neutral hadrons, each in stored order.
        nt = 0
        j = 0
        while j < n_c and c_kind[j] == 0 and nt < S.MAX_TRACKS:
            i = c_src[j]
            if not _dr(trk_eta[i], trk_phi[i], leta, lphi) < S.OWN_TRACK_DR:
                pt = c_pt[j]
                apid = abs(trk_pid[i])
                is_e = 1.0 if apid == 11 else 0.0
                is_m = 1.0 if apid == 13 else 0.0
                _fill_row(rows, r, pt, c_eta[j], c_phi[j], trk_x[i], trk_y[i], trk_z[i],
                          iso[j, 0] / pt - 1.0, iso[j, 1] / pt, iso[j, 2] / pt,
                          1.0 - is_e - is_m, 0.0, 0.0, is_e, is_m, trk_q[i])
                r += 1
                nt += 1
            j += 1
        while j < n_c and c_kind[j] == 0:
            j += 1
        for kind, cap in ((1, S.MAX_PHOTONS), (2, S.MAX_NEUTRALS)):
            taken = 0
            while j < n_c and c_kind[j] == kind:
                if taken < cap:
                    pt = c_pt[j]
                    _fill_row(rows, r, pt, c_eta[j], c_phi[j], 0.0, 0.0, 0.0,
                              iso[j, 0] / pt, iso[j, 1] / pt, iso[j, 2] / pt,
                              0.0, 1.0 if kind == 2 else 0.0, 1.0 if kind == 1 else 0.0, 0.0, 0.0, 0.0)
                    r += 1
                    taken += 1
                j += 1
        assert r == end
    return counts, rows


@numba.njit(cache=True, inline="always")
def _fill_row(rows, r, pt, eta, phi, x, y, z, iso_ch, iso_g, iso_n, f_ch, f_neu, f_gam, f_e, f_m, charge):
    px = pt * np.cos(phi)
    py = pt * np.sin(phi)
    pz = pt * np.sinh(eta)
    rows[r, 0] = np.sqrt(px * px + py * py + pz * pz)
    rows[r, 1] = px
    rows[r, 2] = py
    rows[r, 3] = pz
    rows[r, 4] = pt
    rows[r, 5] = eta
    rows[r, 6] = phi
    rows[r, 7] = x
    rows[r, 8] = y
    rows[r, 9] = z
    rows[r, 10] = iso_ch
    rows[r, 11] = iso_g
    rows[r, 12] = iso_n
    rows[r, 13] = f_ch
    rows[r, 14] = f_neu
    rows[r, 15] = f_gam
    rows[r, 16] = f_e
    rows[r, 17] = f_m
    rows[r, 18] = charge


# ----------------------------------------------------------------------------------------------
# Arrow glue


@dataclass(frozen=True)
class _Collection:
    offsets: np.ndarray
    fields: dict[str, np.ndarray]


def _collection(batch: pa.RecordBatch, name: str) -> _Collection:
    """Offsets and flat field arrays of one collection (a struct of same-length lists), without copies."""
    col = batch.column(batch.schema.get_field_index(name))
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    offsets = None
    fields = {}
    for field, child in zip(col.type, col.flatten(), strict=True):
        if offsets is None:
            offsets = child.offsets.to_numpy().astype(np.int64)
        # offsets index into the unsliced child values
        fields[field.name] = child.values.to_numpy(zero_copy_only=False)
    return _Collection(offsets, fields)


def _inputs(batch: pa.RecordBatch) -> dict[str, _Collection]:
    return {c: _collection(batch, c) for c in S.REQUIRED_FIELDS}


@dataclass(frozen=True)
class Selection:
    """The lepton selection of one raw batch, computed once and shared by the HLF and LLF kernels."""

    cols: dict[str, _Collection]
    reason: np.ndarray  # per event: REASON_SELECTED or why it was dropped
    lep: np.ndarray  # per event: pt, eta, phi, charge, is_ele, iso_ch, iso_gamma, iso_neu of the lepton

    @property
    def selected(self) -> np.ndarray:
        return np.flatnonzero(self.reason == REASON_SELECTED)


def select(batch: pa.RecordBatch) -> Selection:
    """Run the event selection on a raw batch (it may hold only the HLF input fields)."""
    cols = _inputs(batch)
    t, p, n = cols["EFlowTrack"], cols["EFlowPhoton"], cols["EFlowNeutralHadron"]
    el, mu = cols["Electron"], cols["MuonTight"]
    reason, lep = _select(
        t.offsets, t.fields["PT"], t.fields["Eta"], t.fields["Phi"],
        p.offsets, p.fields["ET"], p.fields["Eta"], p.fields["Phi"],
        n.offsets, n.fields["ET"], n.fields["Eta"], n.fields["Phi"],
        el.offsets, el.fields["PT"], el.fields["Eta"], el.fields["Phi"], el.fields["Charge"],
        mu.offsets, mu.fields["PT"], mu.fields["Eta"], mu.fields["Phi"], mu.fields["Charge"],
    )
    return Selection(cols, reason, lep)


SELECTED = "selected"


def drop_counts(reason: np.ndarray) -> dict[str, int]:
    """Events dropped per reason name."""
    return {name: int(np.count_nonzero(reason == code)) for code, name in REASON_NAMES.items()}


def reason_counts(reason: np.ndarray) -> dict[str, int]:
    """Events selected and dropped per reason name: the selection's bookkeeping for one batch."""
    return {SELECTED: int(np.count_nonzero(reason == REASON_SELECTED)), **drop_counts(reason)}


IDENTITY_SCHEMA_FIELDS = IDENTITY_FIELDS
IDENTITY_COLUMNS = tuple(f.name for f in IDENTITY_FIELDS)
# Fields each kernel reads: the HLF needs no track identity or vertex.
LLF_INPUT_FIELDS = dict(S.REQUIRED_FIELDS)
HLF_INPUT_FIELDS = {**LLF_INPUT_FIELDS, "EFlowTrack": ("PT", "Eta", "Phi")}
HLF_SCHEMA = pa.schema([*IDENTITY_FIELDS, *(pa.field(name, pa.float32(), nullable=False) for name in S.HLF_COLUMNS)])
LLF_SCHEMA = pa.schema([*IDENTITY_FIELDS, pa.field("n_particles", pa.int32(), nullable=False), LLF_FIELD])


def _identity(batch: pa.RecordBatch, sel: np.ndarray) -> list[pa.Array]:
    idx = pa.array(sel)
    return [batch.column(batch.schema.get_field_index(c)).take(idx) for c in IDENTITY_COLUMNS]


def hlf_batch(batch: pa.RecordBatch, selection: Selection) -> pa.RecordBatch:
    """HLF rows of the selected events of a raw batch."""
    cols, sel = selection.cols, selection.selected
    j = cols["Jet"]
    jets = _jets(j.offsets, j.fields["PT"], j.fields["Eta"], j.fields["BTag"])[sel]
    met_c = cols["MissingET"]
    # MissingET has one entry per event: take the first of each.
    first = met_c.offsets[:-1][sel]
    met = met_c.fields["MET"][first].astype(np.float64)
    phi_met = met_c.fields["Phi"][first].astype(np.float64)
    lp = selection.lep[sel]
    mt = np.sqrt(2.0 * met * lp[:, 0] * (1.0 - np.cos(lp[:, 2] - phi_met)))
    values = [jets[:, 0], met, phi_met, mt, jets[:, 1], jets[:, 2], lp[:, 0], lp[:, 1], lp[:, 2],
              lp[:, 5], lp[:, 6], lp[:, 7], lp[:, 3], lp[:, 4]]
    arrays = _identity(batch, sel) + [pa.array(v.astype(np.float32)) for v in values]
    return pa.RecordBatch.from_arrays(arrays, schema=HLF_SCHEMA)


def llf_batch(batch: pa.RecordBatch, selection: Selection) -> pa.RecordBatch:
    """Particle lists (real rows of the 801 x 19 list, row-major) of the selected events of a raw batch."""
    cols, sel = selection.cols, selection.selected
    t, p, n = cols["EFlowTrack"], cols["EFlowPhoton"], cols["EFlowNeutralHadron"]
    counts, rows = _llf_rows(
        sel, selection.lep, t.offsets, t.fields["PT"], t.fields["Eta"], t.fields["Phi"], t.fields["PID"],
        t.fields["Charge"], t.fields["X"], t.fields["Y"], t.fields["Z"],
        p.offsets, p.fields["ET"], p.fields["Eta"], p.fields["Phi"],
        n.offsets, n.fields["ET"], n.fields["Eta"], n.fields["Phi"],
    )
    arrays = [*_identity(batch, sel), pa.array(counts.astype(np.int32)), encode_llf(counts, rows)]
    return pa.RecordBatch.from_arrays(arrays, schema=LLF_SCHEMA)


def hlf_table(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, np.ndarray]:
    """HLF rows of the selected events of a raw batch, and the per-event reason codes."""
    selection = select(batch)
    return hlf_batch(batch, selection), selection.reason


def llf_table(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, np.ndarray]:
    """Particle lists of the selected events of a raw batch, and the per-event reason codes."""
    selection = select(batch)
    return llf_batch(batch, selection), selection.reason
