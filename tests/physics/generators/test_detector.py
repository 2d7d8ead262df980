"""The Delphes-like fast simulation on hand-made particles: acceptance, efficiencies, seeded smearing,
leptons as tracks, calorimeter cells and energy flow, anti-kT jets against fastjet itself, b-tagging, MET."""

from __future__ import annotations

import numpy as np
import pytest

from lhc_assets.physics.generators.detector import CMS, DetectorCard, ecal_sigma, jet_energy_scale, simulate
from lhc_assets.physics.schema import REQUIRED_FIELDS, field_dtype

CHARGE = {11: -1, -11: 1, 13: -1, -13: 1, 211: 1, -211: -1, 22: 0, 130: 0, 2112: 0, 12: 0, 310: 0}


def particles(rows: list[tuple]) -> dict[str, np.ndarray]:
    """(event, pid, pt, eta, phi[, vx, vy, vz]) rows -> the simulation's input table (massless particles)."""
    cols = list(zip(*[(*r, 0.0, 0.0, 0.0)[:8] for r in rows], strict=True))
    event, pid, pt, eta, phi, vx, vy, vz = (np.asarray(c) for c in cols)
    pt, eta, phi = pt.astype(float), eta.astype(float), phi.astype(float)
    return {"event": event.astype(np.int64), "pid": pid.astype(np.int32),
            "charge": np.array([CHARGE[int(p)] for p in pid], np.int32),
            "px": pt * np.cos(phi), "py": pt * np.sin(phi), "pz": pt * np.sinh(eta), "e": pt * np.cosh(eta),
            "vx": vx.astype(float), "vy": vy.astype(float), "vz": vz.astype(float)}


def no_hadrons() -> dict[str, np.ndarray]:
    return {"event": np.zeros(0, np.int64), "pt": np.zeros(0), "eta": np.zeros(0), "phi": np.zeros(0),
            "flavour": np.zeros(0, np.int64)}


def run(rows, n_events=None, seed=1, hadrons=None, card=CMS):
    table = particles(rows)
    n = int(table["event"].max()) + 1 if n_events is None else n_events
    return simulate(table, hadrons or no_hadrons(), n, np.random.default_rng(seed), card)


def repeated(row: tuple, n: int) -> list[tuple]:
    return [(i, *row) for i in range(n)]


def test_output_has_every_collection_field_with_its_dtype_and_consistent_counts():
    batch = run([*repeated((211, 5.0, 0.5, 1.0), 20), (3, 13, 40.0, -1.0, 2.0)])
    assert batch.n_events == 20
    for collection, fields in REQUIRED_FIELDS.items():
        for f in fields:
            values = batch.fields[collection][f]
            assert values.dtype == np.dtype(field_dtype(f))
            assert values.shape[0] == batch.counts[collection].sum()
    np.testing.assert_array_equal(batch.counts["MissingET"], 1)


def test_tracker_acceptance_and_efficiency():
    n = 4000
    inside = run(repeated((211, 5.0, 0.5, 0.0), n))
    outside = run(repeated((211, 5.0, 2.7, 0.0), n))  # beyond the tracker (|eta| < 2.5)
    soft = run(repeated((211, 0.08, 0.0, 0.0), n))  # below 0.1 GeV
    assert outside.counts["EFlowTrack"].sum() == 0
    assert soft.counts["EFlowTrack"].sum() == 0
    found = inside.counts["EFlowTrack"].mean()
    assert found == pytest.approx(0.95, abs=0.015)  # barrel, pT > 1 GeV (CMS card)
    endcap_soft = run(repeated((211, 0.6, 2.0, 0.0), n)).counts["EFlowTrack"].mean()
    assert endcap_soft == pytest.approx(0.60, abs=0.03)


