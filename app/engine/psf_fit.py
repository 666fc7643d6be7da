"""The PSF model fitted to the chosen stars, with LSST's rejection of stars that do not fit.

Each round fits the model, measures every star's flux with it (a PSF fit) and the χ² of its
core, and drops the stars whose χ² stands out, as PSFEx's ``psf_clean`` does between its
passes. A pixel-resolution model is fitted first, on stamps centred by Lanczos shifts
(:func:`~app.engine.psf_model.fit_pixel_psf`). When its FWHM is under PSFEx's
``PSF_AUTO_FWHM`` (3 px, ``BASIS_TYPE PIXEL_AUTO``) the image is undersampled: the model is
then refitted oversampled, every star's pixels where they fell
(:mod:`app.engine.psf_oversampled`), starting from the pixel model.
"""

from __future__ import annotations

import numpy as np

from app.engine.config import CharacterizeConfig
from app.engine.exposure import Exposure
from app.engine.measure.context import shift_cube
from app.engine.psf import SIGMA_TO_FWHM
from app.engine.psf_model import PixelPsf, fit_pixel_psf
from app.engine.psf_oversampled import (
    PSF_AUTO_FWHM,
    StarPixels,
    auto_step,
    fit_oversampled_psf,
    phase_images,
    upsample,
)

ROUNDS = 4  # fits of the pixel-resolution model, each followed by a rejection
OVERSAMPLED_ROUNDS = 2  # fits of the oversampled model
MEASURE_STEP = 0.25  # grid (pixels) on which an undersampled pixel model's FWHM is measured


def fit_psf_stamps(exposure: Exposure, labels: np.ndarray, x: np.ndarray, y: np.ndarray,
                   config: CharacterizeConfig) -> tuple[PixelPsf, np.ndarray]:
    """Fit the pixel PSF to stars at (x, y); returns the model and which stars were kept."""
    stars, usable = _star_pixels(exposure, labels, x, y, config.psfStampSize | 1)
    k = stars.data.shape[-1]
    half = k // 2
    h, w = exposure.shape
    # centre every star on its middle pixel; the shifted usable mask keeps interpolated
    # pixels only where all their Lanczos inputs were usable
    data = shift_cube(stars.data, -stars.dx, -stars.dy)
    usable_s = shift_cube(usable.astype(float), -stars.dx, -stars.dy) > 0.999
    var = np.where(usable_s & usable, 1.0 / np.where(usable, stars.weights, 1.0), np.inf)
    off = np.arange(k) - half
    r2 = off[None, :, None] ** 2 + off[None, None, :] ** 2
    flux = np.where(usable_s & (r2 <= (half * 0.6) ** 2), data, 0).sum(axis=(1, 2))
    first = flux > 0
    keep = first
    model = None
    for _ in range(ROUNDS):
        norm = data / flux[:, None, None]
        weights = np.where(usable_s & keep[:, None, None], flux[:, None, None] ** 2 / var, 0.0)
        model = fit_pixel_psf(norm, weights, x, y, config.psfSpatialOrder, w, h)
        flux, keep = _clean(data, var, model.kernels(x, y), r2, half, keep)
    assert model is not None
    if config.psfSamplingSize >= 1 or model.sigma(w / 2, h / 2) * SIGMA_TO_FWHM >= PSF_AUTO_FWHM:
        return model, keep
    # the start, and the wings beyond the fitted region: the pixel model's mean image (its
    # components follow the centred stamps' interpolation errors, not the field)
    start = fit_pixel_psf(norm, weights, x, y, 0, w, h)
    # the stars' FWHM from the pixel model on a fine grid: its adaptive moments on the pixels
    # collapse for the smallest PSFs
    fine = PixelPsf(upsample(start, MEASURE_STEP), start.order, w, h, MEASURE_STEP)
    fwhm = fine.sigma(w / 2, h / 2) * SIGMA_TO_FWHM
    step = config.psfSamplingSize or auto_step(fwhm)
    raw_var = np.where(usable, 1.0 / np.where(usable, stars.weights, 1.0), np.inf)
    keep = first  # the pixel model's rejections favoured some phases: start afresh
    for _ in range(OVERSAMPLED_ROUNDS):
        model = fit_oversampled_psf(stars, np.where(keep, flux, 0.0), x, y, start, model.order,
                                    step, fwhm)
        stars = _recentred(stars, model, x, y, flux, keep)
        images = phase_images(model, x, y, stars.dx, stars.dy)
        flux, keep = _clean(stars.data, raw_var, images, r2, half, keep)
    return model, keep


