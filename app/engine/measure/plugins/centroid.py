"""base_SdssCentroid: SDSS's centroider as meas_base's SdssCentroid.cc runs it.

About the source's peak pixel, the image is binned (1×1 at first) and correlated with the
local PSF kernel: a least-squares fit of the PSF at each pixel, needed on the 3×3 binned
pixels about the peak only. A quadratic first guess from those nine values is refined by
quartic ("inter4") interpolation of the maximum along each row and column, with SDSS's
amplitude 1.33, combined through the cross terms as astrom.c does; errors follow SDSS's
``astrom_errors``. A source wider than the PSF allows (its unsmoothed width² or its offset²
above ``wfac·(1 + σ²)`` binned pixels²) is measured again binned 2×, 4×, … up to ``binmax``
along the axis that is too wide, as meas_base does for large galaxies.

Where the kernel's box leaves the image the 5×5 Gaussian of σ = 0.5 px is used instead and
``flag_near_edge`` set (binning stops there); where even that box leaves it, ``flag_edge``.
Then meas_base's CentroidChecker: a NaN error sets ``flag_badError``; a centroid outside the
source's footprint or more than ``maxDistToPeak`` (1 px) from its peak is reset to the peak
with ``flag_resetToPeak``. Every specific flag sets the general ``_flag`` (FlagHandler), and a
failed source keeps its peak as centroid with NaN errors.

Departure: a first guess more than 10 px from the peak (the curvature almost vanishing next
to the slope) sets ``flag_almostNoSecondDerivative``, as meas_base did before its flag
numbers were reworked (it now sets ``flag_noSecondDerivative`` there, leaving the
``almost`` flag declared but never set).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from app.engine.measure.context import MeasurementContext, psf_kernels
from app.engine.measure.registry import CENTROID_ORDER, Column, Plugin, register

NAME = "base_SdssCentroid"
AMPAST4 = 1.33  # amplitude of the 4th-order correction compared to theory (SDSS)
BINMAX = 16  # SdssCentroidControl.binmax
WFAC = 1.5  # SdssCentroidControl.wfac: how much wider than the PSF a source may be unbinned
MAX_DIST_TO_PEAK = 1.0  # SdssCentroidControl.maxDistToPeak (pixels)
MAX_FIRST_GUESS = 10.0  # pixels: a quadratic guess beyond this has almost no curvature
EDGE_KERNEL_SIZE = 5  # the fallback kernel near the edge: GaussianPsf(5, 5, 0.5)
EDGE_KERNEL_SIGMA = 0.5

# failures of one measurement, by the flag they set
EDGE, NO_SECOND_DERIVATIVE, ALMOST_NO_SECOND_DERIVATIVE, NOT_AT_MAXIMUM = 1, 2, 3, 4
FAILURE_FLAGS = {
    EDGE: "flag_edge",
    NO_SECOND_DERIVATIVE: "flag_noSecondDerivative",
    ALMOST_NO_SECOND_DERIVATIVE: "flag_almostNoSecondDerivative",
    NOT_AT_MAXIMUM: "flag_notAtMaximum",
}


def inter4(vm: np.ndarray, v0: np.ndarray, vp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quartic interpolation of the maximum of three values at -1, 0, +1; (centre, bad)."""
    sp, sm = v0 - vp, v0 - vm
    d2 = sp + sm
    s = 0.5 * (vp - vm)
    with np.errstate(divide="ignore", invalid="ignore"):
        cen = s / d2 * (1.0 + AMPAST4 * sp * sm / (d2 * v0))
    bad = (d2 <= 0) | (v0 <= 0) | ~(np.abs(cen) < 1)
    return np.where(bad, 0.0, cen), bad


def astrom_errors(sky_var: np.ndarray, source_var: np.ndarray, a_s: np.ndarray, s: np.ndarray,
                  d: np.ndarray, sigma: np.ndarray, quartic_bad: np.ndarray) -> np.ndarray:
    """SDSS's centroid error for a PSF-smoothed image (``astrom_errors`` in astrom.c)."""
    k = np.where(quartic_bad, 0.0, AMPAST4)
    s2 = sigma * sigma
    s_var = sky_var / (8 * np.pi * s2) * (1 - np.exp(-1 / s2))
    d_var = sky_var / (2 * np.pi * s2) * (3 - 4 * np.exp(-1 / (4 * s2)) + np.exp(-1 / s2))
    s_var = s_var + source_var / (12 * np.pi * s2) * (np.exp(-1 / (3 * s2)) - np.exp(-1 / s2))
    d_var = d_var + source_var / (3 * np.pi * s2) * (2 - 3 * np.exp(-1 / (3 * s2))
                                                     + np.exp(-1 / s2))
    with np.errstate(divide="ignore", invalid="ignore"):
        x_var = (s_var * (1 / d + k / (4 * a_s) * (1 - 12 * s * s / (d * d))) ** 2
                 + d_var * (s / (d * d) - k / (4 * a_s) * 8 * s * s / (d * d * d)) ** 2)
    tiny = (np.abs(a_s) < np.finfo(np.float32).tiny) | (np.abs(d) < np.finfo(np.float32).tiny)
    return np.where(tiny, 1e3, np.where(x_var >= 0, np.sqrt(x_var), np.nan))


