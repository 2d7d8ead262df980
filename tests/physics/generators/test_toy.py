"""The Delphes-format generator: file format, determinism, multiplicities and physics."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from lhc_assets.physics import reference
from lhc_assets.physics.generators.rootio import write_delphes_file
from lhc_assets.physics.generators.toy import BATCH_EVENTS, generate_batch, generate_file_batches
from lhc_assets.physics.schema import (
    EXTRA_FIELDS,
    REQUIRED_FIELDS,
    SAMPLES,
    TREE_NAME,
    branch_name,
    counter_name,
    field_dtype,
    required_branches,
)
from tests.conftest import SAMPLE_EVENTS


def _tree(path: Path):
    return uproot.open(path)[TREE_NAME]


def _count_above(tree, branch: str, threshold: float) -> np.ndarray:
    return ak.to_numpy(ak.sum(tree[branch].array() > threshold, axis=1))


@pytest.mark.parametrize("sample", list(SAMPLES))
def test_file_has_delphes_tree_with_named_typed_branches(generated_files, sample):
    tree = _tree(generated_files[sample])
    assert tree.num_entries == SAMPLE_EVENTS
    keys = set(tree.keys())
    for coll in REQUIRED_FIELDS:
        assert counter_name(coll) in keys
        for field in (*REQUIRED_FIELDS[coll], *EXTRA_FIELDS[coll]):
            name = branch_name(coll, field)
            assert name in keys, name
            arr = tree[name].array()
            assert str(ak.type(arr).content.content) == field_dtype(field), name
    # Extra fields exist so readers must prune: the file has more than the pipeline needs.
    assert len(keys) > len(required_branches()) + len(REQUIRED_FIELDS)


@pytest.mark.parametrize("sample", list(SAMPLES))
def test_per_event_counts_match_counter_branches(generated_files, sample):
    tree = _tree(generated_files[sample])
    for coll, fields in REQUIRED_FIELDS.items():
        counts = tree[counter_name(coll)].array(library="np")
        for field in (*fields, *EXTRA_FIELDS[coll]):
            lengths = ak.to_numpy(ak.num(tree[branch_name(coll, field)].array(), axis=1))
            np.testing.assert_array_equal(lengths, counts, err_msg=f"{coll}.{field}")
    np.testing.assert_array_equal(tree[counter_name("MissingET")].array(library="np"), 1)


def test_same_seed_gives_identical_files(tmp_path):
    paths = []
    for i in range(2):
        p = tmp_path / f"run{i}.root"
        write_delphes_file(p, generate_file_batches("ttbar", BATCH_EVENTS + 37, seed=5, file_index=2))
        paths.append(p)
    a, b = (_tree(p).arrays(required_branches()) for p in paths)
    for name in required_branches():
        assert ak.all(a[name] == b[name]), name


def test_different_seeds_and_files_differ():
    base = generate_batch("wjets", 50, np.random.default_rng(1)).fields["EFlowTrack"]["PT"]
    other_seed = next(generate_file_batches("wjets", 50, seed=2, file_index=0)).fields["EFlowTrack"]["PT"]
    other_file = next(generate_file_batches("wjets", 50, seed=1, file_index=1)).fields["EFlowTrack"]["PT"]
    same_file = next(generate_file_batches("wjets", 50, seed=1, file_index=1)).fields["EFlowTrack"]["PT"]
    assert not np.array_equal(base, other_seed)
    assert not np.array_equal(other_seed, other_file)
    np.testing.assert_array_equal(other_file, same_file)


@pytest.mark.parametrize("sample", list(SAMPLES))
def test_multiplicities_are_realistic(generated_files, sample):
    tree = _tree(generated_files[sample])
    tracks = _count_above(tree, "EFlowTrack.PT", 0.5)
    photons = _count_above(tree, "EFlowPhoton.ET", 1.0)
    neutrals = _count_above(tree, "EFlowNeutralHadron.ET", 1.0)
    # DESIGN.md section 7: tracks about 150-500, photons 50-200, neutral hadrons 50-250.
    assert np.percentile(tracks, 2) >= 110 and np.percentile(tracks, 98) <= 560
    assert 220 <= np.median(tracks) <= 380
    assert np.percentile(photons, 2) >= 40 and np.percentile(photons, 98) <= 230
    assert np.percentile(neutrals, 2) >= 40 and np.percentile(neutrals, 98) <= 270
    # Softer particles below the candidate thresholds are present in every event.
    soft = ak.to_numpy(ak.sum(tree["EFlowTrack.PT"].array() <= 0.5, axis=1))
    assert soft.min() > 0


def test_some_events_exceed_the_track_cap(generated_files):
    tracks = np.concatenate([_count_above(_tree(p), "EFlowTrack.PT", 0.5) for p in generated_files.values()])
    frac = np.mean(tracks > 450)
    assert 0.002 < frac < 0.1


@pytest.mark.parametrize("sample", list(SAMPLES))
def test_every_lepton_is_also_a_track(generated_files, sample):
    tree = _tree(generated_files[sample])
    trk = tree.arrays(["EFlowTrack.Eta", "EFlowTrack.Phi", "EFlowTrack.PID", "EFlowTrack.Charge"], library="np")
    n_checked = 0
    for coll, pid in (("Electron", 11), ("MuonTight", 13)):
        lep = tree.arrays([f"{coll}.Eta", f"{coll}.Phi", f"{coll}.Charge"], library="np")
        for i in range(tree.num_entries):
            for eta, phi, charge in zip(lep[f"{coll}.Eta"][i], lep[f"{coll}.Phi"][i], lep[f"{coll}.Charge"][i],
                                        strict=True):
                same = (trk["EFlowTrack.Eta"][i] == eta) & (trk["EFlowTrack.Phi"][i] == phi)
                assert same.sum() == 1
                assert trk["EFlowTrack.PID"][i][same][0] == -pid * charge
                assert trk["EFlowTrack.Charge"][i][same][0] == charge
                n_checked += 1
    assert n_checked > 50


@pytest.mark.parametrize("sample", list(SAMPLES))
def test_missing_et_is_minus_the_visible_vector_sum(generated_files, sample):
    tree = _tree(generated_files[sample])
    sx = np.zeros(tree.num_entries)
    sy = np.zeros(tree.num_entries)
    for coll, pt_name in (("EFlowTrack", "PT"), ("EFlowPhoton", "ET"), ("EFlowNeutralHadron", "ET")):
        pt = tree[f"{coll}.{pt_name}"].array()
        phi = tree[f"{coll}.Phi"].array()
        sx += ak.to_numpy(ak.sum(pt * np.cos(phi), axis=1))
        sy += ak.to_numpy(ak.sum(pt * np.sin(phi), axis=1))
    met = ak.to_numpy(tree["MissingET.MET"].array()[:, 0])
    np.testing.assert_allclose(met, np.hypot(sx, sy), rtol=1e-3, atol=0.05)


@pytest.mark.parametrize("sample", list(SAMPLES))
def test_jets_are_made_of_the_particles(generated_files, sample):
    tree = _tree(generated_files[sample])
    ev = tree.arrays(required_branches(), library="np")
    fractions = []
    for i in range(200):
        for pt, eta, phi in zip(ev["Jet.PT"][i], ev["Jet.Eta"][i], ev["Jet.Phi"][i], strict=True):
            if pt < 30 or abs(eta) > 2.0:
                continue
            total = 0.0
            for coll, f in (("EFlowTrack", "PT"), ("EFlowPhoton", "ET"), ("EFlowNeutralHadron", "ET")):
                near = reference.delta_r(ev[f"{coll}.Eta"][i], ev[f"{coll}.Phi"][i], eta, phi) < 0.4
                total += ev[f"{coll}.{f}"][i][near].sum()
            fractions.append(total / pt)
    fractions = np.array(fractions)
    assert len(fractions) > 20
    # The particles in the jet cone carry the jet's momentum (plus some pileup).
    assert np.median(fractions) > 0.8
    assert np.mean(fractions > 0.5) > 0.95


def test_b_jets_carry_displaced_tracks(generated_files):
    def displaced_per_event(path: Path) -> float:
        t = _tree(path)
        x, y = t["EFlowTrack.X"].array(), t["EFlowTrack.Y"].array()
        return float(np.mean(ak.to_numpy(ak.sum(np.hypot(x, y) > 0.2, axis=1))))

    # ttbar has two b quarks per event; W+jets rarely has any.
    assert displaced_per_event(generated_files["ttbar"]) > 3 * displaced_per_event(generated_files["wjets"])


# ---- physics: the classes differ in the intended directions and overlap --------------------------


def _auc(a: np.ndarray, b: np.ndarray) -> float:
    """P(a > b) + P(a == b)/2 for independent draws (Mann-Whitney)."""
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both))
    sorted_vals = both[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[: len(a)].sum() - len(a) * (len(a) + 1) / 2) / (len(a) * len(b)))


@pytest.fixture(scope="module")
def selected_hlf(generated_files) -> dict[str, dict[str, np.ndarray]]:
    from lhc_assets.physics.schema import HLF_COLUMNS

    out = {}
    for sample, path in generated_files.items():
        ev = _tree(path).arrays(required_branches(), library="np")
        rows, n = [], len(ev["Jet.PT"])
        for i in range(n):
            r = reference.process_event({k: v[i] for k, v in ev.items()}, with_llf=False)
            if r.selected:
                rows.append(r.hlf)
        h = np.array(rows)
        out[sample] = {name: h[:, j] for j, name in enumerate(HLF_COLUMNS)}
        out[sample]["efficiency"] = np.array(len(rows) / n)
        out[sample]["iso"] = h[:, 9] + h[:, 10] + h[:, 11]
    return out


def test_selection_efficiency_per_class(selected_hlf):
    # QCD leptons come from heavy-flavour decays inside jets: only about 10 % pass.
    assert 0.04 <= selected_hlf["qcd"]["efficiency"] <= 0.25
    assert selected_hlf["ttbar"]["efficiency"] > 0.5
    assert selected_hlf["wjets"]["efficiency"] > 0.5


@pytest.mark.parametrize(
    ("feature", "higher", "lower"),
    [
        ("MET", "ttbar", "qcd"),
        ("MET", "wjets", "qcd"),
        ("MT", "wjets", "qcd"),
        ("MT", "ttbar", "qcd"),
        ("HT", "ttbar", "wjets"),
        ("HT", "ttbar", "qcd"),
        ("nJets", "ttbar", "wjets"),
        ("nJets", "qcd", "wjets"),
        ("nBjets", "ttbar", "wjets"),
        ("iso", "qcd", "wjets"),
        ("iso", "qcd", "ttbar"),
    ],
)
def test_classes_differ_in_the_intended_direction_and_overlap(selected_hlf, feature, higher, lower):
    auc = _auc(selected_hlf[higher][feature], selected_hlf[lower][feature])
    assert auc > 0.6, f"{feature}: {higher} should exceed {lower} (AUC {auc:.3f})"
    assert auc < 0.97, f"{feature} alone separates {higher} from {lower} (AUC {auc:.3f}); classes must overlap"


def test_w_lepton_has_jacobian_peak_and_mt_edge(selected_hlf):
    lep_pt = selected_hlf["wjets"]["lepPt"]
    mt = selected_hlf["wjets"]["MT"]
    assert 30 < np.median(lep_pt) < 50
    # The transverse mass piles up below the W mass and falls off above it.
    assert np.mean(mt < 90) > 0.75
    assert np.mean((mt > 50) & (mt < 90)) > 2 * np.mean((mt > 90) & (mt < 130))
