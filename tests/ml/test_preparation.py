"""Training-input kernels: scalers fitted on train, HLF scaling, the GRU input layout, shards."""

from __future__ import annotations

import numpy as np
import pytest

from lhc_assets.ml.contract import GRU_WIDTH, N_HLF
from lhc_assets.ml.preparation import (
    FeatureScalers,
    Moments,
    gru_input,
    one_hot,
    pad_standardise,
    scale_hlf,
    shard_of,
    sort_particles,
)
from lhc_assets.physics.schema import LLF_COLUMNS, LLF_ROWS, N_LLF

ETA, PHI = LLF_COLUMNS.index("eta"), LLF_COLUMNS.index("phi")


def _scalers(mean=0.0, std=1.0, lo=0.0, hi=1.0) -> FeatureScalers:
    return FeatureScalers(hlf_min=(lo,) * N_HLF, hlf_max=(hi,) * N_HLF, llf_mean=(mean,) * N_LLF,
                          llf_std=(std,) * N_LLF, train_events=1, train_particles=1)


def test_moments_merged_over_chunks_equal_the_moments_of_all_rows():
    rng = np.random.default_rng(1)
    rows = rng.normal(3.0, 2.0, size=(1000, N_LLF))
    merged = Moments()
    for chunk in np.array_split(rows, 7):
        merged = merged.merge(Moments.of(chunk))
    assert merged.count == 1000
    np.testing.assert_allclose(merged.mean, rows.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(merged.std(), rows.std(axis=0), rtol=1e-10)
    assert Moments().merge(Moments.of(rows[:0])).count == 0


def test_moments_of_chosen_events_equal_the_moments_of_their_rows():
    rows = np.random.default_rng(5).normal(1.0, 3.0, size=(12, N_LLF)).astype(np.float32)
    offsets = np.array([0, 3, 4, 9, 12])
    m = Moments.of_events(offsets, rows, np.array([2, 0]))
    chosen = np.concatenate([rows[4:9], rows[0:3]]).astype(np.float64)
    assert m.count == 8
    np.testing.assert_allclose(m.mean, chosen.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(m.std(), chosen.std(axis=0), rtol=1e-10)
    assert Moments.of_events(offsets, rows, np.array([], np.int64)).count == 0


def test_padding_and_standardising_sorted_particles_into_chosen_rows_of_a_larger_output():
    rows = np.concatenate([_event([0.5, 2.0, 0.1]), _event([0.3, 1.2])])
    rows[:, 1:] += np.random.default_rng(4).normal(size=(len(rows), N_LLF - 1)).astype(np.float32)
    offsets = np.array([0, 4, 7])
    s = _scalers(mean=0.7, std=3.0)
    sorted_offsets, sorted_rows = sort_particles(offsets, rows)
    assert sorted_offsets.tolist() == [0, 4, 7] and sorted_rows.shape == (7, N_LLF)
    np.testing.assert_array_equal(sorted_rows[3], rows[0])  # the lepton last
    expected = gru_input(offsets, rows, s)

    # Written into rows of a larger output (garbage before) in another order: each event lands where it was
    # sent, its padding rows zeroed, the other rows untouched.
    out = np.full((3, GRU_WIDTH), -1.0, np.float32)
    pad_standardise(sorted_offsets, sorted_rows, s, out=out, out_rows=np.array([2, 0]))
    np.testing.assert_array_equal(out[[2, 0]], expected)
    assert np.all(out[1] == -1.0)
    with pytest.raises(ValueError, match="out_rows must give each of the 2 events a row of out"):
        pad_standardise(sorted_offsets, sorted_rows, s, out=out, out_rows=np.array([0, 3]))


def test_scalers_round_trip_through_json_and_reject_bad_values():
    s = FeatureScalers(hlf_min=tuple(range(N_HLF)), hlf_max=tuple(range(1, N_HLF + 1)), llf_mean=(0.5,) * N_LLF,
                       llf_std=(2.0,) * N_LLF, train_events=10, train_particles=300)
    assert FeatureScalers.from_json(s.to_json()) == s
    with pytest.raises(ValueError, match="hlf_min must be 14 finite numbers"):
        FeatureScalers(hlf_min=(float("nan"),) * N_HLF, hlf_max=(1.0,) * N_HLF, llf_mean=(0.0,) * N_LLF,
                       llf_std=(1.0,) * N_LLF, train_events=1, train_particles=1)
    data = s.to_dict()
    data["hlf"]["columns"] = ["x"] * N_HLF
    with pytest.raises(ValueError, match="other feature columns"):
        FeatureScalers.from_dict(data)


def test_hlf_scaling_maps_the_train_range_onto_the_unit_interval():
    train = np.random.default_rng(2).uniform(-5, 50, size=(200, N_HLF))
    train[:, 3] = 7.0  # a constant column scales to 0, not NaN
    s = FeatureScalers(hlf_min=tuple(train.min(axis=0)), hlf_max=tuple(train.max(axis=0)), llf_mean=(0.0,) * N_LLF,
                       llf_std=(1.0,) * N_LLF, train_events=200, train_particles=1)
    scaled = scale_hlf(train, s.hlf_min, s.hlf_max)
    assert scaled.dtype == np.float32 and scaled.min() == 0.0 and scaled.max() == 1.0
    assert np.all(scaled[:, 3] == 0.0)


def test_one_hot_labels():
    np.testing.assert_array_equal(one_hot(np.array([2, 0, 1])), np.eye(3, dtype=np.float32)[[2, 0, 1]])
    with pytest.raises(ValueError, match="class labels"):
        one_hot(np.array([0, 3]))


def _event(dr_of_particles: list[float]) -> np.ndarray:
    """A lepton at (eta 0, phi 3.0) and particles at the given dR (placed across the phi wrap)."""
    rows = np.zeros((1 + len(dr_of_particles), N_LLF), np.float32)
    rows[:, 0] = np.arange(1, len(rows) + 1)  # E identifies each row
    rows[0, PHI] = 3.0
    for i, dr in enumerate(dr_of_particles, start=1):
        rows[i, PHI] = 3.0 + dr - 2 * np.pi if 3.0 + dr > np.pi else 3.0 + dr
    return rows


def test_gru_input_puts_padding_first_and_real_rows_by_decreasing_dr_with_the_lepton_last():
    rows = [_event([0.5, 2.0, 0.1, 1.0]), _event([0.3])]
    offsets = np.array([0, 5, 7])
    out = gru_input(offsets, np.concatenate(rows), _scalers(mean=1.0, std=2.0))
    assert out.shape == (2, GRU_WIDTH) and out.dtype == np.float32
    first = out[0].reshape(LLF_ROWS, N_LLF)
    assert not first[: LLF_ROWS - 5].any()  # padding rows exactly zero
    energies = first[LLF_ROWS - 5:, 0] * 2.0 + 1.0  # undo the standardisation of column E
    np.testing.assert_allclose(energies, [3, 5, 2, 4, 1])  # dR 2.0, 1.0, 0.5, 0.1, then the lepton
    second = out[1].reshape(LLF_ROWS, N_LLF)
    np.testing.assert_allclose(second[-2:, 0] * 2.0 + 1.0, [2, 1])
    assert not second[:-2].any()


def test_gru_input_of_chosen_events_equals_the_same_rows_of_all_events():
    rows = [_event([0.5, 2.0]), _event([0.3]), _event([1.0, 0.2, 0.7])]
    offsets = np.array([0, 3, 5, 9])
    every = gru_input(offsets, np.concatenate(rows))
    for events in ([2, 0, 1], [1], [2, 2]):
        np.testing.assert_array_equal(gru_input(offsets, np.concatenate(rows), events=np.array(events)),
                                      every[events])


def test_gru_input_rejects_events_without_rows_or_with_too_many():
    with pytest.raises(ValueError, match=r"1\.\.801 particle rows"):
        gru_input(np.array([0, 0]), np.zeros((0, N_LLF), np.float32), _scalers())
    with pytest.raises(ValueError, match=r"1\.\.801 particle rows"):
        gru_input(np.array([0, 802]), np.zeros((802, N_LLF), np.float32), _scalers())


def test_shards_are_contiguous_ranges_of_the_shuffle_key():
    keys = np.sort(np.random.default_rng(3).integers(-(2**63), 2**63 - 1, size=10_000, dtype=np.int64))
    shards = shard_of(keys, 7)
    assert np.all(np.diff(shards) >= 0) and set(shards) == set(range(7))
    assert shard_of(np.array([-(2**63), 2**63 - 1], np.int64), 4).tolist() == [0, 3]
