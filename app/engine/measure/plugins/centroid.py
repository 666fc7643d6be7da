"""base_SdssCentroid: SDSS's centroider as LSST's meas_base runs it.

The image is correlated with the local PSF kernel (a least-squares fit of the PSF at each
pixel), which is only needed on the 5×5 pixels around the peak, so it is computed there
alone. A quadratic first guess from the 3×3 values is refined by quartic ("inter4")
interpolation of the maximum along each row and column, with SDSS's amplitude 1.33, and
combined through the cross terms as astrom.c does. Errors follow SDSS's ``astrom_errors``.
"""

from __future__ import annotations

import numpy as np

from app.engine.measure.context import MeasurementContext, psf_kernels
from app.engine.measure.registry import CENTROID_ORDER, Column, Plugin, register

NAME = "base_SdssCentroid"
AMPAST4 = 1.33  # amplitude of the 4th-order correction compared to theory (SDSS)


def inter4(vm: np.ndarray, v0: np.ndarray, vp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quartic interpolation of the maximum of three values at -1, 0, +1; (centre, bad)."""
    sp, sm = v0 - vp, v0 - vm
    d2 = sp + sm
    s = 0.5 * (vp - vm)
    with np.errstate(divide="ignore", invalid="ignore"):
        cen = s / d2 * (1.0 + AMPAST4 * sp * sm / (d2 * v0))
    bad = (d2 <= 0) | (v0 <= 0) | ~(np.abs(cen) < 1)
    return np.where(bad, 0.0, cen), bad


def astrom_errors(sky_var: np.ndarray, source_var: np.ndarray, tau2: np.ndarray,
                  a_s: np.ndarray, s: np.ndarray, d: np.ndarray, sigma: np.ndarray,
                  quartic_bad: np.ndarray) -> np.ndarray:
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
    del tau2  # SDSS passes it for the unsmoothed case only
    return np.where(x_var >= 0, np.sqrt(x_var), np.nan)


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
            Column(f"{NAME}_flag_edge", "bool", None, "Too close to the image edge; peak used."),
            Column(f"{NAME}_flag_noSecondDerivative", "bool", None,
                   "Vanishing second derivative."),
            Column(f"{NAME}_flag_almostNoSecondDerivative", "bool", None,
                   "Almost vanishing second derivative."),
            Column(f"{NAME}_flag_notAtMaximum", "bool", None, "Object is not at a maximum."),
            Column(f"{NAME}_flag_resetToPeak", "bool", None,
                   "The fit failed or moved too far; the centroid is the peak pixel."),
        ]

    def measure(self, ctx: MeasurementContext, out: dict[str, np.ndarray]) -> None:
        n = ctx.n_sources
        if n == 0:
            return
        ctx.x, ctx.y = ctx.peak_x.astype(float), ctx.peak_y.astype(float)
        ctx.clear_stamps()
        kern = psf_kernels(ctx.psf, ctx.x, ctx.y)
        k = kern.shape[-1] // 2
        sigma = ctx.psf_sigma()
        st = ctx.stamps(k + 2)
        img = np.where(st.on_image, st.image, 0).astype(np.float64)
        var = np.where(st.on_image, st.variance, 0).astype(np.float64)
        # PSF-correlated values on the central 5×5 pixels, and their variance
        win = np.lib.stride_tricks.sliding_window_view(img, (2 * k + 1, 2 * k + 1), axis=(1, 2))
        vwin = np.lib.stride_tricks.sliding_window_view(var, (2 * k + 1, 2 * k + 1), axis=(1, 2))
        sm = np.einsum("nabij,nij->nab", win, kern)  # (N, 5, 5)
        smv = np.einsum("nabij,nij->nab", vwin, kern * kern) * (4 * np.pi * sigma**2)[:, None, None]
        idx = np.arange(n)
        # start at the peak; if a neighbour is higher, move there once (notAtMaximum)
        nb = np.stack([sm[:, 1 + dy, 1 + dx] for dy in (0, 1, 2) for dx in (0, 1, 2)], axis=1)
        best = nb.argmax(axis=1)
        cy, cx = 1 + best // 3, 1 + best % 3
        moved = (cy != 2) | (cx != 2)

        def v(dy: int, dx: int, a: np.ndarray = sm) -> np.ndarray:
            return a[idx, cy + dy, cx + dx]

        d2x = 2 * v(0, 0) - v(0, -1) - v(0, 1)
        d2y = 2 * v(0, 0) - v(-1, 0) - v(1, 0)
        sx = 0.5 * (v(0, 1) - v(0, -1))
        sy = 0.5 * (v(1, 0) - v(-1, 0))
        no_d2 = (d2x <= 0) | (d2y <= 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            dx0 = sx / d2x
            dy0 = sy / d2y
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
        xc = np.where(quartic_bad, dx0, dx4)
        yc = np.where(quartic_bad, dy0, dy4)
        with np.errstate(divide="ignore", invalid="ignore"):
            sig_x2 = np.where(quartic_bad, vpk / d2x, vpk / d2x - (1 + 6 * dx0 * dx0) / 4)
            sig_y2 = np.where(quartic_bad, vpk / d2y, vpk / d2y - (1 + 6 * dy0 * dy0) / 4)
        s2 = sigma**2
        tau_x2 = np.maximum(sig_x2 - s2, s2)
        tau_y2 = np.maximum(sig_y2 - s2, s2)
        sky_var = (sum(v(a, b, smv) for a in (-1, 0, 1) for b in (-1, 0, 1)) - v(0, 0, smv)) / 8
        source_var = v(0, 0, smv)
        x_err = astrom_errors(sky_var, source_var, tau_x2, vpk, sx, d2x, sigma, quartic_bad)
        y_err = astrom_errors(sky_var, source_var, tau_y2, vpk, sy, d2y, sigma, quartic_bad)
        bad = (no_d2 | ~np.isfinite(xc) | ~np.isfinite(yc) | (np.abs(xc) > 1.5)
               | (np.abs(yc) > 1.5))
        almost = ~no_d2 & ((d2x < 3 * np.sqrt(6 * sky_var / (4 * np.pi * s2)))
                           | (d2y < 3 * np.sqrt(6 * sky_var / (4 * np.pi * s2))))
        centre_on = st.on_image[idx, k + cy, k + cx]
        edge = ~st.on_image.all(axis=(1, 2))
        x = np.where(bad, ctx.peak_x, st.x0 + k + cx + np.where(bad, 0, xc))
        y = np.where(bad, ctx.peak_y, st.y0 + k + cy + np.where(bad, 0, yc))
        ox, oy = ctx.exposure.xy0
        out[f"{NAME}_x"][:] = x + ox
        out[f"{NAME}_y"][:] = y + oy
        out[f"{NAME}_xErr"][:] = np.where(bad, np.nan, x_err)
        out[f"{NAME}_yErr"][:] = np.where(bad, np.nan, y_err)
        out[f"{NAME}_flag_edge"][:] = edge
        out[f"{NAME}_flag_noSecondDerivative"][:] = no_d2
        out[f"{NAME}_flag_almostNoSecondDerivative"][:] = almost
        out[f"{NAME}_flag_notAtMaximum"][:] = moved
        out[f"{NAME}_flag_resetToPeak"][:] = bad
        out[f"{NAME}_flag"][:] = bad | ~centre_on
        ctx.x, ctx.y = x.astype(float), y.astype(float)
        ctx.clear_stamps()