RECENTRE_STEP = 0.01  # pixels: the finite difference of the model's position derivative
RECENTRE_MAX = 0.25  # pixels: the largest correction of a star's position in one step


def _recentred(stars: StarPixels, model: PixelPsf, x: np.ndarray, y: np.ndarray,
               flux: np.ndarray, keep: np.ndarray) -> StarPixels:
    """The stars' sub-pixel positions refined by fitting them with the model (Anderson &
    King's iteration, photutils' EPSFBuilder recentring): a centroider's phase-dependent
    error on an undersampled star (±0.04 px for SdssCentroid at 1.5 px FWHM) would blur the
    effective PSF. The kept stars' mean correction is removed, so the model stays centred
    where the centroider puts the stars on average."""
    h = RECENTRE_STEP
    p = phase_images(model, x, y, stars.dx, stars.dy)
    gx = (phase_images(model, x, y, stars.dx + h, stars.dy) - p) / h
    gy = (phase_images(model, x, y, stars.dx, stars.dy + h) - p) / h
    basis = np.stack([p, gx, gy], axis=1).reshape(len(p), 3, -1)  # (N, 3, P)
    w = stars.weights.reshape(len(p), -1)
    lhs = np.einsum("nap,np,nbp->nab", basis, w, basis)
    rhs = np.einsum("nap,np,np->na", basis, w, stars.data.reshape(len(p), -1))
    ok = keep & (flux > 0) & (np.linalg.det(lhs) > 0)
    shift = np.zeros((len(p), 2))
    sol = np.linalg.solve(lhs[ok], rhs[ok][..., None])[..., 0]
    # the model moved by (a, b)/F is the model moved by −(a, b)/F ... of the star: the
    # star sits at d − δ where the data are F·P(d) + a·∂P/∂dx + b·∂P/∂dy ≈ F·P(d + δ)
    shift[ok] = np.clip(sol[:, 1:] / sol[:, :1], -RECENTRE_MAX, RECENTRE_MAX)
    if ok.any():
        shift[ok] -= np.median(shift[ok], axis=0)
    return StarPixels(stars.data, stars.weights, stars.dx + shift[:, 0], stars.dy + shift[:, 1])


def _star_pixels(exposure: Exposure, labels: np.ndarray, x: np.ndarray, y: np.ndarray,
                 k: int) -> tuple[StarPixels, np.ndarray]:
    """Stamps of side ``k`` about each star's nearest pixel, neighbours' and masked pixels
    given no weight; and which pixels are usable."""
    half = k // 2
    h, w = exposure.shape
    ix, iy = np.round(x).astype(int), np.round(y).astype(int)
    off = np.arange(k)
    yy = iy[:, None, None] - half + off[None, :, None]
    xx = ix[:, None, None] - half + off[None, None, :]
    on = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    yc, xc = np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)
    own = labels[iy, ix]
    lab = labels[yc, xc]
    bad = exposure.planes.any(exposure.mask[yc, xc], ["SAT", "BAD", "NO_DATA", "CR"])
    usable = on & ~bad & ((lab == 0) | (lab == own[:, None, None]))
    data = np.where(usable, exposure.image[yc, xc], 0.0)
    var = exposure.variance[yc, xc].astype(np.float64)
    usable &= np.isfinite(var) & (var > 0)
    weights = np.where(usable, 1.0 / np.where(usable, var, 1.0), 0.0)
    return StarPixels(data, weights, x - ix, y - iy), usable


def _clean(data: np.ndarray, var: np.ndarray, images: np.ndarray, r2: np.ndarray, half: int,
           keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every star's PSF-fit flux with the model ``images``, and the stars kept: those with a
    positive flux and a core χ² per pixel within 4 MAD of the kept stars' median."""
    usable = np.isfinite(var)
    pw = np.where(usable, images / np.where(usable, var, 1.0), 0)
    flux = (pw * data).sum(axis=(1, 2)) / (pw * images).sum(axis=(1, 2))
    resid = np.where(usable, (data - flux[:, None, None] * images) ** 2
                     / np.where(usable, var, 1.0), 0)
    core = usable & (r2 <= (3 * half / 4) ** 2)
    chi2 = np.where(core, resid, 0).sum(axis=(1, 2)) / np.maximum(core.sum(axis=(1, 2)), 1)
    med = np.median(chi2[keep])
    mad = 1.4826 * np.median(np.abs(chi2[keep] - med))
    return flux, keep & (flux > 0) & (chi2 < med + 4 * max(mad, 0.05 * med))