def test_track_smearing_is_seeded_unbiased_and_has_the_card_resolution():
    rows = repeated((211, 50.0, 0.2, 1.0), 3000)
    a, b, c = run(rows, seed=3), run(rows, seed=3), run(rows, seed=4)
    pa = a.fields["EFlowTrack"]["PT"]
    np.testing.assert_array_equal(pa, b.fields["EFlowTrack"]["PT"])
    assert not np.array_equal(pa[:100], c.fields["EFlowTrack"]["PT"][:100])
    assert pa.mean() == pytest.approx(50.0, rel=0.002)
    expected = np.sqrt(0.06**2 + (1.3e-3 * 50.0) ** 2)  # charged hadrons, |eta| < 0.5 (CMS card)
    assert pa.std() / 50.0 == pytest.approx(expected, rel=0.08)
    # Direction and vertex are not smeared.
    np.testing.assert_allclose(a.fields["EFlowTrack"]["Eta"], 0.2, atol=1e-6)


def test_track_vertex_is_the_production_vertex():
    batch = run([(0, 211, 8.0, 0.3, 0.4, 1.5, -0.5, 12.0), (0, 211, 8.0, -0.3, -2.0, 0.0, 0.0, -3.0)] * 1, seed=2)
    t = batch.fields["EFlowTrack"]
    assert batch.counts["EFlowTrack"][0] >= 1
    first = {(round(float(x), 3), round(float(y), 3), round(float(z), 3)) for x, y, z in zip(t["X"], t["Y"], t["Z"],
                                                                                           strict=True)}
    assert first <= {(1.5, -0.5, 12.0), (0.0, 0.0, -3.0)}


@pytest.mark.parametrize(("pid", "collection"), [(13, "MuonTight"), (-11, "Electron")])
def test_a_reconstructed_lepton_is_also_a_track_with_the_same_direction(pid, collection):
    batch = run(repeated((pid, 40.0, 0.7, -2.0), 400))
    leptons, tracks = batch.fields[collection], batch.fields["EFlowTrack"]
    assert batch.counts[collection].mean() == pytest.approx(0.95 * 0.99 if pid == 13 else 0.95 * 0.95, abs=0.05)
    assert leptons["Charge"][0] == -np.sign(pid)
    # Every event with a lepton has its track: same Eta and Phi, PID and charge.
    with_lepton = np.flatnonzero(batch.counts[collection] == 1)
    track_first = np.concatenate([[0], np.cumsum(batch.counts["EFlowTrack"])])[:-1]
    lep_first = np.concatenate([[0], np.cumsum(batch.counts[collection])])[:-1]
    for e in with_lepton[:50]:
        ti, li = track_first[e], lep_first[e]
        assert tracks["Eta"][ti] == leptons["Eta"][li]
        assert tracks["Phi"][ti] == leptons["Phi"][li]
        assert tracks["PT"][ti] == leptons["PT"][li]  # one object, as in Delphes: its own track is its PT
        assert tracks["PID"][ti] == pid
    # The lepton has its own momentum resolution, around the true pT.
    assert leptons["PT"].mean() == pytest.approx(40.0, rel=0.01)


def test_electron_energy_is_not_counted_again_as_a_photon():
    batch = run(repeated((11, 40.0, 0.3, 0.5), 300))
    has_electron = batch.counts["Electron"] == 1
    # The electron's ECAL deposit minus its track leaves nothing significant in most events.
    assert batch.counts["EFlowPhoton"][has_electron].mean() < 0.1


