"""Vectorized relativistic kinematics on flat numpy arrays (one entry per object).

Units: GeV and radians. Four-vectors are passed as separate (E, px, py, pz) arrays so that
every operation stays a single numpy expression over a whole batch of objects.
"""

from __future__ import annotations

import numpy as np

FloatArray = np.ndarray


def wrap_phi(phi: FloatArray) -> FloatArray:
    """Wrap angles into [-pi, pi)."""
    return (phi + np.pi) % (2.0 * np.pi) - np.pi


def from_pt_eta_phi_m(
    pt: FloatArray, eta: FloatArray, phi: FloatArray, mass: FloatArray | float = 0.0
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """(E, px, py, pz) of objects given pT, pseudorapidity, azimuth and mass."""
    px = pt * np.cos(phi)
    py = pt * np.sin(phi)
    pz = pt * np.sinh(eta)
    energy = np.sqrt(px * px + py * py + pz * pz + np.square(mass))
    return energy, px, py, pz


def from_pt_rapidity_phi_m(
    pt: FloatArray, rapidity: FloatArray, phi: FloatArray, mass: FloatArray | float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """(E, px, py, pz) of massive objects given pT, rapidity, azimuth and mass."""
    mt = np.sqrt(pt * pt + np.square(mass))
    return mt * np.cosh(rapidity), pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(rapidity)


def to_pt_eta_phi(
    px: FloatArray, py: FloatArray, pz: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """pT, pseudorapidity and azimuth of three-momenta (eta of a zero-pT object is 0)."""
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.where(pt > 0.0, np.arcsinh(pz / np.where(pt > 0.0, pt, 1.0)), 0.0)
    return pt, eta, np.arctan2(py, px)


def two_body_decay(
    energy: FloatArray,
    px: FloatArray,
    py: FloatArray,
    pz: FloatArray,
    mass: FloatArray,
    m1: FloatArray | float,
    m2: FloatArray | float,
    rng: np.random.Generator,
) -> tuple[tuple[FloatArray, ...], tuple[FloatArray, ...]]:
    """Isotropic two-body decays of parents (E, p, mass) into daughters of masses m1, m2.

    Returns the two daughters' (E, px, py, pz) in the lab frame.
    """
    n = energy.shape[0]
    m1 = np.broadcast_to(np.asarray(m1, dtype=np.float64), (n,))
    m2 = np.broadcast_to(np.asarray(m2, dtype=np.float64), (n,))
    mass2 = mass * mass
    pstar = np.sqrt(np.clip((mass2 - (m1 + m2) ** 2) * (mass2 - (m1 - m2) ** 2), 0.0, None)) / (2.0 * mass)
    cos_t = rng.uniform(-1.0, 1.0, n)
    sin_t = np.sqrt(1.0 - cos_t * cos_t)
    phi = rng.uniform(-np.pi, np.pi, n)
    qx, qy, qz = pstar * sin_t * np.cos(phi), pstar * sin_t * np.sin(phi), pstar * cos_t
    e1 = np.sqrt(pstar * pstar + m1 * m1)
    e2 = np.sqrt(pstar * pstar + m2 * m2)

    # Boost by the parent velocity beta = p / E.
    bx, by, bz = px / energy, py / energy, pz / energy
    b2 = bx * bx + by * by + bz * bz
    gamma = 1.0 / np.sqrt(np.clip(1.0 - b2, 1e-12, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        g2 = np.where(b2 > 0.0, (gamma - 1.0) / b2, 0.0)

    def boost(e: FloatArray, x: FloatArray, y: FloatArray, z: FloatArray) -> tuple[FloatArray, ...]:
        bp = bx * x + by * y + bz * z
        k = g2 * bp + gamma * e
        return gamma * (e + bp), x + k * bx, y + k * by, z + k * bz

    return boost(e1, qx, qy, qz), boost(e2, -qx, -qy, -qz)


def invariant_mass(energy: FloatArray, px: FloatArray, py: FloatArray, pz: FloatArray) -> FloatArray:
    """Invariant mass, clipped at zero against rounding."""
    return np.sqrt(np.clip(energy * energy - px * px - py * py - pz * pz, 0.0, None))
