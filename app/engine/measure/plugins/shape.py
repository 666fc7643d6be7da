"""base_SdssShape: adaptive second moments (an elliptical Gaussian weight matched to the source).

SDSS/LSST's algorithm: iterate the weight's covariance W ← 2·M, where M are the second moments
of the image weighted by exp(−½ dᵀW⁻¹d) about a centre that is also re-estimated, until the
moments change by less than 1e-5 (relative). For a Gaussian source of covariance C the fixed
point is W = C, so the moments are the source's own; ``instFlux`` = 2·Σ w·I is then its total
flux. All sources iterate together; a source that has converged stops changing.

Failures as meas_base's SdssShape.cc sets them: when the weighted moments do not converge
in 100 iterations (``flag_maxIter``) or become invalid, the *unweighted* moments of the pixels
within 4 weight-σ of the centroid are reported instead (``flag_unweighted``; no flux, no
errors); when even those are not positive, ``flag_unweightedBad`` (moments of a single
pixel, 1/12, or NaN). A centre that moved more than 2 pixels along an axis sets
``flag_shift``. Each of these sets the general flag; ``flag_psf`` (no PSF moments) does not,
as in meas_base. Departure: the weight's centre is re-estimated at each step (SDSS's
weighted first moment, doubled), where meas_base keeps it at the slot centroid and reports
the first moment; the converged moments are the same for a symmetric source, and a source
offset from its peak converges where a fixed centre would bias its moments.
"""

from __future__ import annotations

import numpy as np

from app.engine.measure.context import MeasurementContext, Stamps
from app.engine.measure.cubes import gaussian_weight, stamp_offsets
from app.engine.measure.registry import SHAPE_ORDER, Column, Plugin, register
from app.engine.psf import PsfModel

NAME = "base_SdssShape"
MAX_ITER = 100
TOL_MOMENTS = 1e-5
TOL_SHIFT = 1e-4
MAX_SHIFT = 2.0  # pixels along either axis (SdssShapeControl.maxShift, clamped to 2–10)
MIN_MOMENT = 0.1  # px²: the floor of the iteration's second moments
SMALL_MOMENT = 1.2  # px²: kernel moments below it are a Gaussian fit's (kernel_moments)
UNWEIGHTED_RADIUS = 4.0  # weight σ: the box of the unweighted moments
SINGLE_PIXEL = 1 / 12  # the second moment of one uniform pixel