def test_calorimeter_cells_merge_deposits_and_apply_thresholds():
    # Two photons in one ECAL cell (0.0174 x 1 degree) make one EFlowPhoton with their summed energy.
    rows = []
    for e in range(500):
        rows += [(e, 22, 10.0, 0.1001, 0.3001), (e, 22, 5.0, 0.1050, 0.3030)]
    merged = run(rows)
    assert merged.counts["EFlowPhoton"].max() == 1
    et = merged.fields["EFlowPhoton"]["ET"]
    assert et.mean() == pytest.approx(15.0, rel=0.01)
    eta = merged.fields["EFlowPhoton"]["Eta"]
    low = -CMS.forward_eta + np.floor((0.1001 + CMS.forward_eta) / CMS.ecal_deta) * CMS.ecal_deta  # the cell's edge
    assert low <= 0.1001 and low + CMS.ecal_deta > 0.1050
    assert eta.min() >= low - 1e-6 and eta.max() <= low + CMS.ecal_deta + 1e-6  # drawn inside the cell
    # A 0.3 GeV photon is below the ECAL threshold (0.5 GeV and two sigma of noise): only a rare upward
    # noise fluctuation is seen, and then above that threshold.
    soft = run(repeated((22, 0.3, 0.0, 0.0), 1000))
    assert soft.counts["EFlowPhoton"].mean() < 0.08  # log-normal tail above 2 sigma: about 6 %
    e = soft.fields["EFlowPhoton"]["E"]
    assert np.all(e > 2 * ecal_sigma(e, np.zeros_like(e)))
    # Beyond the calorimeters nothing is seen.
    assert run(repeated((22, 30.0, 5.2, 0.0), 50)).counts["EFlowPhoton"].sum() == 0


def test_cells_contain_their_particles_in_both_bands():
    from lhc_assets.physics.generators.detector import Segmentation

    rng = np.random.default_rng(4)
    eta, phi = rng.uniform(-4.99, 4.99, 20000), rng.uniform(-np.pi, np.pi, 20000)
    seg = Segmentation(CMS.hcal_deta, CMS.hcal_nphi, CMS.forward_eta, CMS.calo_eta, CMS.forward_deta, CMS.forward_nphi)
    cell = seg.cell(eta, phi)
    assert cell.min() >= 0 and cell.max() < seg.n_cells
    eta_lo, deta, phi_lo, dphi = seg.bounds(cell)
    assert np.all((eta_lo <= eta + 1e-9) & (eta < eta_lo + deta + 1e-9))
    assert np.all((phi_lo <= phi + 1e-9) & (phi < phi_lo + dphi + 1e-9))
    forward = np.abs(eta) >= CMS.forward_eta
    np.testing.assert_allclose(deta[forward], CMS.forward_deta)
    np.testing.assert_allclose(deta[~forward], CMS.hcal_deta)


def test_forward_calorimeter_sees_what_the_tracker_does_not():
    # A 30 GeV pion at eta 4: no track, its energy in a forward cell (0.175 x 10 degrees) as a neutral hadron.
    batch = run(repeated((211, 30.0, 4.0, 0.5), 300))
    assert batch.counts["EFlowTrack"].sum() == 0
    hadrons = batch.fields["EFlowNeutralHadron"]
    assert batch.counts["EFlowNeutralHadron"].mean() > 0.9
    assert np.all(np.abs(hadrons["Eta"] - 4.0) < CMS.forward_deta)
    assert np.all(np.abs(hadrons["Phi"] - 0.5) < 2 * np.pi / CMS.forward_nphi)
    assert hadrons["E"].mean() == pytest.approx(30.0 * np.cosh(4.0), rel=0.05)


def test_neutral_hadrons_go_to_hcal_and_soft_charged_particles_curl_before_it():
    kl = run(repeated((130, 20.0, -0.4, 1.0), 1000))
    assert kl.counts["EFlowTrack"].sum() == 0
    assert kl.counts["EFlowNeutralHadron"].mean() > 0.99
    # Energy is smeared around the truth; the direction is drawn inside the 0.087 x 5 degree cell.
    assert kl.fields["EFlowNeutralHadron"]["E"].mean() == pytest.approx(20.0 * np.cosh(0.4), rel=0.02)
    assert np.abs(kl.fields["EFlowNeutralHadron"]["Eta"] + 0.4).max() < CMS.hcal_deta
    # A 0.6 GeV pion is a track, but curls up before the calorimeter (0.3 * 3.8 T * 1.29 m / 2 = 0.74 GeV):
    # it deposits nothing, so its track subtracts nothing and no neutral energy appears.
    soft = run(repeated((211, 0.6, 0.0, 0.0), 300) + repeated((130, 3.0, 0.0, 0.0), 300))
    assert soft.counts["EFlowNeutralHadron"].mean() > 0.3
    assert CMS.curl_pt == pytest.approx(0.7353, abs=1e-3)


