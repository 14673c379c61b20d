"""Diagnostics of the double-ellipsoid geometry: gap, isotropy, thin shell.

Everything that follows from the running statistics alone is computed from :class:`Moments`;
isotropy and the spread of shell radii need a sample of the vectors themselves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import logsumexp

from indexer.moments import Moments


@dataclass(frozen=True)
class Gap:
    gap: float
    cos_means: float


@dataclass(frozen=True)
class Isotropy:
    i1: float
    i2: float


@dataclass(frozen=True)
class Shell:
    """Thin-shell statistics of raw vectors around their raw mean."""

    mean_norm: float
    norm_std: float
    rms_radius: float
    mean_radius: float | None = None
    radius_variance: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


def modality_gap(image: Moments, text: Moments) -> Gap:
    """``|m̂_img − m̂_txt|`` and the cosine between the two modality means."""
    a, b = image.mean, text.mean
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cos = float(a @ b / (na * nb)) if na and nb else float("nan")
    return Gap(gap=float(np.linalg.norm(a - b)), cos_means=cos)


def isotropy(unit: NDArray[np.floating]) -> Isotropy:
    """Isotropy I1 and I2 (isotropy paper 3.1.2) of a sample of normalised rows.

    ``Z(v) = Σ_i exp(vᵀw_i)`` over the eigenvectors ``v`` (the *columns* of ``eigh``) of the
    uncentred ``WᵀW``. Sign convention: each eigenvector is oriented so that ``Σ_i vᵀw_i ≥ 0``.
    """
    w = np.asarray(unit, dtype=np.float64)
    _, vecs = np.linalg.eigh(w.T @ w)
    proj = w @ vecs
    sign = np.where(proj.sum(axis=0) < 0, -1.0, 1.0)
    log_z = logsumexp(proj * sign, axis=0)
    z = np.exp(log_z - log_z.max())
    return Isotropy(i1=float(z.min() / z.max()), i2=float(z.std() / z.mean()))


def shell(m: Moments, raw_sample: NDArray[np.floating] | None = None) -> Shell:
    """Thin shell: norms of raw vectors and their distance to the raw mean.

    ``rms_radius = sqrt(E|v|² − |E v|²)`` follows from the running statistics; the mean and
    variance of ``|v − m|`` need a sample of raw vectors.
    """
    if m.n == 0:
        return Shell(0.0, 0.0, 0.0)
    msq = m.norm_sq_sum / m.n - float(m.raw_mean @ m.raw_mean)
    mean_r = var_r = None
    if raw_sample is not None and len(raw_sample):
        r = np.linalg.norm(np.asarray(raw_sample, np.float64) - m.raw_mean, axis=1)
        mean_r, var_r = float(r.mean()), float(r.var())
    return Shell(
        mean_norm=m.mean_norm,
        norm_std=float(np.sqrt(m.norm_variance)),
        rms_radius=float(np.sqrt(max(msq, 0.0))),
        mean_radius=mean_r,
        radius_variance=var_r,
    )
