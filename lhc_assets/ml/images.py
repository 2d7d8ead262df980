"""Event images drawn from the stored particle lists, inside the TensorFlow graph (no second copy of the data).

The study's "abstract images": each particle of an event is drawn at its (eta, phi) with its pT as intensity,
one channel per kind (the lepton, photons, charged hadrons, neutral hadrons, and the missing ET at eta = 0).
Here they are built from what ``train_set`` / ``test_set`` already hold, the standardised particle lists and
the scaled HLF, by the non-trainable ``EventImage`` layer, which undoes the scaling with the fitted
``feature_scalers`` and scatters the particles into a grid:

* phi is rotated so the lepton sits at phi = 0, and (optionally) eta is reflected so the lepton's eta is
  positive: the classes cannot be told apart by an arbitrary orientation of the event;
* the grid is ``eta_bins`` x ``phi_bins`` over |eta| < ``eta_max`` and the whole phi circle, periodic, with the
  lepton at the centre of column ``phi_bins // 2`` (columns are 2 pi / phi_bins wide around it; what passes the
  last column's edge wraps to the first);
* a pixel holds log(1 + sum of the pT in GeV) of its particles, so a 500 GeV jet does not drown the rest.

Because the layer is part of the image classifier, the classifier reads the same "inclusive" inputs as the
inclusive classifier: the Petastorm readers, bucketing, Spark scoring and model files work unchanged.
``image_dataset`` applies the same layer to a reader's batches, for pictures and for timing the image
building alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from lhc_assets.ml.contract import GRU_INPUT, HLF_INPUT
from lhc_assets.ml.preparation import FeatureScalers
from lhc_assets.physics.schema import HLF_COLUMNS, LLF_COLUMNS

CHANNELS = ("lepton", "photons", "charged_hadrons", "neutral_hadrons", "met")
N_CHANNELS = len(CHANNELS)
_LLF = {name: i for i, name in enumerate(LLF_COLUMNS)}
_HLF = {name: i for i, name in enumerate(HLF_COLUMNS)}


@dataclass(frozen=True)
class ImageGrid:
    """The pixel grid: ``eta_bins`` x ``phi_bins`` over |eta| < ``eta_max`` and phi in [-pi, pi)."""

    eta_bins: int = 64
    phi_bins: int = 40
    eta_max: float = 3.0  # the tracker (2.5) and the central calorimeters; the forward region is coarse anyway
    reflect_eta: bool = True

    def __post_init__(self) -> None:
        if self.eta_bins < 1 or self.phi_bins < 1 or not self.eta_max > 0:
            raise ValueError(f"image grid needs positive bins and eta_max, got {self}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.eta_bins, self.phi_bins, N_CHANNELS)

    def as_dict(self) -> dict[str, Any]:
        return {"eta_bins": self.eta_bins, "phi_bins": self.phi_bins, "eta_max": self.eta_max,
                "reflect_eta": self.reflect_eta}


# The study's abstract images: 150 x 94 pixels over |eta| < 5 and the phi circle (15 pixels per unit).
STUDY_GRID = ImageGrid(eta_bins=150, phi_bins=94, eta_max=5.0)
DEFAULT_GRID = ImageGrid()


def _scaler_constants(scalers: FeatureScalers | Mapping[str, Any]) -> dict[str, list[float]]:
    s = scalers if isinstance(scalers, FeatureScalers) else FeatureScalers.from_dict(dict(scalers))
    span = s.hlf_span()
    return {"llf_mean": [float(v) for v in s.llf_mean], "llf_scale": [float(1.0 / v) for v in s.llf_inv_std()],
            "hlf_min": [float(v) for v in s.hlf_min], "hlf_span": [float(v) for v in span]}


@keras.saving.register_keras_serializable(package="lhc_assets")
class EventImage(keras.layers.Layer):
    """{"hlf_input": (B, 14) scaled, "gru_input": (B, T, 19) standardised, padding first} -> (B, eta, phi, 5).

    Non-trainable; its constants (the scalers' inverse and the grid) are in its config, so a saved model
    carries them and loads with ``safe_mode=True``.
    """

    def __init__(self, llf_mean: list[float], llf_scale: list[float], hlf_min: list[float], hlf_span: list[float],
                 eta_bins: int, phi_bins: int, eta_max: float, reflect_eta: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.constants = {"llf_mean": list(llf_mean), "llf_scale": list(llf_scale), "hlf_min": list(hlf_min),
                          "hlf_span": list(hlf_span)}
        self.grid = ImageGrid(int(eta_bins), int(phi_bins), float(eta_max), bool(reflect_eta))

    @classmethod
    def for_scalers(cls, scalers: FeatureScalers | Mapping[str, Any], grid: ImageGrid = DEFAULT_GRID,
                    **kwargs: Any) -> EventImage:
        return cls(**_scaler_constants(scalers), **grid.as_dict(), **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self.constants, **self.grid.as_dict()}

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return (None, *self.grid.shape)

    def call(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return draw_images(inputs[HLF_INPUT], inputs[GRU_INPUT], self.constants, self.grid)


def _wrap(phi: tf.Tensor) -> tf.Tensor:
    """phi in [-pi, pi)."""
    return tf.math.floormod(phi + math.pi, 2.0 * math.pi) - math.pi


def draw_images(hlf: tf.Tensor, particles: tf.Tensor, constants: Mapping[str, list[float]],
                grid: ImageGrid) -> tf.Tensor:
    """The images of a batch (see the module docstring); ``constants`` from the fitted feature scalers."""
    particles = tf.convert_to_tensor(particles, tf.float32)
    hlf = tf.convert_to_tensor(hlf, tf.float32)
    batch = tf.shape(particles)[0]
    real = tf.reduce_any(tf.not_equal(particles, 0.0), axis=-1)  # padding rows are exactly zero
    x = particles * tf.constant(constants["llf_scale"], tf.float32) + tf.constant(constants["llf_mean"], tf.float32)
    h = hlf * tf.constant(constants["hlf_span"], tf.float32) + tf.constant(constants["hlf_min"], tf.float32)
    pt, eta, phi = x[..., _LLF["pT"]], x[..., _LLF["eta"]], x[..., _LLF["phi"]]

    def flag(name: str) -> tf.Tensor:
        return x[..., _LLF[name]] > 0.5

    # The rows are sorted by dR to the lepton, descending: the lepton is the last row.
    lepton_eta, lepton_phi = eta[:, -1:], phi[:, -1:]
    kind = tf.where(flag("isEle") | flag("isMu"), 0,
                    tf.where(flag("isGamma"), 1, tf.where(flag("isChHad"), 2, tf.where(flag("isNeuHad"), 3, -1))))
    # The missing ET as one more "particle" per event, at eta = 0.
    met = tf.stack([h[:, _HLF["MET"]], tf.zeros_like(h[:, 0]), h[:, _HLF["phiMET"]]], axis=-1)[:, None, :]
    pt = tf.concat([pt, met[..., 0]], axis=1)
    eta = tf.concat([eta, met[..., 1]], axis=1)
    phi = tf.concat([phi, met[..., 2]], axis=1)
    kind = tf.concat([kind, tf.fill([batch, 1], N_CHANNELS - 1)], axis=1)
    real = tf.concat([real, tf.reduce_any(real, axis=1, keepdims=True)], axis=1)

    if grid.reflect_eta:
        eta = eta * tf.where(lepton_eta < 0.0, -1.0, 1.0)
    phi = _wrap(phi - lepton_phi)
    # The lepton (relative phi 0 up to rounding) sits at the centre of column phi_bins // 2, not on an edge: graph
    # rewrites, XLA and ONNX Runtime round its relative phi differently (+-1e-7), which would flip it between two
    # columns. The MET's eta is exactly 0 (a constant), so x * (bins / range) + bins / 2 keeps it on one side.
    i = tf.cast(tf.floor(eta * (grid.eta_bins / (2.0 * grid.eta_max)) + grid.eta_bins / 2), tf.int32)
    j = tf.math.floormod(tf.cast(tf.floor(phi * (grid.phi_bins / (2.0 * math.pi)) + (grid.phi_bins // 2 + 0.5)),
                                 tf.int32), grid.phi_bins)
    inside = real & (kind >= 0) & (i >= 0) & (i < grid.eta_bins) & (pt > 0.0)
    event = tf.broadcast_to(tf.range(batch)[:, None], tf.shape(kind))
    pixels = grid.eta_bins * grid.phi_bins * N_CHANNELS
    flat = ((event * grid.eta_bins + i) * grid.phi_bins + j) * N_CHANNELS + kind
    size = batch * pixels
    # Particles outside the grid (or padding) go to one extra segment that is dropped.
    segments = tf.reshape(tf.where(inside, flat, size), (-1, 1))
    # A scatter-add of rank-1 indices and log(1 + x) rather than unsorted_segment_sum and log1p: the same numbers,
    # and ONNX has both (ScatterND with reduction "add", Log), so the model exports (lhc_assets.ml.deployment).
    summed = tf.tensor_scatter_nd_add(tf.zeros([size + 1]), segments, tf.reshape(tf.where(inside, pt, 0.0), [-1]))
    return tf.reshape(tf.math.log(1.0 + summed[:size]), (batch, grid.eta_bins, grid.phi_bins, N_CHANNELS))


def image_dataset(batches: tf.data.Dataset, scalers: FeatureScalers | Mapping[str, Any],
                  grid: ImageGrid = DEFAULT_GRID) -> tf.data.Dataset:
    """``(inclusive inputs, label)`` batches of a reader -> ``(images, label)`` batches."""
    constants = _scaler_constants(scalers)

    def to_images(x: Mapping[str, tf.Tensor], label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return draw_images(x[HLF_INPUT], x[GRU_INPUT], constants, grid), label

    return batches.map(to_images)


def mean_images(images: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, eta, phi, channels): the average image of each class (zeros for an absent class)."""
    out = np.zeros((n_classes, *images.shape[1:]), np.float64)
    for c in range(n_classes):
        members = images[labels == c]
        if len(members):
            out[c] = members.mean(axis=0)
    return out


@keras.saving.register_keras_serializable(package="lhc_assets")
class PeriodicPadding2D(keras.layers.Layer):
    """Pads (B, eta, phi, C) by ``pad`` pixels: zeros beyond the eta edges, the other side of the circle in phi,
    so a 'valid' convolution after it sees phi as periodic."""

    def __init__(self, pad: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pad = int(pad)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pad": self.pad}

    def compute_output_shape(self, input_shape: Any) -> tuple:
        b, h, w, c = input_shape
        return (b, None if h is None else h + 2 * self.pad, None if w is None else w + 2 * self.pad, c)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        p = self.pad
        x = tf.concat([x[:, :, -p:, :], x, x[:, :, :p, :]], axis=2)
        return tf.pad(x, [[0, 0], [p, p], [0, 0], [0, 0]])


def class_images(test_path: str, scalers: FeatureScalers | Mapping[str, Any], grid: ImageGrid,
                 max_events: int = 4000, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """The images and class indices of the first ``max_events`` events of a dataset, in stored order."""
    from lhc_assets.ml.readers import arrow_dataset

    images, labels, seen = [], [], 0
    with arrow_dataset(test_path, "inclusive", batch_size=batch_size, shuffle_row_groups=False) as batches:
        for x, y in image_dataset(batches, scalers, grid):
            images.append(x.numpy())
            labels.append(np.argmax(y.numpy(), axis=1))
            seen += len(labels[-1])
            if seen >= max_events:
                break
    return np.concatenate(images)[:max_events], np.concatenate(labels)[:max_events]


def plot_class_images(images: np.ndarray, labels: np.ndarray, class_names: list[str], grid: ImageGrid,
                      examples: int = 1) -> bytes:
    """A PNG: per class, its average image and ``examples`` single events, one panel per channel (eta across,
    phi rotated so the lepton is at 0 up)."""
    from matplotlib.figure import Figure

    from lhc_assets.ml.evaluation import png_bytes

    mean = mean_images(images, labels, len(class_names))
    rows = []
    for c, name in enumerate(class_names):
        rows.append((f"{name}: mean of {int(np.sum(labels == c))}", mean[c]))
        rows += [(f"{name}: one event", images[k]) for k in np.flatnonzero(labels == c)[:examples]]
    fig = Figure(figsize=(2.2 * N_CHANNELS, 1.9 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), N_CHANNELS, squeeze=False)
    # Column phi_bins // 2 is centred on the lepton, so the columns' edges sit half a column off +-pi.
    low = -(grid.phi_bins // 2 + 0.5) * 2.0 * math.pi / grid.phi_bins
    extent = (-grid.eta_max, grid.eta_max, low, low + 2.0 * math.pi)
    for r, (title, image) in enumerate(rows):
        for ch, channel in enumerate(CHANNELS):
            ax = axes[r][ch]
            ax.imshow(image[:, :, ch].T, origin="lower", extent=extent, aspect="auto", cmap="viridis")
            ax.set_title(f"{title}\n{channel}" if ch == 0 else channel, fontsize=7)
            ax.tick_params(labelsize=6)
            if ch == 0:
                ax.set_ylabel("phi - phi(lepton)", fontsize=6)
            if r == len(rows) - 1:
                ax.set_xlabel("eta", fontsize=6)
    return png_bytes(fig)