def test_charged_hadron_energy_flow_subtracts_the_track():
    # A lone 30 GeV pion: its HCAL deposit is explained by its track, so no neutral hadron remains (mostly).
    batch = run(repeated((211, 30.0, 0.2, 0.0), 400))
    assert batch.counts["EFlowNeutralHadron"].mean() < 0.35


def test_missing_et_balances_the_visible_event():
    # A photon of 60 GeV at phi 0 and a neutrino of 60 GeV at phi pi: MET is the neutrino.
    batch = run(repeated((22, 60.0, 0.1, 0.0), 200) + [(e, 12, 60.0, -0.5, np.pi) for e in range(200)])
    met = batch.fields["MissingET"]
    assert met["MET"].mean() == pytest.approx(60.0, rel=0.02)
    np.testing.assert_allclose(np.abs(met["Phi"]), np.pi, atol=0.02)
    # Without the neutrino the photon and an opposite pion balance it out.
    balanced = run(repeated((22, 60.0, 0.1, 0.0), 200) + [(e, 130, 60.0, 0.1, np.pi) for e in range(200)])
    assert np.median(balanced.fields["MissingET"]["MET"]) < 0.2 * 60.0


def _fastjet_reference(pt, eta, phi, radius=0.4, min_pt=20.0):
    """fastjet's own result with its classic per-event interface (PseudoJets), sorted by pT."""
    import fastjet

    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    inputs = [fastjet.PseudoJet(float(x), float(y), float(z), float(e))
              for x, y, z, e in zip(px, py, pz, pt * np.cosh(eta), strict=True)]
    jets = fastjet.ClusterSequence(inputs, fastjet.JetDefinition(fastjet.antikt_algorithm, radius))
    return sorted(((j.pt(), j.eta()) for j in jets.inclusive_jets(min_pt)), reverse=True)


def test_anti_kt_jets_match_fastjets_own_clustering_and_merge_within_r():
    # No smearing that matters: perfect tracking is not what this checks, so compare with fastjet on the
    # energy-flow objects themselves: build them as neutral hadrons... use tracks and reuse their measured pT.
    rng = np.random.default_rng(5)
    rows = []
    for axis_eta, axis_phi, energy in ((0.3, 0.5, 80.0), (-1.0, -2.5, 50.0), (0.45, 0.2, 30.0)):
        for _ in range(8):
            rows.append((0, 211, energy / 8 * rng.uniform(0.5, 1.5), axis_eta + rng.normal(0, 0.08),
                         axis_phi + rng.normal(0, 0.08)))
    card = DetectorCard(rho_eta=2.5)
    batch = run(rows, seed=9, card=card)
    t = batch.fields["EFlowTrack"]
    photons, neutrals = batch.fields["EFlowPhoton"], batch.fields["EFlowNeutralHadron"]
    pt = np.concatenate([t["PT"], photons["ET"], neutrals["ET"]]).astype(float)
    eta = np.concatenate([t["Eta"], photons["Eta"], neutrals["Eta"]]).astype(float)
    phi = np.concatenate([t["Phi"], photons["Phi"], neutrals["Phi"]]).astype(float)
    reference = _fastjet_reference(pt, eta, phi)
    jets = batch.fields["Jet"]
    ours = list(zip(jets["PT"].astype(float), jets["Eta"].astype(float), strict=True))
    # An event this sparse has a median pT density of zero: no pileup subtraction, fastjet's jets exactly.
    assert len(ours) == len(reference)
    for (a_pt, a_eta), (b_pt, b_eta) in zip(ours, reference, strict=True):
        # The same jet, times the card's jet energy scale.
        assert a_pt == pytest.approx(b_pt * jet_energy_scale(np.array(b_pt), np.array(abs(b_eta))), rel=1e-5)
        assert a_eta == pytest.approx(b_eta, abs=1e-5)
    # The sprays 0.32 apart (< R) are one jet; the one far away is another.
    assert len(ours) == 2
    assert np.all(np.diff(jets["PT"]) <= 0)  # descending PT
    assert jets["NCharged"].sum() + jets["NNeutrals"].sum() >= 16