def edge_kernel() -> np.ndarray:
    """afw's GaussianPsf(5, 5, 0.5) kernel: the Gaussian at pixel centres, sum 1."""
    t = np.arange(EDGE_KERNEL_SIZE) - EDGE_KERNEL_SIZE // 2
    g = np.exp(-0.5 * (t / EDGE_KERNEL_SIGMA) ** 2)
    k = np.outer(g, g)
    return k / k.sum()


def smoothed_peak(ctx: MeasurementContext, rows: np.ndarray, cx: np.ndarray, cy: np.ndarray,
                  bx: int, by: int, kernels: np.ndarray, sigma: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The PSF-correlated, ``bx × by``-binned image on the 3×3 binned pixels about each peak
    (cx, cy), its per-pixel variance, and whether the whole box is on the image.

    The box is meas_base's: (2K + 5) binned pixels a side for a (2K + 1)² kernel, its centre
    binned pixel starting at the peak pixel. Values (N, 3, 3) are [y, x].
    """
    n = len(rows)
    k = kernels.shape[-1] // 2
    nb = 2 * k + 5
    st = ctx.cutouts(rows, cx - bx * (k + 2), cy - by * (k + 2), (by * nb, bx * nb))
    inside = st.on_image.all(axis=(1, 2))
    img = np.where(st.on_image, st.image, 0).astype(np.float64)
    var = np.where(st.on_image, st.variance, 0).astype(np.float64)
    binned = img.reshape(n, nb, by, nb, bx).mean(axis=(2, 4))
    # afw's binImage (MEAN) divides a masked image by the pixel count: the variance by its square
    vbinned = var.reshape(n, nb, by, nb, bx).mean(axis=(2, 4)) / (bx * by)
    core = (slice(None), slice(1, nb - 1), slice(1, nb - 1))
    win = sliding_window_view(binned[core], (2 * k + 1, 2 * k + 1), axis=(1, 2))
    vwin = sliding_window_view(vbinned[core], (2 * k + 1, 2 * k + 1), axis=(1, 2))
    sm = np.einsum("nabij,nij->nab", win, kernels)
    # the per-pixel variance, as meas_base undoes binning and smoothing (n_eff = 4πσ²)
    scale = bx * by * 4 * np.pi * sigma**2
    smv = np.einsum("nabij,nij->nab", vwin, kernels * kernels) * scale[:, None, None]
    return sm, smv, inside


def peak_fit(sm: np.ndarray, smv: np.ndarray, sigma: np.ndarray) -> dict[str, np.ndarray]:
    """SDSS's peak interpolation on the 3×3 smoothed values (``doMeasureCentroidImpl``):
    offsets from the centre pixel, their errors, the source's unsmoothed width² per axis,
    the peak value, and the failure code (0: none)."""
    def v(dy: int, dx: int, a: np.ndarray = sm) -> np.ndarray:
        return a[:, 1 + dy, 1 + dx]

    d2x = 2 * v(0, 0) - v(0, -1) - v(0, 1)
    d2y = 2 * v(0, 0) - v(-1, 0) - v(1, 0)
    sx = 0.5 * (v(0, 1) - v(0, -1))
    sy = 0.5 * (v(1, 0) - v(-1, 0))
    code = np.zeros(len(sm), dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        dx0 = sx / d2x
        dy0 = sy / d2y
    code[(np.abs(dx0) > MAX_FIRST_GUESS) | (np.abs(dy0) > MAX_FIRST_GUESS)] = (
        ALMOST_NO_SECOND_DERIVATIVE)
    code[(d2x < 0) | (d2y < 0)] = NOT_AT_MAXIMUM
    code[(d2x == 0) | (d2y == 0)] = NO_SECOND_DERIVATIVE
    vpk = v(0, 0) + 0.5 * (sx * dx0 + sy * dy0)
    m0x, b0 = inter4(v(-1, -1), v(-1, 0), v(-1, 1))
    m1x, b1 = inter4(v(0, -1), v(0, 0), v(0, 1))
    m2x, b2 = inter4(v(1, -1), v(1, 0), v(1, 1))
    m0y, b3 = inter4(v(-1, -1), v(0, -1), v(1, -1))
    m1y, b4 = inter4(v(-1, 0), v(0, 0), v(1, 0))
    m2y, b5 = inter4(v(-1, 1), v(0, 1), v(1, 1))
    quartic_bad = b0 | b1 | b2 | b3 | b4 | b5
    smx, smy = 0.5 * (m2x - m0x), 0.5 * (m2y - m0y)
    dm2x, dm2y = m1x - 0.5 * (m0x + m2x), m1y - 0.5 * (m0y + m2y)
    dx1 = m1x + dy0 * (smx - dy0 * dm2x)
    dy1 = m1y + dx0 * (smy - dx0 * dm2y)
    dx4 = m1x + dy1 * (smx - dy1 * dm2x)
    dy4 = m1y + dx1 * (smy - dx1 * dm2y)
    with np.errstate(divide="ignore", invalid="ignore"):
        sig_x2 = np.where(quartic_bad, vpk / d2x, vpk / d2x - (1 + 6 * dx0 * dx0) / 4)
        sig_y2 = np.where(quartic_bad, vpk / d2y, vpk / d2y - (1 + 6 * dy0 * dy0) / 4)
    s2 = sigma**2
    tau_x2 = np.where(sig_x2 - s2 <= s2, s2, sig_x2 - s2)
    tau_y2 = np.where(sig_y2 - s2 <= s2, s2, sig_y2 - s2)
    sky_var = (sum(v(a, b, smv) for a in (-1, 0, 1) for b in (-1, 0, 1)) - v(0, 0, smv)) / 8
    source_var = v(0, 0, smv)
    return {
        "x": np.where(quartic_bad, dx0, dx4), "y": np.where(quartic_bad, dy0, dy4),
        "x_err": astrom_errors(sky_var, source_var, vpk, sx, d2x, sigma, quartic_bad),
        "y_err": astrom_errors(sky_var, source_var, vpk, sy, d2y, sigma, quartic_bad),
        "size_x2": tau_x2, "size_y2": tau_y2, "peak": vpk, "code": code,
    }


def one_pass(ctx: MeasurementContext, rows: np.ndarray, px: np.ndarray, py: np.ndarray,
             bx: int, by: int, kernels: np.ndarray, sigma: np.ndarray
             ) -> dict[str, np.ndarray]:
    """One binning of ``rows``: the fit in image pixels (array frame), its failure code,
    whether the fallback kernel was used, and which axes are too wide for this bin."""
    cx, cy = px[rows], py[rows]
    sm, smv, inside = smoothed_peak(ctx, rows, cx, cy, bx, by, kernels, sigma)
    near_edge = ~inside
    sig = sigma.astype(float).copy()
    if near_edge.any():
        e = np.flatnonzero(near_edge)
        fallback = np.broadcast_to(edge_kernel(), (len(e), EDGE_KERNEL_SIZE, EDGE_KERNEL_SIZE))
        sig[e] = EDGE_KERNEL_SIGMA
        sm[e], smv[e], inside_e = smoothed_peak(ctx, rows[e], cx[e], cy[e], bx, by,
                                                fallback, sig[e])
        near_edge[e[~inside_e]] = False  # not near the edge: over it
        edge = np.zeros(len(rows), dtype=bool)
        edge[e[~inside_e]] = True
    else:
        edge = np.zeros(len(rows), dtype=bool)
    fit = peak_fit(sm, smv, sig)
    code = np.where(edge, EDGE, fit["code"])
    # dilate from the lower left corner of the central binned pixel
    xo = (fit["x"] + 0.5) * bx - 0.5
    yo = (fit["y"] + 0.5) * by - 0.5
    fac = WFAC * (1 + sig**2)
    fac_x2, fac_y2 = fac * bx * bx, fac * by * by
    return {
        "x": cx + xo, "y": cy + yo, "x_err": fit["x_err"] * bx, "y_err": fit["y_err"] * by,
        "code": code, "near_edge": near_edge,
        "wide_x": (fit["size_x2"] * bx * bx >= fac_x2) | (xo * xo >= fac_x2),
        "wide_y": (fit["size_y2"] * by * by >= fac_y2) | (yo * yo >= fac_y2),
    }


def binned_fits(ctx: MeasurementContext, px: np.ndarray, py: np.ndarray
                ) -> dict[str, np.ndarray]:
    """meas_base's binning loop, for all sources at once: each pass measures the sources
    still active, grouped by their binning, and bins again the axes found too wide.
    Returns the positions and errors (array frame), the failure code, whether the fallback
    kernel was used, and the final (x, y) binning of each source."""
    n = ctx.n_sources
    h, w = ctx.exposure.shape
    kernels = psf_kernels(ctx.psf, px.astype(float), py.astype(float))
    sigma = ctx.psf_sigma()
    res = {key: np.full(n, np.nan) for key in ("x", "y", "x_err", "y_err")}
    code = np.zeros(n, dtype=np.int64)
    code[~((px >= 0) & (px < w) & (py >= 0) & (py < h))] = EDGE
    near_edge = np.zeros(n, dtype=bool)
    bins = np.ones((n, 2), dtype=np.int64)  # (x, y) binning of each source's next pass
    used = bins.copy()  # and of its last
    active = code == 0
    binsize = 1
    while binsize <= BINMAX and active.any():
        rows = np.flatnonzero(active)
        for bx, by in np.unique(bins[rows], axis=0):
            group = rows[(bins[rows, 0] == bx) & (bins[rows, 1] == by)]
            step = one_pass(ctx, group, px, py, int(bx), int(by), kernels[group],
                            sigma[group])
            used[group] = (bx, by)
            near_edge[group] |= step["near_edge"]
            code[group] = step["code"]
            ok = step["code"] == 0
            for key in res:
                res[key][group[ok]] = step[key][ok]
            # the fallback kernel ends the binning; failures end everything
            wide_x, wide_y = step["wide_x"], step["wide_y"]
            active[group] = ok & ~step["near_edge"] & (wide_x | wide_y)
            bins[group[ok & wide_x], 0] *= 2
            bins[group[ok & wide_y], 1] *= 2
        binsize *= 2
    return {**res, "code": code, "near_edge": near_edge, "bins": used}


@register
class SdssCentroid(Plugin):
    name = NAME
    order = CENTROID_ORDER

    def columns(self, ctx: MeasurementContext) -> list[Column]:
        d = "Centroid from the PSF-correlated image's interpolated peak"
        return [
            Column(f"{NAME}_x", "f8", "pix", f"{d}, x (parent pixel frame)."),
            Column(f"{NAME}_y", "f8", "pix", f"{d}, y (parent pixel frame)."),
            Column(f"{NAME}_xErr", "f4", "pix", "1σ uncertainty of x."),
            Column(f"{NAME}_yErr", "f4", "pix", "1σ uncertainty of y."),
            Column(f"{NAME}_flag_edge", "bool", None, "Object too close to edge; peak used."),
            Column(f"{NAME}_flag_noSecondDerivative", "bool", None,
                   "Vanishing second derivative."),
            Column(f"{NAME}_flag_almostNoSecondDerivative", "bool", None,
                   "Almost vanishing second derivative."),
            Column(f"{NAME}_flag_notAtMaximum", "bool", None, "Object is not at a maximum."),
            Column(f"{NAME}_flag_near_edge", "bool", None,
                   "Object close to edge; fallback kernel used."),
            Column(f"{NAME}_flag_resetToPeak", "bool", None,
                   "Set if CentroidChecker reset the centroid (outside the footprint, or "
                   "more than 1 pixel from the peak)."),
            Column(f"{NAME}_flag_badError", "bool", None, "Error on x and/or y position is NaN."),
        ]

    def measure(self, ctx: MeasurementContext, out: dict[str, np.ndarray]) -> None:
        n = ctx.n_sources
        if n == 0:
            return
        px, py = ctx.peak_x.astype(np.int64), ctx.peak_y.astype(np.int64)
        ctx.x, ctx.y = px.astype(float), py.astype(float)
        ctx.clear_stamps()
        fit = binned_fits(ctx, px, py)
        code, near_edge = fit["code"], fit["near_edge"]
        measured = code == 0
        x = np.where(measured, fit["x"], px)
        y = np.where(measured, fit["y"], py)
        x_err = np.where(measured, fit["x_err"], np.nan)
        y_err = np.where(measured, fit["y_err"], np.nan)
        # CentroidChecker
        bad_error = measured & ~(np.isfinite(x_err) & np.isfinite(y_err))
        far = (x - px) ** 2 + (y - py) ** 2 > MAX_DIST_TO_PEAK**2
        reset = measured & (far | ~ctx.in_own_footprint(x, y) | ~np.isfinite(x + y))
        x, y = np.where(reset, px, x), np.where(reset, py, y)
        ox, oy = ctx.exposure.xy0
        out[f"{NAME}_x"][:] = x + ox
        out[f"{NAME}_y"][:] = y + oy
        out[f"{NAME}_xErr"][:] = x_err
        out[f"{NAME}_yErr"][:] = y_err
        for number, flag in FAILURE_FLAGS.items():
            out[f"{NAME}_{flag}"][:] = code == number
        out[f"{NAME}_flag_near_edge"][:] = near_edge
        out[f"{NAME}_flag_resetToPeak"][:] = reset
        out[f"{NAME}_flag_badError"][:] = bad_error
        out[f"{NAME}_flag"][:] = ~measured | near_edge | reset | bad_error
        ctx.x, ctx.y = x.astype(float), y.astype(float)
        if ctx.slots.centroid == NAME:
            ctx.centroid_flag = out[f"{NAME}_flag"].copy()
        ctx.clear_stamps()
