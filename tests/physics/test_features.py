"""The fast kernels equal the plain per-event reference of DESIGN.md section 4."""

from __future__ import annotations

import numpy as np
import pytest
import uproot

from lhc_assets.physics import features as K
from lhc_assets.physics import reference as R
from lhc_assets.physics.delphes_reader import inspect_file, read_batches
from lhc_assets.physics.schema import (
    DROP_NO_LEPTON,
    DROP_NOT_ISOLATED,
    HLF_COLUMNS,
    LLF_ROWS,
    MAX_NEUTRALS,
    MAX_PHOTONS,
    MAX_TRACKS,
    TREE_NAME,
    required_branches,
)
from tests.physics.events import add, add_lepton, empty_event, to_batch, to_reference

LLF_COMPARED_PER_SAMPLE = 40  # the reference LLF costs ~40 ms per event


def _hlf_rows(table) -> np.ndarray:
    return np.column_stack([table.column(c).to_numpy() for c in HLF_COLUMNS]).astype(np.float32)


def _llf_matrices(table) -> list[np.ndarray]:
    n = table.column("n_particles").to_numpy()
    flat = table.column("llf")
    return [K.llf_matrix(int(n[i]), flat[i].as_py()) for i in range(table.num_rows)]


def _compare(events: list[dict]) -> tuple:
    batch = to_batch(events)
    hlf, reason = K.hlf_table(batch)
    llf, reason2 = K.llf_table(batch)
    np.testing.assert_array_equal(reason, reason2)
    refs = [R.process_event(to_reference(ev)) for ev in events]
    assert [r.selected for r in refs] == list(reason == K.REASON_SELECTED)
    sel = [r for r in refs if r.selected]
    if sel:
        np.testing.assert_allclose(_hlf_rows(hlf), np.stack([r.hlf for r in sel]), rtol=2e-6, atol=1e-6)
        for got, ref in zip(_llf_matrices(llf), sel, strict=True):
            np.testing.assert_allclose(got, ref.llf, rtol=2e-6, atol=1e-6)
    return hlf, llf, reason, refs


@pytest.mark.parametrize("sample", ["qcd", "ttbar", "wjets"])
def test_fast_path_equals_reference_on_generated_events(generated_files, sample):
    path = str(generated_files[sample])
    n_entries = inspect_file(path).num_entries
    batch = next(read_batches(path, sample, f"{sample}/x", 0, n_entries, step=n_entries))
    hlf, reason = K.hlf_table(batch)
    llf, _ = K.llf_table(batch)
    events = uproot.open(path)[TREE_NAME].arrays(required_branches(), library="np")
    n = len(events["Jet.PT"])
    refs = [R.process_event({k: v[i] for k, v in events.items()}, with_llf=False) for i in range(n)]
    assert [r.selected for r in refs] == list(reason == K.REASON_SELECTED)
    assert [r.drop_reason for r in refs if not r.selected] == [
        K.REASON_NAMES[c] for c in reason if c != K.REASON_SELECTED
    ]
    np.testing.assert_allclose(_hlf_rows(hlf), np.stack([r.hlf for r in refs if r.selected]), rtol=2e-6, atol=1e-6)
    # Identity columns trace every row to its input event.
    entries = hlf.column("entry").to_numpy()
    np.testing.assert_array_equal(entries, np.flatnonzero(reason == K.REASON_SELECTED))
    np.testing.assert_array_equal(llf.column("entry").to_numpy(), entries)
    # LLF: row order and values, event by event, on the first selected events.
    mats = _llf_matrices(llf)
    for j, entry in enumerate(entries[:LLF_COMPARED_PER_SAMPLE]):
        ref = R.process_event({k: v[entry] for k, v in events.items()})
        np.testing.assert_allclose(mats[j], ref.llf, rtol=2e-6, atol=1e-6, err_msg=f"entry {entry}")