@register
class SdssShape(Plugin):
    name = NAME
    order = SHAPE_ORDER
    uses_centroid = True

    def results(self, ctx: MeasurementContext) -> list[str]:
        return [NAME, f"{NAME}_psf"]

    def columns(self, ctx: MeasurementContext) -> list[Column]:
        c = [
            Column(f"{NAME}_xx", "f8", "pix2", "Adaptive second moment Ixx."),
            Column(f"{NAME}_yy", "f8", "pix2", "Adaptive second moment Iyy."),
            Column(f"{NAME}_xy", "f8", "pix2", "Adaptive second moment Ixy."),
            Column(f"{NAME}_xxErr", "f4", "pix2", "1σ uncertainty of Ixx."),
            Column(f"{NAME}_yyErr", "f4", "pix2", "1σ uncertainty of Iyy."),
            Column(f"{NAME}_xyErr", "f4", "pix2", "1σ uncertainty of Ixy."),
            Column(f"{NAME}_x", "f8", "pix", "Centre of the adaptive weight, x."),
            Column(f"{NAME}_y", "f8", "pix", "Centre of the adaptive weight, y."),
            Column(f"{NAME}_instFlux", "f8", "ct", "Adaptive-moment flux 2·Σ w·I."),
            Column(f"{NAME}_instFluxErr", "f8", "ct", "1σ uncertainty of instFlux."),
            Column(f"{NAME}_psf_xx", "f8", "pix2", "PSF model second moment Ixx here."),
            Column(f"{NAME}_psf_yy", "f8", "pix2", "PSF model second moment Iyy here."),
            Column(f"{NAME}_psf_xy", "f8", "pix2", "PSF model second moment Ixy here."),
            Column(f"{NAME}_flag_unweightedBad", "bool", None,
                   "Both weighted and unweighted moments were invalid."),
            Column(f"{NAME}_flag_unweighted", "bool", None,
                   "Weighted moments converged to an invalid value; using unweighted moments."),
            Column(f"{NAME}_flag_shift", "bool", None,
                   "Centroid shifted by more than the maximum allowed amount (2 pixels)."),
            Column(f"{NAME}_flag_maxIter", "bool", None,
                   "Too many iterations in adaptive moments."),
            Column(f"{NAME}_flag_psf", "bool", None, "Failure in measuring PSF model shape."),
        ]
        return c

    def measure(self, ctx: MeasurementContext, out: dict[str, np.ndarray]) -> None:
        n = ctx.n_sources
        if n == 0:
            return
        psf_m = psf_moments(ctx)
        out[f"{NAME}_psf_xx"][:], out[f"{NAME}_psf_yy"][:], out[f"{NAME}_psf_xy"][:] = psf_m
        out[f"{NAME}_flag_psf"][:] = ~np.isfinite(psf_m[0])
        sig = np.sqrt(np.nanmedian(psf_m[0]))
        half = int(np.clip(np.ceil(6 * sig), 8, 24))
        st = ctx.stamps(half)
        guess = np.where(np.isfinite(psf_m[0]), psf_m[0], sig**2)
        res = adaptive_moments(st.image, np.where(st.on_image, st.variance, 0),
                               st.on_image, st.x0, st.y0, ctx.x, ctx.y, guess)
        xx, yy, xy, x, y, flux, flux_err, errs, converged, shifted = res
        weighted = converged & np.isfinite(xx + yy + xy)
        unweighted = ~weighted
        max_iter = ~converged & np.isfinite(xx + yy + xy)
        # the unweighted box is sized by the last weight (the first guess if it was lost)
        last = np.where(np.isfinite(xx + yy), np.maximum(xx, yy), guess)
        uw_xx, uw_yy, uw_xy, uw_bad = unweighted_moments(
            st, ctx.x, ctx.y, UNWEIGHTED_RADIUS * np.sqrt(last))
        bad = unweighted & uw_bad
        for ours, theirs in ((xx, uw_xx), (yy, uw_yy), (xy, uw_xy)):
            ours[unweighted] = theirs[unweighted]
        flux, flux_err = np.where(weighted, flux, np.nan), np.where(weighted, flux_err, np.nan)
        errs = tuple(np.where(weighted, e, np.nan) for e in errs)
        ox, oy = ctx.exposure.xy0
        out[f"{NAME}_xx"][:], out[f"{NAME}_yy"][:], out[f"{NAME}_xy"][:] = xx, yy, xy
        out[f"{NAME}_xxErr"][:], out[f"{NAME}_yyErr"][:], out[f"{NAME}_xyErr"][:] = errs
        out[f"{NAME}_x"][:], out[f"{NAME}_y"][:] = x + ox, y + oy
        out[f"{NAME}_instFlux"][:], out[f"{NAME}_instFluxErr"][:] = flux, flux_err
        out[f"{NAME}_flag_maxIter"][:] = max_iter
        out[f"{NAME}_flag_shift"][:] = shifted
        out[f"{NAME}_flag_unweighted"][:] = unweighted & ~bad
        out[f"{NAME}_flag_unweightedBad"][:] = bad
        out[f"{NAME}_flag"][:] = unweighted | shifted
        ctx.shape_xx, ctx.shape_yy, ctx.shape_xy = xx, yy, xy
        if ctx.slots.shape == NAME:
            ctx.shape_flag = out[f"{NAME}_flag"].copy()


