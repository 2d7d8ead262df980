"""The Pythia 8 engine: process filters, pileup overlay, determinism, Delphes-format output the pipeline reads.

A few dozen events per class (a few seconds each); the speed and physics figures are in benchmarks/.
"""

from __future__ import annotations

import numpy as np
import pytest
import uproot

from lhc_assets.physics import features as K
from lhc_assets.physics.delphes_reader import read_batches
from lhc_assets.physics.generators.pythia import (
    PROCESSES,
    PileupPool,
    PythiaSource,
    _heavy_flavour,
    generate_file_batches,
    leptonic_w_filter,
    make_pythia,
)
from lhc_assets.physics.generators.rootio import write_delphes_file
from lhc_assets.physics.ingest import HLF, LLF, RAW, SOURCE_ROOT, Slice, run_slice
from lhc_assets.physics.schema import SAMPLES, TREE_NAME, required_branches

SMALL = {"pileup_mu": 5.0, "pileup_pool": 20}


@pytest.fixture(scope="module")
def pythia_files(tmp_path_factory) -> dict[str, str]:
    """One 30-event file per sample at the default pileup, written like lhc-generate does."""
    out = tmp_path_factory.mktemp("pythia")
    files = {}
    for sample in SAMPLES:
        path = out / f"{sample}_pythia_seed3_0000.root"
        write_delphes_file(path, generate_file_batches(sample, 30, 3, 0, pileup_pool=30))
        files[sample] = str(path)
    return files


def test_files_hold_the_requested_events_with_every_branch(pythia_files):
    for sample, path in pythia_files.items():
        tree = uproot.open(path)[TREE_NAME]
        assert tree.num_entries == 30, sample
        assert set(required_branches()) <= set(tree.keys())
        tracks = tree["EFlowTrack_size"].array(library="np")
        # Pileup (mu = 20) and the hard event: hundreds of tracks per event.
        assert 150 < tracks.mean() < 1500, sample
        np.testing.assert_array_equal(tree["MissingET_size"].array(library="np"), 1)


def test_the_pipeline_ingests_the_files_and_selects_events(pythia_files, tmp_path):
    selected = {}
    for sample, path in pythia_files.items():
        outputs = {t: str(tmp_path / sample / t) for t in (RAW, HLF, LLF)}
        result = run_slice(Slice(partition_key=f"{sample}/x", sample=sample, source=SOURCE_ROOT, path=path,
                                 outputs=outputs, part="p", start=0, stop=30).__dict__)
        assert result["error"] is None, result["error"]
        assert result["events_read"] == 30
        selected[sample] = result["reasons"]["selected"]
        assert result["rows"][HLF] == result["rows"][LLF] == selected[sample]
    # W+jets and ttbar have prompt leptons; in 30 events each, some pass the isolation and 23 GeV cuts.
    assert selected["wjets"] >= 5 and selected["ttbar"] >= 3


def test_same_seed_same_events_other_seed_other_events():
    def tracks(seed: int, file_index: int = 0) -> np.ndarray:
        batches = list(generate_file_batches("wjets", 12, seed, file_index, **SMALL))
        return np.concatenate([b.fields["EFlowTrack"]["PT"] for b in batches])

    first = tracks(5)
    np.testing.assert_array_equal(first, tracks(5))
    assert not np.array_equal(first[:50], tracks(6)[:50])
    assert not np.array_equal(first[:50], tracks(5, file_index=1)[:50])

    # The hard events themselves follow the seed (not only pileup and detector).
    def hard(seed: int) -> np.ndarray:
        return PythiaSource("wjets", seed, 0, pileup_mu=0.0)._hard_events(5)[0]["px"]

    np.testing.assert_array_equal(hard(5), hard(5))
    assert not np.array_equal(hard(5)[:20], hard(6)[:20])


def test_initialisation_cache_does_not_change_the_events(tmp_path):
    def events():
        return [b.fields["Jet"]["PT"] for b in generate_file_batches("ttbar", 10, 2, 0, **SMALL)]

    mp = pytest.MonkeyPatch()
    mp.setenv("LHC_PYTHIA_CACHE", str(tmp_path))
    try:
        fresh = events()  # initialises and saves
        assert len(list(tmp_path.glob("mpi-*.dat"))) == 2  # the hard process and the minimum-bias pool
        cached = events()
    finally:
        mp.undo()
    for a, b in zip(fresh, cached, strict=True):
        np.testing.assert_array_equal(a, b)


def test_ttbar_events_have_a_leptonic_w():
    hook = leptonic_w_filter()
    pythia = make_pythia(PROCESSES["ttbar"].settings, 7, user_hook=hook)
    prt = pythia.nextBatch(40)["prt"]  # without the filter, 46 % of ttbar events have no leptonic W
    for event in prt:
        ids = np.asarray(event["id"])
        d1, d2 = np.asarray(event["daughter1"]), np.asarray(event["daughter2"])
        leptonic = False
        for w in np.flatnonzero(np.abs(ids) == 24):
            daughters = ids[d1[w]:max(d1[w], d2[w]) + 1] if d1[w] > 0 else []
            leptonic |= any(abs(int(d)) in (11, 13, 15) for d in daughters)
        assert leptonic
    # The filter's efficiency is counted: about 55 % of ttbar events have a leptonic W.
    source = PythiaSource("ttbar", 7, 0, pileup_mu=0.0)
    source._hard_events(40)
    assert source.stats.kept == 40 and 0.35 < source.stats.kept / source.stats.generated < 0.8


