"""The oversampled PSF fit: PSFEx's super-resolved pixel basis (``BASIS_TYPE PIXEL``).

On an undersampled image a star's pixels cannot be shifted to a common centre without
error (the interpolation needs the frequencies the pixels do not hold), so a model fitted to
centred stamps is wrong by per cents, differently at each sub-pixel phase. Instead, as
PSFEx's ``psf_refine`` does, the model is the pixel-convolved PSF (the "effective PSF" of
Anderson & King 2000) on a grid ``step`` pixels fine, and each star's pixels, where they
are, are fitted as samples of it: the forward model of star s is its flux times the model
at its position, resampled to its pixels at its sub-pixel phase
(:func:`~app.engine.psf_resample.resample_weights`, PsfexPsf's interpolation, so afw
evaluates the archived model as it was fitted). Many stars at different phases fill the fine
grid; the normal equations are solved by preconditioned conjugate gradients.

The unknowns are the fine pixels of every polynomial term within ``FIT_FWHM`` FWHM of the
centre (PSFEx's per-pixel polynomial, ``psf_make``'s form), regularised weakly towards the
model the fit starts from (PSFEx's Tikhonov term); beyond, in the wings, the model is the
pixel-resolution mean image resampled to the fine grid. Two conditions every effective PSF
meets are imposed at a grid of phases (its pixels sum to one and centre on the star at any
phase): without them the fine grid could trade stars' fluxes and positions against their
phase. Between fits the stars' positions are refined with the model (``psf_fit``).

Measured on simulated stars (pixel-integrated Gaussians of 1.5 px FWHM, true positions and
fluxes): the fluxes of a star at 25 phases spread by 0.3–0.9 % inside the field and up to
1.8 % towards its corners, where the model of centred stamps is 2–4 % low at half-pixel
phases. What is left is the model's noise: wider fitted regions or more polynomial freedom
make it larger, not smaller; the aim, 0.5 %, is not reached yet, and in the pipeline the
candidates' centroids (SdssCentroid's phase error, ±0.04 px at 1.5 px) and the star
selection (adaptive sizes collapse below 1.8 px) add to it, so the oversampled fit is not
the default (``psfSamplingSize``).

Departures from PSFEx, with reasons:

- PSFEx refines only the ``BASIS_NUMBER²`` (400) brightest fine pixels, solving dense normal
  equations; here every fine pixel within ``FIT_FWHM`` FWHM is fitted, matrix-free, which
  costs less and leaves no seam inside the core.
- photutils' ``EPSFBuilder`` builds the same effective PSF by Anderson & King's iteration
  (residuals binned onto the fine grid, median-stacked, smoothed with a quartic kernel,
  stars refitted one by one with a nonlinear fitter). It is not used: it fits one PSF for
  the whole image (no spatial variation), its smoothing kernel broadens an undersampled PSF
  (the bias the fit is meant to remove), and its per-star astropy fits take seconds for the
  few hundred stars that this least-squares solve handles in a fraction of that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.engine.psf_model import PixelPsf, poly_terms
from app.engine.psf_resample import psfex_step, resample_weights

PSF_AUTO_FWHM = 3.0  # PSFEx psf.h: below this FWHM (pixels) PIXEL_AUTO super-resolves
AUTO_STEP_SIGMAS = 0.5  # PSFEx makeit.c, PSF_SAMPLING 0: the step is half the stars' sigma
FIT_FWHM = 4.0  # half-size of the fitted region, in FWHM (at most the stamp)
REACH = 5  # fine samples a resampled pixel reads on either side (Lanczos-5)
REGULARISATION = 1e-6  # Tikhonov weight, relative to the median data weight of a pixel
CG_TOLERANCE = 1e-6  # relative residual of the normal equations at which to stop
CG_MAX_ITER = 200
CORRECTION_TERMS = 6


@dataclass
class StarPixels:
    """Stars' stamps where they fell: each centred on the pixel nearest the star.

    ``data`` and ``weights`` are (N, K, K): the counts, and inverse variances (0 where a
    pixel must not count); ``dx, dy`` the star's offset from its stamp's central pixel.
    """

    data: np.ndarray
    weights: np.ndarray
    dx: np.ndarray
    dy: np.ndarray


def auto_step(fwhm: float) -> float:
    """PSFEx's automatic sampling step (``PSF_SAMPLING 0``): ``(FWHM / 2.35) · 0.5``, half
    the stars' sigma, about 4.7 samples per FWHM."""
    return float(fwhm / 2.35 * AUTO_STEP_SIGMAS)