def test_pileup_density_is_subtracted_from_jets():
    rng = np.random.default_rng(2)
    # A uniform soft background of 1.2 GeV photons over |eta| < 3 (about 5 per rho cell) and one 100 GeV
    # photon: the jet around it would carry about rho * pi R^2 (~10 GeV) more without the subtraction.
    n_soft = 700
    soft = [(0, 22, 1.2, rng.uniform(-3.0, 3.0), rng.uniform(-np.pi, np.pi)) for _ in range(n_soft)]
    batch = run([(0, 22, 100.0, 0.0, 1.0), *soft], seed=1)
    photons = batch.fields["EFlowPhoton"]
    lead = int(np.argmax(photons["ET"]))
    assert photons["ET"][lead] == pytest.approx(100.0, rel=0.03)
    raw = _fastjet_reference(photons["ET"].astype(float), photons["Eta"].astype(float), photons["Phi"].astype(float))
    jet = batch.fields["Jet"]
    assert raw[0][0] - photons["ET"][lead] > 5.0  # the background inside the cone
    # Before the jet energy scale (a factor of about 1.03 here), rho x pi R^2 has removed most of the excess.
    subtracted = jet["PT"][0] / jet_energy_scale(np.array(jet["PT"][0]), np.array(0.0))
    assert abs(subtracted - photons["ET"][lead]) < 0.4 * (raw[0][0] - photons["ET"][lead])


def _tag_rate(flavour: int, n: int = 1500) -> float:
    rows, hadrons = [], {"event": [], "pt": [], "eta": [], "phi": [], "flavour": []}
    for e in range(n):
        rows.append((e, 130, 60.0, 0.5, 1.0))
        if flavour:
            for k, v in (("event", e), ("pt", 40.0), ("eta", 0.55), ("phi", 1.05), ("flavour", flavour)):
                hadrons[k].append(v)
    h = {k: np.asarray(v, np.int64 if k in ("event", "flavour") else float) for k, v in hadrons.items()}
    batch = run(rows, hadrons=h, seed=flavour + 1)
    assert batch.counts["Jet"].sum() > 0.9 * n
    return float(batch.fields["Jet"]["BTag"].mean())


def test_b_tagging_by_hadron_matching():
    assert _tag_rate(5) == pytest.approx(0.70, abs=0.04)
    assert _tag_rate(4) == pytest.approx(0.18, abs=0.03)
    assert _tag_rate(0) == pytest.approx(0.012, abs=0.008)


def test_a_hadron_outside_the_cone_does_not_tag():
    hadrons = {"event": np.array([0]), "pt": np.array([40.0]), "eta": np.array([1.5]), "phi": np.array([1.0]),
               "flavour": np.array([5])}
    rates = [run([(0, 130, 60.0, 0.5, 1.0)], hadrons=hadrons, seed=s).fields["Jet"]["BTag"].sum() for s in range(60)]
    assert sum(rates) <= 3  # light-jet mistags only


def test_muon_collection_name_is_configurable():
    table = particles(repeated((13, 40.0, 0.1, 0.0), 30))
    batch = simulate(table, no_hadrons(), 30, np.random.default_rng(1), CMS, muon_collection="Muon")
    assert "Muon" in batch.fields and "MuonTight" not in batch.fields
    assert batch.counts["Muon"].sum() > 20