def test_qcd_filter_keeps_events_with_a_hard_lepton():
    source = PythiaSource("qcd", 4, 0, **SMALL)
    stable, hadrons = source._hard_events(10)
    pt = np.hypot(stable["px"], stable["py"])
    eta = np.arcsinh(stable["pz"] / pt)
    lepton = np.isin(np.abs(stable["pid"]), (11, 13)) & (pt > 20.0) & (np.abs(eta) < 2.5)
    assert set(stable["event"][lepton]) == set(range(10))
    assert source.stats.generated > source.stats.kept >= 10  # the filter rejects most bbbar/ccbar events
    # Heavy-flavour production: every event has b or c hadrons for the b-tagging.
    assert set(hadrons["event"]) == set(range(10))


def test_heavy_flavour_of_particle_codes():
    codes = np.array([511, -521, 5122, -5332, 421, 4122, -411, 211, 2212, 5, 21, 5101, 5503, 22, 10513])
    np.testing.assert_array_equal(_heavy_flavour(codes), [5, 5, 5, 5, 4, 4, 4, 0, 0, 0, 0, 0, 0, 0, 5])


def test_pileup_overlay_rotates_and_displaces_pool_events():
    pool = PileupPool(25, seed=3)
    assert pool.offsets.shape[0] == 26
    pool_pt = np.hypot(pool.particles["px"].astype(float), pool.particles["py"].astype(float))
    mean_size = pool.offsets[-1] / 25
    overlay = pool.overlay(60, 20.0, np.random.default_rng(1))
    assert np.all(np.diff(overlay["event"]) >= 0)
    per_event = np.bincount(overlay["event"], minlength=60)
    assert per_event.mean() == pytest.approx(20 * mean_size, rel=0.2)
    # A rotation in phi and a mirror in z keep every particle's pT and |pz|, not its direction.
    pt = np.hypot(overlay["px"], overlay["py"])
    assert np.isin(np.round(pt, 4), np.round(pool_pt, 4)).all()
    assert not np.isin(np.round(overlay["px"], 4), np.round(pool.particles["px"].astype(float), 4)).all()
    # Each interaction sits at its own vertex along the beam (sigma_z = 45 mm).
    assert 25.0 < np.std(overlay["vz"]) < 70.0
    same = pool.overlay(60, 20.0, np.random.default_rng(1))
    np.testing.assert_array_equal(same["px"], overlay["px"])
    assert pool.overlay(10, 0.0, np.random.default_rng(1))["px"].shape[0] == 0


def test_no_pileup_at_mu_zero_and_clear_errors():
    quiet = list(generate_file_batches("wjets", 8, 1, 0, pileup_mu=0.0))
    busy = list(generate_file_batches("wjets", 8, 1, 0, pileup_mu=20.0, pileup_pool=20))
    assert sum(b.counts["EFlowTrack"].sum() for b in quiet) * 3 < sum(b.counts["EFlowTrack"].sum() for b in busy)
    with pytest.raises(ValueError, match="unknown sample 'higgs'"):
        PythiaSource("higgs", 1, 0)
    with pytest.raises(ValueError, match="pileup_mu must not be negative"):
        PythiaSource("ttbar", 1, 0, pileup_mu=-1.0)


def test_features_of_pythia_events_are_finite(pythia_files):
    for sample, path in pythia_files.items():
        for batch in read_batches(path, sample, f"{sample}/x", 0, 30):
            selection = K.select(batch)
            hlf = K.hlf_batch(batch, selection).to_pandas()
            assert np.isfinite(hlf.select_dtypes("number").to_numpy()).all()


def test_a_filter_that_keeps_nothing_stops_with_a_clear_error(monkeypatch):
    from lhc_assets.physics.generators import pythia

    monkeypatch.setitem(pythia.PROCESSES, "qcd", pythia.Process(PROCESSES["wjets"].settings, lepton_filter_pt=1e6))
    monkeypatch.setattr(pythia, "_MAX_GENERATED_PER_KEPT", 30)
    with pytest.raises(pythia.PythiaError, match="qcd: the generator filter kept 0 of"):
        PythiaSource("qcd", 1, 0, pileup_mu=0.0)._hard_events(5)


def test_an_unwritable_cache_is_reported(tmp_path):
    from lhc_assets.physics.generators.pythia import PythiaError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(PythiaError, match=r"cannot write Pythia's initialisation cache .* LHC_PYTHIA_CACHE"):
        make_pythia(PROCESSES["wjets"].settings, 1, cache_dir=blocker / "cache")


def test_one_pileup_pool_per_seed_shared_by_every_sample_and_file(tmp_path):
    assert not PileupPool.cache_path(20, seed=9, cache_dir=tmp_path).exists()
    fresh = PileupPool.shared(20, seed=9, cache_dir=tmp_path)
    assert list(tmp_path.glob("pileup-*.npz")) == [PileupPool.cache_path(20, seed=9, cache_dir=tmp_path)]
    assert PileupPool.cache_path(20, seed=10, cache_dir=tmp_path) != PileupPool.cache_path(20, 9, tmp_path)
    cached = PileupPool.shared(20, seed=9, cache_dir=tmp_path)
    np.testing.assert_array_equal(fresh.offsets, cached.offsets)
    for k, v in fresh.particles.items():
        np.testing.assert_array_equal(v, cached.particles[k])
    # The sources of two classes and two files overlay the same pool: pileup tells no class from another.
    pools = []
    for sample, index in (("ttbar", 0), ("qcd", 3)):
        source = PythiaSource(sample, 5, index, pileup_mu=2.0, pileup_pool=20)
        next(source.batches(2))
        pools.append(source._pool)
    np.testing.assert_array_equal(pools[0].particles["px"], pools[1].particles["px"])