def fine_side(size: int, step: float) -> int:
    """Samples across the fine grid of a model of ``size``-pixel kernels at ``step``, odd:
    its outermost samples fall on the kernel's outermost pixel centres."""
    return 2 * int(round((size // 2) / step)) + 1


def upsample(psf: PixelPsf, step: float) -> np.ndarray:
    """A pixel-resolution model's basis resampled to a grid ``step`` pixels fine."""
    k = psf.size
    m = fine_side(k, step)
    w = resample_weights(k, m, step, 0.0)[0]
    return np.einsum("yi,tij,xj->tyx", w, psf.basis, w)


def phase_weights(model_side: int, size: int, step: float, d: np.ndarray) -> np.ndarray:
    """(N, size, model_side) resampling, per star, from the model grid to the ``size``
    pixels about its stamp centre, at its offset ``d`` along one axis."""
    inv = psfex_step(step)
    return resample_weights(model_side, size, inv, -np.asarray(d, float) * inv)


def phase_images(psf: PixelPsf, x: np.ndarray, y: np.ndarray, dx: np.ndarray, dy: np.ndarray
                 ) -> np.ndarray:
    """(N, K, K) an oversampled model's kernels at (x, y), each resampled at its star's
    offset (dx, dy) from the central pixel and scaled as the kernel there (so they sum to 1
    at zero offset, as PsfSampler's images do)."""
    m, k = psf.basis.shape[-1], psf.size
    images = psf.model_images(x, y)
    wx, wy = phase_weights(m, k, psf.step, dx), phase_weights(m, k, psf.step, dy)
    out = wy @ images @ wx.transpose(0, 2, 1)
    centre = phase_weights(m, k, psf.step, np.zeros(1))[0]
    norm = np.einsum("yi,nij,xj->n", centre, images, centre)
    return out / np.where(norm != 0, norm, 1)[:, None, None]


def fit_oversampled_psf(stars: StarPixels, flux: np.ndarray, x: np.ndarray, y: np.ndarray,
                        start: PixelPsf, order: int, step: float, fwhm: float) -> PixelPsf:
    """Fit the model at ``step`` and polynomial ``order`` to the stars' pixels, from the
    model ``start`` (pixel-resolution or at ``step``; its terms beyond ``order`` ignored).

    ``flux`` are the stars' current fluxes (0 for stars left out).
    """
    use = (flux > 0) & (stars.weights.reshape(len(flux), -1).sum(axis=1) > 0)
    k = stars.data.shape[-1]
    n_terms = (order + 1) * (order + 2) // 2
    begin = start.basis if start.oversampled else upsample(start, step)
    fine = np.zeros((n_terms,) + begin.shape[1:])
    fine[: min(n_terms, len(begin))] = begin[:n_terms]
    m = fine.shape[-1]
    c, cm = k // 2, m // 2
    half = min(c, int(np.ceil(FIT_FWHM * fwhm)))  # data pixels fitted: ±half about the centre
    # the fine samples they read: a pixel at ±half, its star up to ½ pixel off centre
    fine_half = min(cm, int(np.ceil((half + 0.5) / step)) + REACH)
    rows = slice(c - half, c + half + 1)
    cols = slice(cm - fine_half, cm + fine_half + 1)
    f = flux[use]
    data = stars.data[use][:, rows, rows] / f[:, None, None]
    w = stars.weights[use][:, rows, rows] * (f * f)[:, None, None]
    wx = phase_weights(m, k, step, stars.dx[use])[:, rows, cols]
    wy = phase_weights(m, k, step, stars.dy[use])[:, rows, cols]
    u = 2 * x[use] / max(start.width - 1, 1) - 1
    v = 2 * y[use] / max(start.height - 1, 1) - 1
    terms = poly_terms(u, v, order)
    q, r = np.linalg.qr(terms)  # orthonormal terms over the stars: a well-conditioned solve
    to_monomial = np.linalg.inv(r)  # basis_monomial = to_monomial @ basis_orthonormal
    full_prior = np.einsum("st,tij->sij", r, fine)  # start, in orthonormal terms
    prior = full_prior[:, cols, cols]
    # the samples beyond the fitted pixels' centres are read only by the outer pixels' taps,
    # on one side: they stay at the start model
    inner = np.abs(np.arange(-fine_half, fine_half + 1)) <= half / step
    held = np.broadcast_to(~(inner[:, None] & inner[None, :]), prior.shape)
    functionals, targets = _ePSF_constraints(m, k, step, q)
    window = np.zeros((m, m), bool)
    window[cols, cols] = True
    # the samples outside the window are fixed: their part of each functional is known
    targets = targets - np.einsum("cij,tij->tc", functionals * ~window, full_prior)
    solution = _solve(data, w, wx, wy, q, prior, held, functionals[:, cols, cols], targets)
    fine[:, cols, cols] = np.einsum("st,tij->sij", to_monomial, solution)
    return PixelPsf(fine, order, start.width, start.height, step=step)


CONSTRAINT_PHASES = 8  # sub-pixel phases per axis at which the ePSF's sum and centre are held
CONSTRAINT_WEIGHT = 100.0  # of those conditions, relative to the largest data weight


def _ePSF_constraints(m: int, k: int, step: float, q: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Linear conditions every effective PSF meets: at any sub-pixel phase its pixels sum to
    the kernel's total and their centroid is the star's position (the pixel response's
    transform vanishes at whole cycles per pixel, so sampling it at any phase neither adds
    nor moves light). Without them a fine grid can trade a star's flux or position against
    its phase: the degeneracy through which centroiding errors and flux errors of the first
    fits would be frozen into the model. Returns functionals (C, m, m), unit norm, and their
    targets (T, C) for the orthonormal terms ``q`` (the kernel sums to 1 everywhere)."""
    phases = (np.arange(CONSTRAINT_PHASES) + 0.5) / CONSTRAINT_PHASES - 0.5
    w = phase_weights(m, k, step, phases)  # (P, k, m)
    off = np.arange(k) - k // 2
    total = w.sum(axis=1)  # (P, m): each sample's share of the pixel sum at each phase
    moment = np.einsum("j,pjm->pm", off, w) - phases[:, None] * total
    sums = np.einsum("ai,bj->abij", total, total).reshape(-1, m, m)
    mx = np.einsum("ai,bj->abij", total, moment).reshape(-1, m, m)
    my = np.einsum("ai,bj->abij", moment, total).reshape(-1, m, m)
    functionals = np.concatenate([sums, mx, my])
    norms = np.sqrt((functionals**2).sum(axis=(1, 2)))
    functionals /= norms[:, None, None]
    ones = q.sum(axis=0)  # the constant 1 in the orthonormal terms
    targets = np.zeros((q.shape[1], len(functionals)))
    targets[:, : len(sums)] = ones[:, None] / norms[None, : len(sums)]
    return functionals, targets


def _solve(data: np.ndarray, w: np.ndarray, wx: np.ndarray, wy: np.ndarray, q: np.ndarray,
           prior: np.ndarray, held: np.ndarray, functionals: np.ndarray, targets: np.ndarray
           ) -> np.ndarray:
    """Minimize Σ w (data − Wy·E_s·Wxᵀ)² + λ‖B − prior‖² + μ Σ (⟨G_c, B_t⟩ − g_tc)² over B,
    with E_s = Σ_t q_st B_t, by conjugate gradients on the normal equations
    (Jacobi-preconditioned, from ``prior``); the samples ``held`` are held at ``prior``
    (their λ as large as the data's weight), the functionals G at their targets g."""
    wxt = wx.transpose(0, 2, 1)
    wyt = wy.transpose(0, 2, 1)

    def forward(b: np.ndarray) -> np.ndarray:
        return wy @ np.einsum("st,tij->sij", q, b) @ wxt

    def adjoint(resid: np.ndarray) -> np.ndarray:
        return np.einsum("st,sij->tij", q, wyt @ resid @ wx)

    diag = np.einsum("st,sij->tij", q * q, (wy * wy).transpose(0, 2, 1) @ w @ (wx * wx))
    lam = np.where(held, float(diag.max()), REGULARISATION * float(np.median(diag)))
    precondition = 1.0 / (diag + lam)

    mu = CONSTRAINT_WEIGHT * float(diag.max())

    def normal(b: np.ndarray) -> np.ndarray:
        held_values = np.einsum("cij,tij->tc", functionals, b)
        return (adjoint(w * forward(b)) + lam * b
                + mu * np.einsum("tc,cij->tij", held_values, functionals))

    b = prior.copy()
    rhs = adjoint(w * data) + lam * prior + mu * np.einsum("tc,cij->tij", targets, functionals)
    resid = rhs - normal(b)
    target = CG_TOLERANCE * np.sqrt((rhs**2).sum())
    z = precondition * resid
    p = z.copy()
    rz = float((resid * z).sum())
    for _ in range(CG_MAX_ITER):
        if np.sqrt((resid * resid).sum()) <= target:
            break
        ap = normal(p)
        alpha = rz / float((p * ap).sum())
        b += alpha * p
        resid -= alpha * ap
        z = precondition * resid
        rz_next = float((resid * z).sum())
        p = z + (rz_next / rz) * p
        rz = rz_next
    return b
