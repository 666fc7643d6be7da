"""afw's BackgroundList (the butler's ``calexpBackground``) evaluated to the full-resolution
background, as ``BackgroundList.getImage()`` does.

The file is three HDUs per background (afw ``math/_backgroundList.py``): the per-bin statistics
image (primary or extension), its mask and its variance, each header carrying
``INTERPSTYLE``, ``UNDERSAMPLESTYLE``, ``APPROXSTYLE``, ``APPROXORDERX/Y``,
``APPROXWEIGHTING`` and the image box ``BKGD_X0``, ``BKGD_Y0``, ``BKGD_WIDTH``,
``BKGD_HEIGHT``. The backgrounds are summed.

Each is evaluated as afw's ``BackgroundMI::doGetImage`` does it (``Background.cc``,
``BackgroundMI.cc``, ``Interpolate.cc``, ``Approximate.cc``):

- bins: the box is cut into ``nx × ny`` bins of nearly equal size; a bin's value sits at its
  centre ``orig + size / 2 - 0.5``;
- with an approximation (``APPROXSTYLE`` 0, Chebyshev): one triangular 2-d Chebyshev series
  of ``APPROXORDERX`` fitted to the bin values (weighted by 1/variance when
  ``APPROXWEIGHTING``) over the box, evaluated at every pixel;
- otherwise interpolation: each bin column is interpolated along y to every row (NaN bins
  dropped), then each row along x, with the style's GSL interpolant: ``LINEAR``,
  ``NATURAL_SPLINE`` and ``CUBIC_SPLINE`` (both GSL's natural cubic spline), ``AKIMA_SPLINE``
  (GSL's Akima), or ``CONSTANT`` (afw's step function: nodes moved to the bins' edges, the
  values between to the mean of the two bins). Beyond the first and last bin centre every
  interpolant is extended by its quadratic Taylor series at that centre, as afw does;
- too few bins for the style: ``REDUCE_INTERP_ORDER`` falls back to the richest style the bins
  allow (as afw), ``THROW_EXCEPTION`` is a refusal naming the counts.

Periodic splines are not supported (afw's background configuration does not offer them).
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from app.engine.fields import ChebyshevBoundedField, chebyshev_basis
from app.engine.interpolation import (
    AKIMA_PERIODIC,
    CUBIC_PERIODIC,
    MIN_POINTS,
    STYLE_NAMES,
    interpolate,
    richest_style,
)
from app.io.errors import ExposureReadError

THROW_EXCEPTION, REDUCE_INTERP_ORDER, INCREASE_NXNYSAMPLE = range(3)
NO_APPROXIMATION, CHEBYSHEV = -1, 0
KEYS = ("INTERPSTYLE", "UNDERSAMPLESTYLE", "BKGD_X0", "BKGD_Y0", "BKGD_WIDTH", "BKGD_HEIGHT")
ROW_BLOCK = 256  # image rows evaluated at a time, so temporaries stay small


def is_background_list(hdul: fits.HDUList) -> bool:
    """Whether ``hdul`` is laid out as an afw BackgroundList."""
    return len(hdul) % 3 == 0 and len(hdul) > 0 and all(k in hdul[0].header for k in KEYS)


def evaluate_background_list(hdul: fits.HDUList, xy0: tuple[int, int] | None = None,
                             shape: tuple[int, int] | None = None) -> np.ndarray:
    """The sum of the file's backgrounds at full resolution, float32.

    Parameters
    ----------
    hdul
        The BackgroundList file, opened.
    xy0, shape
        The parent-frame origin and (height, width) of the exposure it goes with (a calexp
        or a cutout of one); default the first background's own box.

    Raises
    ------
    ExposureReadError
        ``bad_background``: the file is not a BackgroundList, its box does not cover the
        exposure, or its bins are too few for its interpolation style.
    """
    if not is_background_list(hdul):
        raise ExposureReadError(
            "bad_background",
            f"the background file has {len(hdul)} HDUs without afw's BackgroundList keys "
            f"({', '.join(KEYS)}); expected the butler's calexpBackground: three HDUs "
            "(statistics image, mask, variance) per background")
    out = None
    for first in range(0, len(hdul), 3):
        header = hdul[first].header
        box = tuple(int(header[k]) for k in ("BKGD_X0", "BKGD_Y0", "BKGD_WIDTH", "BKGD_HEIGHT"))
        if xy0 is None:
            xy0 = (box[0], box[1])
        height, width = shape or (box[3], box[2])
        dx, dy = xy0[0] - box[0], xy0[1] - box[1]
        if dx < 0 or dy < 0 or dx + width > box[2] or dy + height > box[3]:
            raise ExposureReadError(
                "bad_background",
                f"background #{first // 3 + 1} covers x {box[0]}..{box[0] + box[2] - 1}, y "
                f"{box[1]}..{box[1] + box[3] - 1} (parent frame) but the exposure spans x "
                f"{xy0[0]}..{xy0[0] + width - 1}, y {xy0[1]}..{xy0[1] + height - 1}; give the "
                "calexpBackground of this exposure")
        stats = np.asarray(hdul[first].data, float)
        variance = np.asarray(hdul[first + 2].data, float)
        image = _background(stats, variance, header, box[2], box[3],
                            np.arange(dx, dx + width, dtype=float),
                            np.arange(dy, dy + height, dtype=float))
        out = image if out is None else out + image
    assert out is not None
    return out


def bin_centres(length: int, n_bins: int) -> np.ndarray:
    """afw's Background bin centres along an axis of ``length`` pixels cut into ``n_bins``."""
    ends = np.minimum((np.arange(1, n_bins + 1) * length + n_bins // 2) // n_bins, length)
    starts = np.concatenate([[0], ends[:-1]])
    return starts + 0.5 * (ends - starts) - 0.5


def _background(stats: np.ndarray, variance: np.ndarray, header: fits.Header, width: int,
                height: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """One background at the box-local pixel coordinates ``xs`` (columns), ``ys`` (rows)."""
    ny, nx = stats.shape
    style = int(header["INTERPSTYLE"])
    undersample = int(header["UNDERSAMPLESTYLE"])
    if not 0 <= style < len(STYLE_NAMES) or style in (CUBIC_PERIODIC, AKIMA_PERIODIC):
        raise ExposureReadError("bad_background", f"INTERPSTYLE {style} is not supported; "
                                "expected CONSTANT, LINEAR, NATURAL_SPLINE, CUBIC_SPLINE or "
                                "AKIMA_SPLINE (0, 1, 2, 3, 5)")
    if min(nx, ny) < MIN_POINTS[style]:
        if undersample != REDUCE_INTERP_ORDER:
            raise ExposureReadError(
                "bad_background",
                f"{nx}×{ny} bins are too few for {STYLE_NAMES[style]} interpolation and "
                f"UNDERSAMPLESTYLE is {undersample}, not REDUCE_INTERP_ORDER (1)")
        style = richest_style(min(nx, ny))
    xcen, ycen = bin_centres(width, nx), bin_centres(height, ny)
    if int(header.get("APPROXSTYLE", NO_APPROXIMATION)) == CHEBYSHEV:
        return _approximation(stats, variance, header, xcen, ycen, width, height, xs, ys)
    grid = np.empty((nx, len(ys)))
    for ix in range(nx):
        column = stats[:, ix]
        keep = ~np.isnan(column)
        grid[ix] = _interpolate_with_fallback(ycen[keep], column[keep, None], style,
                                              undersample, ys)[:, 0]
    out = np.empty((len(ys), len(xs)), np.float32)
    valid = ~np.isnan(grid)
    # a column is NaN in every row or in none, so rows share their nodes; group them anyway
    patterns, which = np.unique(valid.T, axis=0, return_inverse=True)
    for p, pattern in enumerate(patterns):
        rows = np.flatnonzero(which.ravel() == p)
        for start in range(0, len(rows), ROW_BLOCK):
            block = rows[start:start + ROW_BLOCK]
            values = grid[np.ix_(pattern, block)]
            out[block] = _interpolate_with_fallback(xcen[pattern], values, style, undersample,
                                                    xs).T
    return out


def _interpolate_with_fallback(x: np.ndarray, y: np.ndarray, style: int, undersample: int,
                               xi: np.ndarray) -> np.ndarray:
    """``_interpolate``, reduced as afw reduces it when there are too few finite nodes:
    none gives NaN; fewer than the style needs gives the richest style they allow."""
    if len(x) < MIN_POINTS[style]:
        if undersample != REDUCE_INTERP_ORDER:
            raise ExposureReadError(
                "bad_background",
                f"a row or column of the background has {len(x)} finite bins, too few for "
                f"{STYLE_NAMES[style]} interpolation, and UNDERSAMPLESTYLE is not "
                "REDUCE_INTERP_ORDER")
        if not len(x):
            return np.full((len(xi), y.shape[1]), np.nan)
        style = richest_style(len(x))
    return interpolate(x, y, style, xi)


def _approximation(stats: np.ndarray, variance: np.ndarray, header: fits.Header,
                   xcen: np.ndarray, ycen: np.ndarray, width: int, height: int,
                   xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """afw's ApproximateChebyshev: a triangular Chebyshev series over the box (the same
    scaling as ChebyshevBoundedField's over ``(0, 0, width - 1, height - 1)``) fitted to the
    finite bins, weighted by 1/variance when ``APPROXWEIGHTING``; evaluated separably."""
    order = int(header.get("APPROXORDERX", 1))
    order_y = int(header.get("APPROXORDERY", -1))
    if order_y >= 0 and order_y != order:
        raise ExposureReadError("bad_background", f"APPROXORDERX {order} and APPROXORDERY "
                                f"{order_y} differ; afw requires them equal")
    weighting = bool(header.get("APPROXWEIGHTING", True))
    gx, gy = np.meshgrid(xcen, ycen)
    ivar = 1.0 / variance if weighting else np.ones_like(stats)
    with np.errstate(invalid="ignore"):
        good = np.isfinite(stats + ivar)
    if not good.any():
        raise ExposureReadError("bad_background", "no bin of the background has a finite value "
                                "and variance to fit its approximation to")
    field = ChebyshevBoundedField.fit((0, 0, width - 1, height - 1), gx[good], gy[good],
                                      stats[good], np.sqrt(ivar[good]), order_x=order)
    tx = chebyshev_basis((2 * xs - (width - 1)) / width, order)
    ty = chebyshev_basis((2 * ys - (height - 1)) / height, order)
    return (ty @ field.coefficients @ tx.T).astype(np.float32)