def _isolated_event(lepton_pt=40.0, eta=0.3, phi=1.0, collection="Electron") -> dict:
    ev = empty_event()
    add_lepton(ev, collection, lepton_pt, eta, phi)
    # some activity far from the lepton
    for k in range(5):
        add(ev, "EFlowTrack", PT=2.0 + k, Eta=-1.5, Phi=-2.0 + 0.05 * k, PID=211, Charge=1, X=0.1, Y=0.2, Z=3.0)
        add(ev, "EFlowPhoton", ET=3.0, Eta=1.8, Phi=-0.5 + 0.07 * k)
        add(ev, "EFlowNeutralHadron", ET=4.0, Eta=-0.7, Phi=2.5 - 0.06 * k)
    add(ev, "Jet", PT=45.0, Eta=1.0, Phi=2.0, BTag=1)
    add(ev, "Jet", PT=28.0, Eta=0.2, Phi=0.0, BTag=0)  # below 30 GeV: not counted
    add(ev, "Jet", PT=60.0, Eta=2.9, Phi=0.0, BTag=0)  # |eta| > 2.6: not counted
    return ev


def test_event_without_lepton_is_dropped_with_its_reason():
    ev = _isolated_event()
    ev["Electron.PT"][0] = 15.0  # below 23 GeV
    _, _, reason, refs = _compare([ev])
    assert refs[0].drop_reason == DROP_NO_LEPTON
    assert K.drop_counts(reason) == {DROP_NO_LEPTON: 1, DROP_NOT_ISOLATED: 0}


def test_non_isolated_lepton_is_dropped_with_its_reason():
    ev = _isolated_event(lepton_pt=30.0)
    for k in range(4):  # 4 x 5 GeV of photons inside the cone: GammaPFIso = 0.67
        add(ev, "EFlowPhoton", ET=5.0, Eta=0.3 + 0.05 * k, Phi=1.0)
    _, _, reason, refs = _compare([ev])
    assert refs[0].drop_reason == DROP_NOT_ISOLATED
    assert K.drop_counts(reason)[DROP_NOT_ISOLATED] == 1


def test_highest_pt_isolated_lepton_is_selected_among_several():
    ev = _isolated_event(lepton_pt=30.0, eta=0.0, phi=0.5)
    add_lepton(ev, "Electron", 55.0, -1.0, -1.0)  # stored second, higher PT
    add_lepton(ev, "Electron", 80.0, 1.2, 2.8)  # highest PT, but not isolated:
    for k in range(6):
        add(ev, "EFlowNeutralHadron", ET=10.0, Eta=1.2 + 0.02 * k, Phi=2.8)
    hlf, _, _, _ = _compare([ev])
    assert hlf.column("lepPt").to_numpy()[0] == pytest.approx(55.0)


def test_electron_and_muon_both_isolated_takes_the_higher_pt():
    ev = _isolated_event(lepton_pt=35.0, collection="Electron")
    add_lepton(ev, "MuonTight", 42.0, -0.8, -2.9, charge=1)
    hlf, llf, _, _ = _compare([ev])
    assert hlf.column("lepIsEle").to_numpy()[0] == 0.0
    assert hlf.column("lepCharge").to_numpy()[0] == 1.0
    row0 = _llf_matrices(llf)[0][0]
    assert row0[17] == 1.0 and row0[16] == 0.0  # isMu, not isEle


def test_isolation_cone_wraps_around_phi_pi():
    ev = _isolated_event(lepton_pt=40.0, eta=0.5, phi=3.1)
    add(ev, "EFlowTrack", PT=4.0, Eta=0.5, Phi=-3.1, PID=211, Charge=1)  # dphi = 0.083 across the wrap
    add(ev, "EFlowPhoton", ET=2.0, Eta=0.45, Phi=-3.12)
    hlf, _, _, _ = _compare([ev])
    assert hlf.column("lepIsoCh").to_numpy()[0] == pytest.approx(4.0 / 40.0, rel=1e-6)
    assert hlf.column("lepIsoGamma").to_numpy()[0] == pytest.approx(2.0 / 40.0, rel=1e-6)


