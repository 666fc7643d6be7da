"""One-dimensional interpolation as afw's Interpolate does it (GSL's interpolants).

Shared by the background the engine fits (`app.engine.background`) and the backgrounds LSST
archives (`app.io.afw_background`), so a mesh is made smooth one way. Styles are afw's
``Interpolate.Style`` numbers: ``CONSTANT`` (afw's step function: nodes moved to the cells'
edges, the values between set to the mean of the two cells), ``LINEAR``, ``NATURAL_SPLINE``
and ``CUBIC_SPLINE`` (both GSL's natural cubic spline), ``AKIMA_SPLINE`` (GSL's non-periodic
Akima). Beyond the end nodes afw extends each interpolant by its quadratic Taylor series
there (``beyond="quadratic"``); the engine's own background continues it linearly (a cubic's
curvature over half a cell amplifies the cells' noise) or holds it at the end value.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.interpolate import CubicSpline

CONSTANT, LINEAR, NATURAL_SPLINE, CUBIC_SPLINE, CUBIC_PERIODIC, AKIMA, AKIMA_PERIODIC = range(7)
STYLE_NAMES = ("CONSTANT", "LINEAR", "NATURAL_SPLINE", "CUBIC_SPLINE", "CUBIC_SPLINE_PERIODIC",
               "AKIMA_SPLINE", "AKIMA_SPLINE_PERIODIC")
STYLES = {name: code for code, name in enumerate(STYLE_NAMES)}
MIN_POINTS = (1, 2, 3, 3, 3, 5, 5)  # afw's lookupMinInterpPoints

Beyond = Literal["quadratic", "linear", "hold"]


def richest_style(n: int) -> int:
    """afw's lookupMaxInterpStyle: the richest interpolation ``n`` points allow."""
    return AKIMA if n > 4 else (CONSTANT, CONSTANT, LINEAR, CUBIC_SPLINE, CUBIC_SPLINE)[n]


def interpolate(x: np.ndarray, y: np.ndarray, style: int, xi: np.ndarray,
                beyond: Beyond = "quadratic") -> np.ndarray:
    """Nodes ``x`` (increasing) and values ``y`` (n, m): m series at once, evaluated at
    ``xi``: (len(xi), m)."""
    n = len(x)
    if style == CONSTANT or n == 1:
        if n == 1:
            return np.repeat(y[:1], len(xi), axis=0)
        edges = np.concatenate([[0.5 * (3 * x[0] - x[1])], 0.5 * (x[:-1] + x[1:]),
                                [0.5 * (3 * x[-1] - x[-2])]])
        levels = np.concatenate([y[:1], 0.5 * (y[:-1] + y[1:]), y[-1:]])
        k = np.clip(np.searchsorted(edges, xi, side="right") - 1, 0, n)
        return levels[k]
    b, c, d = cubic_pieces(x, y, style)
    seg = np.clip(np.searchsorted(x, xi, side="right") - 1, 0, n - 2)
    t = (np.clip(xi, x[0], x[-1]) - x[seg])[:, None]
    out = y[seg] + t * (b[seg] + t * (c[seg] + t * d[seg]))
    if beyond == "hold":
        return out
    h = x[-1] - x[-2]
    for outside, node, slope, curve in (
        (xi < x[0], 0, b[0], 2 * c[0]),
        (xi > x[-1], n - 1, b[-1] + h * (2 * c[-1] + 3 * d[-1] * h), 2 * c[-1] + 6 * d[-1] * h),
    ):
        if outside.any():
            s = (xi[outside] - x[node])[:, None]
            out[outside] = y[node] + s * slope + (
                0.5 * s * s * curve if beyond == "quadratic" else 0.0)
    return out


def cubic_pieces(x: np.ndarray, y: np.ndarray, style: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per segment (n - 1, m): ``y_i + t (b + t (c + t d))`` for GSL's linear, natural cubic
    spline (CUBIC_SPLINE is GSL's cspline too) and Akima interpolants."""
    h = np.diff(x)[:, None]
    slopes = np.diff(y, axis=0) / h
    if style == LINEAR or len(x) == 2:
        zero = np.zeros_like(slopes)
        return slopes, zero, zero
    if style in (NATURAL_SPLINE, CUBIC_SPLINE) or len(x) < MIN_POINTS[AKIMA]:
        pieces = CubicSpline(x, y, axis=0, bc_type="natural").c
        return pieces[2], pieces[1], pieces[0]
    # GSL's akima.c, non-periodic: two slopes extrapolated at each end
    n = len(x)
    m = np.concatenate([3 * slopes[:1] - 2 * slopes[1:2], 2 * slopes[:1] - slopes[1:2], slopes,
                        2 * slopes[-1:] - slopes[-2:-1], 3 * slopes[-1:] - 2 * slopes[-2:-1]])
    mi, mip1, mip2 = m[2:n + 1], m[3:n + 2], m[4:n + 3]
    mim1, mim2 = m[1:n], m[0:n - 1]
    ne = np.abs(mip1 - mi) + np.abs(mim1 - mim2)
    ne_next = np.abs(mip2 - mip1) + np.abs(mi - mim1)
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = np.abs(mim1 - mim2) / ne
        alpha_next = np.abs(mi - mim1) / ne_next
    t_next = np.where(ne_next == 0, mi, (1 - alpha_next) * mi + alpha_next * mip1)
    b = np.where(ne == 0, mi, (1 - alpha) * mim1 + alpha * mi)
    c = np.where(ne == 0, 0.0, (3 * mi - 2 * b - t_next) / h)
    d = np.where(ne == 0, 0.0, (b + t_next - 2 * mi) / (h * h))
    return b, c, d