def unweighted_moments(st: Stamps, x: np.ndarray, y: np.ndarray, radius: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unweighted second moments (xx, yy, xy) about (x, y) of the on-image pixels within the
    box of half-side ``radius`` (pixels touching it, as afw's Box2I of a Box2D), and where
    they are invalid (a sum or a diagonal moment not positive): there the moments are those
    of a single pixel if the sum is positive, else NaN (SdssShape.cc's fallback)."""
    half = st.half
    dx, dy = stamp_offsets(half, st.x0, st.y0, x, y)
    reach = np.minimum(radius, half)[:, None, None] + 0.5
    use = (np.abs(dx) < reach) & (np.abs(dy) < reach) & st.on_image
    img = np.where(use, st.image, 0).astype(np.float64)
    s0 = img.sum(axis=(1, 2))
    sxx = (img * dx * dx).sum(axis=(1, 2))
    syy = (img * dy * dy).sum(axis=(1, 2))
    sxy = (img * dx * dy).sum(axis=(1, 2))
    bad = ~((s0 > 0) & (sxx > 0) & (syy > 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        xx, yy, xy = sxx / s0, syy / s0, sxy / s0
    single = np.where(s0 > 0, SINGLE_PIXEL, np.nan)
    xx = np.where(bad, single, xx)
    yy = np.where(bad, single, yy)
    xy = np.where(bad, np.where(s0 > 0, 0.0, np.nan), xy)
    return xx, yy, xy, bad


def psf_moments(ctx: MeasurementContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adaptive moments of the PSF model at each slot centroid (noise-free)."""
    return psf_moments_at(ctx.psf, ctx.x, ctx.y)


def psf_moments_at(psf: PsfModel, x: np.ndarray, y: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adaptive moments (xx, yy, xy) of the PSF model at array-frame positions; from the
    model's own ``moments`` when it has them (interpolated, for a smoothly varying model)."""
    batched = getattr(psf, "moments", None)
    if batched is not None:
        return batched(x, y)
    from app.engine.measure.context import psf_kernels

    return kernel_moments(psf_kernels(psf, x, y))


def kernel_moments(kernels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adaptive moments (xx, yy, xy) of noise-free centred kernels (N, K, K).

    On the pixel samples of a PSF under FWHM ≈ 1.8 px the iteration collapses: the
    weighted moments of a few samples fall faster than the weight, which shrinks onto the
    central pixel, and the moments end at the floor; up to FWHM ≈ 2.3 px it converges
    low (by 11 % in xx at 1.8 px). Kernels whose moments end below ``SMALL_MOMENT`` take
    the covariance of the Gaussian that best fits their samples (`gaussian_fit_moments`),
    which above it agrees with the adaptive moments to 0.1 %. Departure: LSST's
    computeShape has no such fallback.
    """
    n, k, _ = kernels.shape
    half = k // 2
    z = np.zeros(n)
    xx, yy, xy = adaptive_moments(kernels, np.zeros_like(kernels), np.ones(kernels.shape, bool),
                                  z, z, z + half, z + half, np.full(n, 4.0))[:3]
    for i in np.flatnonzero(~(np.minimum(xx, yy) > SMALL_MOMENT)):
        xx[i], yy[i], xy[i] = gaussian_fit_moments(kernels[i])
    return xx, yy, xy


def gaussian_fit_moments(kernel: np.ndarray) -> tuple[float, float, float]:
    """Covariance (xx, yy, xy) in px² of the elliptical Gaussian, sampled at the pixel
    centres, that fits ``kernel`` best in least squares (amplitude and centre free)."""
    from scipy.optimize import least_squares

    k = kernel.shape[0]
    yy_, xx_ = np.mgrid[:k, :k].astype(float) - k // 2
    data = kernel.astype(float) / kernel.sum()

    def residual(p: np.ndarray) -> np.ndarray:
        amp, x0, y0, lxx, lyy, t = p
        sx, sy, rho = np.exp(lxx), np.exp(lyy), np.tanh(t)
        dx, dy = (xx_ - x0) / sx, (yy_ - y0) / sy
        q = (dx * dx - 2 * rho * dx * dy + dy * dy) / (1 - rho * rho)
        return (amp * np.exp(-0.5 * q) - data).ravel()

    fit = least_squares(residual, np.array([data.max(), 0.0, 0.0, -0.5, -0.5, 0.0]))
    _, _, _, lxx, lyy, t = fit.x
    sx, sy, rho = np.exp(lxx), np.exp(lyy), np.tanh(t)
    return float(sx * sx), float(sy * sy), float(rho * sx * sy)


def weighted_moments(wi: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """(N, 3, 3) sums Σ wi · dxᵏ · dyˡ for k, l ≤ 2 of weighted stamps (N, S, S), with dx the
    (N, S) column offsets and dy the (N, S) row offsets: two small matrix products instead of
    a pass over the stamps per moment."""
    powers_x = np.stack([np.ones_like(dx), dx, dx * dx], axis=-1)  # (N, S, 3)
    powers_y = np.stack([np.ones_like(dy), dy, dy * dy], axis=-1)
    return np.einsum("nik,nil->nkl", wi @ powers_x, powers_y)


def adaptive_moments(
    image: np.ndarray, variance: np.ndarray, good: np.ndarray, x0: np.ndarray, y0: np.ndarray,
    x: np.ndarray, y: np.ndarray, guess: np.ndarray,
) -> tuple:
    """Iterate the adaptive moments of every stamp at once.

    Returns (xx, yy, xy, x, y, flux, flux_err, (xx_err, yy_err, xy_err), converged, shifted).
    """
    n, s, _ = image.shape
    half = s // 2
    img = np.where(good, image, 0).astype(np.float64)
    xx = np.asarray(guess, float).copy()
    yy = xx.copy()
    xy = np.zeros(n)
    xc, yc = np.asarray(x, float).copy(), np.asarray(y, float).copy()
    x_start, y_start = xc.copy(), yc.copy()
    converged = np.zeros(n, dtype=bool)
    active = np.ones(n, dtype=bool)
    for _ in range(MAX_ITER):
        a = np.nonzero(active)[0]
        if len(a) == 0:
            break
        dx, dy = stamp_offsets(half, x0[a], y0[a], xc[a], yc[a])
        w = gaussian_weight(dx, dy, xx[a], yy[a], xy[a])
        w *= img if len(a) == n else img[a]
        m = weighted_moments(w, dx[:, 0, :], dy[:, :, 0])
        s0 = m[:, 0, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            mx, my = m[:, 1, 0] / s0, m[:, 0, 1] / s0
            mxx, myy, mxy = m[:, 2, 0] / s0, m[:, 0, 2] / s0, m[:, 1, 1] / s0
        # the weighted moments M of a Gaussian C with weight W are (C⁻¹ + W⁻¹)⁻¹: invert
        # for C so a source of any size converges in a few steps
        det_m = mxx * myy - mxy**2
        det_w = xx[a] * yy[a] - xy[a] ** 2
        with np.errstate(divide="ignore", invalid="ignore"):  # a singular M fails `ok`
            im_xx, im_yy, im_xy = myy / det_m, mxx / det_m, -mxy / det_m
            iw_xx, iw_yy, iw_xy = yy[a] / det_w, xx[a] / det_w, -xy[a] / det_w
            ic_xx, ic_yy, ic_xy = im_xx - iw_xx, im_yy - iw_yy, im_xy - iw_xy
            det_ic = ic_xx * ic_yy - ic_xy**2
            ok = np.isfinite(det_ic) & (det_ic > 0) & (ic_xx > 0) & (s0 > 0)
            nxx, nyy, nxy = ic_yy / det_ic, ic_xx / det_ic, -ic_xy / det_ic
        # fall back to doubling the weighted moments where the inversion is ill-posed
        nxx = np.where(ok, nxx, 2 * mxx)
        nyy = np.where(ok, nyy, 2 * myy)
        nxy = np.where(ok, nxy, 2 * mxy)
        nxx = np.clip(nxx, MIN_MOMENT, 4 * half * half)
        nyy = np.clip(nyy, MIN_MOMENT, 4 * half * half)
        change = np.abs(nxx - xx[a]) + np.abs(nyy - yy[a]) + np.abs(nxy - xy[a])
        done = (change < TOL_MOMENTS * (xx[a] + yy[a])) & (np.hypot(mx, my) < TOL_SHIFT)
        # meas_base's calcmom fails unless Σw·I, Σw·I·dx² and Σw·I·dy² are all positive
        bad = ~np.isfinite(nxx + nyy + nxy + mx + my) | ~(
            (s0 > 0) & (m[:, 2, 0] > 0) & (m[:, 0, 2] > 0))
        xx[a], yy[a], xy[a] = np.where(bad, np.nan, nxx), np.where(bad, np.nan, nyy), np.where(
            bad, np.nan, nxy)
        # a centre step by the weighted first moment, scaled for the weight (C+W)/W ≈ 2
        xc[a] += np.where(bad, 0, 2 * mx)
        yc[a] += np.where(bad, 0, 2 * my)
        converged[a] = done & ~bad
        active[a] = ~(done | bad)
    shifted = np.maximum(np.abs(xc - x_start), np.abs(yc - y_start)) > MAX_SHIFT
    dx, dy = stamp_offsets(half, x0, y0, xc, yc)
    w = gaussian_weight(dx, dy, xx, yy, xy)
    s0 = (w * img).sum(axis=(1, 2))
    flux = 2 * s0
    noise = w * w * np.where(good, variance, 0)  # each pixel's weighted variance
    flux_err = 2 * np.sqrt(noise.sum(axis=(1, 2)))

    def moment_error(d2: np.ndarray, m: np.ndarray) -> np.ndarray:
        # linear propagation of pixel noise into a (doubled) weighted moment
        terms = noise * (d2 - m[:, None, None] / 2) ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            return 2 * np.sqrt(terms.sum(axis=(1, 2))) / s0

    e_xx, e_yy, e_xy = moment_error(dx * dx, xx), moment_error(dy * dy, yy), moment_error(
        dx * dy, xy)
    return xx, yy, xy, xc, yc, flux, flux_err, (e_xx, e_yy, e_xy), converged, shifted
