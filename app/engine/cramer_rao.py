"""The Cramér–Rao bound of a star's centroid: the smallest scatter any unbiased estimator
can reach for its PSF, flux and pixel variance.

Tests and benchmarks score centroiders against it, star by star: the model of the pixels is
μ = F·P(x − x₀, y − y₀) + b with the true pixel-integrated PSF P, and the Fisher matrix of
θ = (x₀, y₀, F, b) is F_ij = Σ (∂μ/∂θ_i)(∂μ/∂θ_j) / V over a stamp about the star, V the
true variance of each pixel. The bound on x₀ is √(F⁻¹)₀₀ (and on y₀ √(F⁻¹)₁₁): flux and
sky are free parameters, as they are to any centroider.

`centroid_bounds` also gives the scatter of the best *PSF-weighted* centroid, the maximum of
the image's correlation with the PSF (what SdssCentroid interpolates): to first order its
error is Σ ∂P·n / (F Σ ∂P²) for pixel noise n, of variance Σ ∂P² V / (F Σ ∂P²)². Where the
sky dominates V that is the bound itself; where the star's own photons do, the PSF is no
longer the optimal weight (∂ ln P is), and for a Gaussian PSF the PSF-weighted scatter
tends to 4/3 of the bound.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from app.engine.psf_kolmogorov import KolmogorovPsf, render_batch, stamp_origin

STEP = 1e-3  # pixels: the central difference of the rendered PSF (error ~1e-7 relative)

Renderer = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def kolmogorov_renderer(psf: KolmogorovPsf, x: np.ndarray, y: np.ndarray) -> Renderer:
    """Unit-flux stamps of the simulator's PSF at each star's own FWHM, at given in-stamp
    positions: what `centroid_bounds` differentiates."""
    k0 = psf.k0(np.asarray(x, float), np.asarray(y, float))

    def render(px: np.ndarray, py: np.ndarray, size: int) -> np.ndarray:
        return render_batch(size, k0, px, py, np.ones(len(px)))

    return render


def centroid_bounds(
    x: np.ndarray, y: np.ndarray, flux: np.ndarray, variance: np.ndarray,
    render: Renderer, size: int,
) -> dict[str, np.ndarray]:
    """Per-star Cramér–Rao bounds ``x``, ``y`` and PSF-weighted scatters ``psf_x``,
    ``psf_y``, in pixels.

    Parameters
    ----------
    x, y
        True positions (array frame: integers at pixel centres).
    flux
        True total fluxes (counts).
    variance
        The true variance plane (counts²), read on a ``size``² stamp about each star.
    render
        Unit-flux PSF stamps ``(N, size, size)`` at in-stamp positions (``px``, ``py``).
    size
        Stamp side (pixels); a few FWHM is enough, the bound converges quickly with it.
    """
    x, y, flux = (np.asarray(a, float) for a in (x, y, flux))
    x0, y0, px, py = stamp_origin(x, y, size)
    h, w = variance.shape
    off = np.arange(size)
    rows = np.clip(y0[:, None] + off, 0, h - 1)
    cols = np.clip(x0[:, None] + off, 0, w - 1)
    var = variance[rows[:, :, None], cols[:, None, :]].astype(np.float64)
    on = (((y0[:, None] + off) >= 0) & ((y0[:, None] + off) < h))[:, :, None] & (
        ((x0[:, None] + off) >= 0) & ((x0[:, None] + off) < w))[:, None, :]
    inv_var = np.where(on & (var > 0), 1.0 / np.where(var > 0, var, 1.0), 0.0)
    p = render(px, py, size)
    dpx = (render(px + STEP, py, size) - render(px - STEP, py, size)) / (2 * STEP)
    dpy = (render(px, py + STEP, size) - render(px, py - STEP, size)) / (2 * STEP)
    # ∂μ/∂x₀ = −F ∂P/∂x (the sign does not enter the bound)
    grads = np.stack([flux[:, None, None] * dpx, flux[:, None, None] * dpy, p,
                      np.ones_like(p)], axis=1)  # (N, 4, S, S)
    fisher = np.einsum("nijk,nljk->nil", grads * inv_var[:, None], grads)
    cov = np.linalg.inv(fisher)
    var = np.where(inv_var > 0, 1.0 / np.where(inv_var > 0, inv_var, 1.0), 0.0)

    def psf_weighted(d: np.ndarray) -> np.ndarray:
        d2 = (d * d).sum(axis=(1, 2))
        return np.sqrt((d * d * var).sum(axis=(1, 2))) / (flux * d2)

    return {"x": np.sqrt(cov[:, 0, 0]), "y": np.sqrt(cov[:, 1, 1]),
            "psf_x": psf_weighted(dpx), "psf_y": psf_weighted(dpy)}