def test_tracks_and_cells_are_stored_in_eta_order_like_delphes_towers():
    rng = np.random.default_rng(8)
    etas = rng.uniform(-2.4, 2.4, 40)
    batch = run([(0, 211, 20.0, float(e), float(p)) for e, p in zip(etas, rng.uniform(-3, 3, 40), strict=True)])
    stored = batch.fields["EFlowTrack"]["Eta"]
    assert stored.shape[0] > 30
    # Ordered by the HCAL cell they reach (0.087 wide in eta): eta increases up to one cell's width.
    assert np.all(np.diff(stored) > -CMS.hcal_deta)
    assert not np.all(np.diff(etas) > -CMS.hcal_deta)  # the input was not ordered
    from lhc_assets.physics.generators.detector import ecal_segmentation

    seg = ecal_segmentation(CMS)
    grid = np.linspace(-4.99, 4.99, 2001)
    assert np.all(np.diff(seg.cell(grid, np.full_like(grid, 0.3))) >= 0)  # cells grow with eta, -5 to 5


def _position(pt: float, eta: float, charge: int = 1):
    from lhc_assets.physics.generators.detector import _truth, calorimeter_position

    t = _truth(particles([(0, 211 if charge > 0 else -211, pt, eta, 0.0)]))
    reach, eta_calo, phi_calo = calorimeter_position(t, CMS)
    return bool(reach[0]), float(eta_calo[0]), float(phi_calo[0])


def test_charged_particles_are_propagated_to_the_barrel_or_the_endcap():
    r_helix = lambda pt: pt / (0.3 * CMS.b_field)  # noqa: E731
    # A 10 GeV positive pion at eta 0.5 reaches the barrel after turning by 2 asin(R / 2r), clockwise.
    turn = 2 * np.arcsin(CMS.calo_radius / (2 * r_helix(10.0)))
    reach, eta, phi = _position(10.0, 0.5)
    assert reach and phi == pytest.approx(-turn / 2, rel=1e-6)
    assert eta == pytest.approx(np.arcsinh(r_helix(10.0) * turn * np.sinh(0.5) / CMS.calo_radius), rel=1e-6)
    assert _position(10.0, 0.5, charge=-1)[2] == pytest.approx(turn / 2, rel=1e-6)
    # A 2 GeV pion at eta 3 leaves through the endcap face (z = 3 m) after a transverse path of L / sinh(eta).
    turn = CMS.calo_half_length / np.sinh(3.0) / r_helix(2.0)
    reach, eta, phi = _position(2.0, 3.0)
    assert reach and phi == pytest.approx(-turn / 2, rel=1e-6)
    rho = 2 * r_helix(2.0) * np.sin(turn / 2)
    assert eta == pytest.approx(np.arcsinh(CMS.calo_half_length / rho), rel=1e-6)
    # A 0.5 GeV pion curls up inside the barrel (below 0.74 GeV) and ends on the endcap, far forward.
    reach, eta, _ = _position(0.5, 0.3)
    assert not reach or abs(eta) > 1.5  # at z = 3 m, a radius below 2 x 0.44 m


def test_soft_forward_particles_deposit_in_the_forward_calorimeter():
    # 0.5 GeV pions at eta 4 (13.6 GeV each): below the barrel's curling pT, but they reach the forward face.
    batch = run(repeated((211, 0.5, 4.0, 0.5), 300))
    assert batch.counts["EFlowTrack"].sum() == 0
    assert batch.counts["EFlowNeutralHadron"].mean() > 0.5
    assert np.all(np.abs(batch.fields["EFlowNeutralHadron"]["Eta"]) > 3.0)


def test_jets_raised_above_threshold_by_the_energy_scale_are_kept():
    # An 18.5 GeV spray: below 20 GeV as clustered, above it after the card's energy scale (x 1.17).
    batch = run(repeated((22, 18.5, 0.0, 1.0), 200))
    jets = batch.fields["Jet"]["PT"]
    assert batch.counts["Jet"].mean() > 0.9
    assert np.all(jets > CMS.jet_min_pt) and np.median(jets) == pytest.approx(18.5 * 1.166, rel=0.03)