def test_particle_list_caps_and_padding():
    rng = np.random.default_rng(3)
    ev = _isolated_event()
    for _ in range(MAX_TRACKS + 60):
        add(ev, "EFlowTrack", PT=rng.uniform(0.6, 5), Eta=rng.uniform(-2.5, 2.5), Phi=rng.uniform(-np.pi, np.pi),
            PID=211, Charge=1, X=0.01, Y=-0.02, Z=rng.normal(0, 40))
    for _ in range(MAX_PHOTONS + 40):
        add(ev, "EFlowPhoton", ET=rng.uniform(1.1, 4), Eta=rng.uniform(-3, 3), Phi=rng.uniform(-np.pi, np.pi))
    for _ in range(MAX_NEUTRALS + 30):
        add(ev, "EFlowNeutralHadron", ET=rng.uniform(1.1, 4), Eta=rng.uniform(-3, 3), Phi=rng.uniform(-np.pi, np.pi))
    _, llf, _, _ = _compare([ev])
    assert llf.column("n_particles").to_numpy()[0] == LLF_ROWS
    m = _llf_matrices(llf)[0]
    assert m.shape == (LLF_ROWS, 19)
    assert np.all(m[1 : 1 + MAX_TRACKS, 13] == 1)  # tracks
    assert np.all(m[1 + MAX_TRACKS : 1 + MAX_TRACKS + MAX_PHOTONS, 15] == 1)  # photons
    assert np.all(m[1 + MAX_TRACKS + MAX_PHOTONS :, 14] == 1)  # neutral hadrons


def test_short_list_is_zero_padded_to_801_rows():
    _, llf, _, _ = _compare([_isolated_event()])
    m = _llf_matrices(llf)[0]
    n = int(llf.column("n_particles").to_numpy()[0])
    assert n == 1 + 5 + 5 + 5
    assert not np.any(m[n:])


def test_lepton_own_track_is_removed_from_the_particle_list():
    ev = _isolated_event(lepton_pt=40.0, eta=0.3, phi=1.0)
    add(ev, "EFlowTrack", PT=3.0, Eta=0.35, Phi=1.0, PID=211, Charge=-1)  # a neighbour, kept
    _, llf, _, _ = _compare([ev])
    m = _llf_matrices(llf)[0]
    tracks = m[1:][m[1:, 13] + m[1:, 16] + m[1:, 17] == 1]
    assert not np.any((tracks[:, 4] == 40.0) & (tracks[:, 5] == np.float32(0.3)))
    assert np.any(tracks[:, 4] == 3.0)
    # The lepton's isolation subtracted its own track: only the neighbour counts.
    assert m[0, 10] == pytest.approx(3.0 / 40.0, rel=1e-6)


def test_soft_lepton_tracks_are_flagged_in_the_particle_list():
    ev = _isolated_event()
    add(ev, "EFlowTrack", PT=6.5, Eta=-1.0, Phi=0.0, PID=13, Charge=-1)
    add(ev, "EFlowTrack", PT=7.5, Eta=-1.2, Phi=0.3, PID=-11, Charge=1)
    _, llf, _, _ = _compare([ev])
    m = _llf_matrices(llf)[0]
    mu = m[(m[:, 4] == 6.5)][0]
    el = m[(m[:, 4] == 7.5)][0]
    assert (mu[13], mu[17], mu[16]) == (0, 1, 0)
    assert (el[13], el[16], el[17]) == (0, 1, 0)


def test_empty_batch_and_all_dropped_batch():
    ev = _isolated_event()
    ev["Electron.PT"][0] = 10.0
    hlf, llf, reason, _ = _compare([ev, ev])
    assert hlf.num_rows == 0 and llf.num_rows == 0
    assert list(reason) == [K.REASON_NO_LEPTON] * 2
