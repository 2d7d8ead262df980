"""Event images drawn from the particle lists: known pixels, the lepton's frame, the model and the reader."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lhc_assets.ml.dataset_writer import INCLUSIVE_SCHEMA, float_lists
from lhc_assets.ml.preparation import FeatureScalers
from lhc_assets.physics.schema import HLF_COLUMNS, LLF_COLUMNS

pytestmark = pytest.mark.slow  # imports TensorFlow

COL = {c: i for i, c in enumerate(LLF_COLUMNS)}
HCOL = {c: i for i, c in enumerate(HLF_COLUMNS)}
# Scalers that change nothing (mean 0, std 1; HLF range [0, 1]), so the hand-made rows are the physics values.
IDENTITY = FeatureScalers(hlf_min=(0.0,) * 14, hlf_max=(1.0,) * 14, llf_mean=(0.0,) * 19, llf_std=(1.0,) * 19,
                          train_events=1, train_particles=1)


def _row(pt: float, eta: float, phi: float, kind: str) -> np.ndarray:
    row = np.zeros(len(LLF_COLUMNS), np.float32)
    row[COL["pT"]], row[COL["eta"]], row[COL["phi"]], row[COL[kind]] = pt, eta, phi, 1.0
    return row


def _event(rows: list[np.ndarray], steps: int = 6, met: float = 0.0, phi_met: float = 0.0):
    particles = np.zeros((1, steps, len(LLF_COLUMNS)), np.float32)
    particles[0, steps - len(rows):] = np.stack(rows)  # padding first, the lepton last
    hlf = np.zeros((1, 14), np.float32)
    hlf[0, HCOL["MET"]], hlf[0, HCOL["phiMET"]] = met, phi_met
    return hlf, particles


def _draw(hlf, particles, grid):
    from lhc_assets.ml.images import _scaler_constants, draw_images

    return draw_images(hlf, particles, _scaler_constants(IDENTITY), grid).numpy()[0]


def _pixel(eta: float, dphi: float, grid) -> tuple[int, int]:
    return (math.floor((eta + grid.eta_max) / (2 * grid.eta_max) * grid.eta_bins),
            math.floor(dphi / (2 * math.pi) * grid.phi_bins + grid.phi_bins // 2 + 0.5) % grid.phi_bins)


def test_particles_land_in_their_pixels_in_the_leptons_frame_with_wraparound_and_reflection():
    from lhc_assets.ml.images import CHANNELS, ImageGrid

    grid = ImageGrid(eta_bins=20, phi_bins=16, eta_max=2.5, reflect_eta=True)
    lepton_phi, lepton_eta = 3.0, -1.2  # negative: the image is reflected so the lepton sits at eta = +1.2
    rows = [
        _row(10.0, 0.8, lepton_phi + 0.5, "isGamma"),  # phi 3.5 wraps to 3.5 - 2 pi; relative phi 0.5
        _row(4.0, -2.0, lepton_phi - 3.3, "isChHad"),  # relative phi -3.3 wraps to 2 pi - 3.3 (far side)
        _row(6.0, -2.0, lepton_phi - 3.3, "isChHad"),  # same pixel: intensities add before the log
        _row(2.0, 1.0, 0.1, "isNeuHad"),
        _row(50.0, 2.9, 0.0, "isGamma"),  # |eta| > eta_max after reflection: not drawn
        _row(30.0, lepton_eta, lepton_phi, "isMu"),
    ]
    hlf, particles = _event(rows, steps=8, met=40.0, phi_met=lepton_phi - 1.0)
    image = _draw(hlf, particles, grid)
    expected = {
        (*_pixel(1.2, 0.0, grid), CHANNELS.index("lepton")): 30.0,
        (*_pixel(-0.8, 0.5, grid), CHANNELS.index("photons")): 10.0,
        (*_pixel(2.0, 2 * math.pi - 3.3, grid), CHANNELS.index("charged_hadrons")): 10.0,
        (*_pixel(-1.0, 0.1 - lepton_phi, grid), CHANNELS.index("neutral_hadrons")): 2.0,
        (*_pixel(0.0, -1.0, grid), CHANNELS.index("met")): 40.0,
    }
    assert image.shape == (20, 16, 5)
    for (i, j, c), pt in expected.items():
        assert image[i, j, c] == pytest.approx(math.log1p(pt), rel=1e-5), (i, j, CHANNELS[c])
    assert np.count_nonzero(image) == len(expected)
    # Phi is periodic: the lepton is at the centre of column phi_bins // 2, so the opposite column 0 straddles
    # phi = +-pi, and the hadrons 3.3 rad below the lepton (past -pi) are there, not lost off the edge.
    assert _pixel(1.2, 0.0, grid)[1] == grid.phi_bins // 2
    assert _pixel(2.0, 2 * math.pi - 3.3, grid)[1] == _pixel(2.0, -math.pi + 0.01, grid)[1] == 0


def test_without_reflection_eta_keeps_its_sign_and_padding_only_events_are_blank():
    from lhc_assets.ml.images import CHANNELS, ImageGrid

    grid = ImageGrid(eta_bins=10, phi_bins=8, eta_max=2.5, reflect_eta=False)
    hlf, particles = _event([_row(5.0, -1.2, 0.0, "isEle")], met=20.0)
    image = _draw(hlf, particles, grid)
    assert image[(*_pixel(-1.2, 0.0, grid), CHANNELS.index("lepton"))] == pytest.approx(math.log1p(5.0))
    empty_hlf, empty = np.zeros((1, 14), np.float32), np.zeros((1, 5, 19), np.float32)
    assert not np.any(_draw(empty_hlf, empty, grid))  # no particles: no MET drawn either


def test_standardised_inputs_are_unscaled_with_the_fitted_scalers():
    from lhc_assets.ml.images import ImageGrid, _scaler_constants, draw_images

    grid = ImageGrid(eta_bins=10, phi_bins=8, eta_max=2.5)
    mean = np.arange(19, dtype=np.float64) * 0.1
    std = np.full(19, 2.0)
    scalers = FeatureScalers(hlf_min=(0.0,) * 14, hlf_max=(100.0,) * 14, llf_mean=tuple(mean), llf_std=tuple(std),
                             train_events=1, train_particles=1)
    hlf, raw = _event([_row(7.0, 0.3, 0.2, "isGamma"), _row(20.0, 0.6, 0.2, "isEle")])
    real = np.any(raw != 0, axis=-1)
    standardised = np.where(real[..., None], (raw - mean) / std, 0.0).astype(np.float32)
    scaled_hlf = (hlf / 100.0).astype(np.float32)
    drawn = draw_images(scaled_hlf, standardised, _scaler_constants(scalers), grid).numpy()[0]
    assert np.allclose(drawn, _draw(hlf, raw, grid), atol=1e-5)


def test_image_classifier_round_trips_in_safe_mode_and_scores_like_before(tmp_path):
    from lhc_assets.ml.models import image_classifier, load

    model = image_classifier(IDENTITY.to_dict(), eta_bins=16, phi_bins=12, filters=(4, 8), dense_units=8, seed=3)
    rng = np.random.default_rng(0)
    particles = np.zeros((4, 30, 19), np.float32)
    particles[:, 10:, COL["pT"]] = rng.uniform(1, 50, (4, 20))
    particles[:, 10:, COL["eta"]] = rng.uniform(-2, 2, (4, 20))
    particles[:, 10:, COL["phi"]] = rng.uniform(-3, 3, (4, 20))
    particles[:, 10:, COL["isChHad"]] = 1.0
    x = {"hlf_input": rng.uniform(0, 1, (4, 14)).astype(np.float32), "gru_input": particles}
    before = model.predict(x, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = load(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), before, atol=1e-6)
    assert loaded.get_layer("event_image").get_config()["eta_bins"] == 16
    # Cutting leading padding does not change the images, so bucketed batches score the same.
    np.testing.assert_allclose(loaded.predict({**x, "gru_input": particles[:, 10:]}, verbose=0), before, atol=1e-6)


def _inclusive_dataset(root, n: int = 96) -> None:
    rng = np.random.default_rng(2)
    gru = np.zeros((n, 801, 19), np.float32)
    gru[:, -40:, COL["pT"]] = rng.uniform(1, 30, (n, 40))
    gru[:, -40:, COL["eta"]] = rng.uniform(-2, 2, (n, 40))
    gru[:, -40:, COL["phi"]] = rng.uniform(-3, 3, (n, 40))
    gru[:, -40:, COL["isGamma"]] = 1.0
    labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
    table = pa.Table.from_arrays([
        pa.array(["ttbar"] * n), pa.array(["f.root"] * n), pa.array(np.arange(n)), float_lists(labels),
        float_lists(rng.uniform(0, 1, (n, 14)).astype(np.float32)), float_lists(gru.reshape(n, -1)),
    ], schema=INCLUSIVE_SCHEMA)
    pq.write_table(table, root / "part-00000.parquet", row_group_size=16)


def test_the_image_reader_is_reproducible_with_its_seed(tmp_path):
    from lhc_assets.ml.images import ImageGrid, image_dataset
    from lhc_assets.ml.readers import petastorm_dataset

    _inclusive_dataset(tmp_path)
    grid = ImageGrid(eta_bins=12, phi_bins=8)

    def read(seed: int) -> np.ndarray:
        with petastorm_dataset(tmp_path, "inclusive", batch_size=32, seed=seed) as batches:
            return np.concatenate([x.numpy() for x, _ in image_dataset(batches, IDENTITY, grid)])

    first, again, other = read(7), read(7), read(8)
    assert first.shape == (96, 12, 8, 5) and np.any(first)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)  # another seed, another row-group order
    # The same events either way: the order changes, not the images.
    assert np.isclose(first.sum(), other.sum(), rtol=1e-5)


def test_mean_images_per_class_and_the_picture():
    from lhc_assets.ml.images import ImageGrid, mean_images, plot_class_images

    grid = ImageGrid(eta_bins=6, phi_bins=4)
    images = np.zeros((4, 6, 4, 5), np.float32)
    images[0, 1, 1, 0], images[1, 1, 1, 0], images[2, 3, 2, 1] = 2.0, 4.0, 5.0
    labels = np.array([0, 0, 1, 1])
    mean = mean_images(images, labels, 3)
    assert mean[0, 1, 1, 0] == 3.0 and mean[1, 3, 2, 1] == 2.5 and not np.any(mean[2])
    png = plot_class_images(images, labels, ["QCD", "ttbar", "wjets"], grid)
    assert png.startswith(b"\x89PNG")
