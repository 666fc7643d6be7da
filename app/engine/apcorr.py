"""Aperture corrections: a flux's ratio to a large aperture, as a smooth field over the image.

LSST's ApCorrMap: measured on bright point sources, one field per corrected flux
(``base_PsfFlux``, ``base_GaussianFlux``), applied to every source measured on the exposure,
forced measurements included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.engine.psf_model import poly_terms

APCORR_MIN_STARS = 6


@dataclass
class ApCorr:
    """One aperture-correction field: coefficients of a linear polynomial in (u, v)."""

    coef: np.ndarray
    err: float
    n_stars: int
    width: int
    height: int

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u = 2 * np.asarray(x, float) / max(self.width - 1, 1) - 1
        v = 2 * np.asarray(y, float) / max(self.height - 1, 1) - 1
        return poly_terms(u, v, 1 if len(self.coef) == 3 else 0) @ self.coef


def fit_apcorr(x: np.ndarray, y: np.ndarray, ratio: np.ndarray, err: np.ndarray, width: int,
               height: int) -> ApCorr | None:
    """Weighted, clipped fit of the ratio: linear in position with enough stars, else constant."""
    if len(ratio) < APCORR_MIN_STARS:
        return None
    order = 1 if len(ratio) >= 3 * APCORR_MIN_STARS else 0
    u = 2 * x / max(width - 1, 1) - 1
    v = 2 * y / max(height - 1, 1) - 1
    a = poly_terms(u, v, order)
    wts = 1.0 / np.maximum(err, 1e-6) ** 2
    keep = np.ones(len(ratio), dtype=bool)
    coef = np.zeros(a.shape[1])
    for _ in range(3):
        sw = np.sqrt(wts[keep])
        coef, *_ = np.linalg.lstsq(a[keep] * sw[:, None], ratio[keep] * sw, rcond=None)
        resid = (ratio - a @ coef) / np.maximum(err, 1e-6)
        keep = np.abs(resid) < 3 * max(1.4826 * np.median(np.abs(resid[keep])), 1.0)
        if keep.sum() < APCORR_MIN_STARS:
            return None
    err_mean = float(1.0 / np.sqrt(wts[keep].sum()))
    return ApCorr(coef, err_mean, int(keep.sum()), width, height)
