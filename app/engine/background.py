"""Background: statistics on a mesh of cells, approximated or interpolated across the image.

This is LSST's SubtractBackgroundTask (meas_algorithms subtractBackground.py over afw's
BackgroundMI): the image is cut into cells of about ``binSize`` pixels, each cell's clipped
mean (MEANCLIP) is taken with masked pixels (detections, bad, edge…) left out, and the cell
values become a smooth image in one of two ways, as afw does:

- ``useApprox`` (LSST's default): a Chebyshev series of order ``approxOrderX`` fitted to
  the cell values, weighted by the inverse variance of each cell's mean (``weighting``);
- otherwise: interpolation through the cell centres, separably (columns, then rows), with
  ``algorithm`` AKIMA_SPLINE, NATURAL_SPLINE, LINEAR or CONSTANT, continued linearly beyond
  the outermost centres.

With too few cells for the order asked (a 256-px image at binSize 128 has two per axis),
``undersampleStyle`` REDUCE_INTERP_ORDER lowers the order to what the cells support, so any
image of at least one cell works; THROW_EXCEPTION refuses instead. Cells with no usable
pixels take the value of the nearest cell that has some (and no weight in the fit).

photutils' Background2D is not used: its interpolators (a spline zoom of the mesh, or
inverse-distance weighting) are neither of LSST's, it has no inverse-variance-weighted
Chebyshev approximation nor afw's order reduction for small meshes, and the background
must be the one afw's BackgroundList files (calexpBackground) describe.

The same mesh gives the sky noise: each cell's clipped standard deviation, smoothed the same
way, is SExtractor's background rms map, from which a plain image's variance plane is made.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import erf

from app.engine.config import BackgroundConfig
from app.engine.cutouts import gather_windows
from app.engine.fields import ChebyshevBoundedField, chebyshev_basis
from app.engine.interpolation import MIN_POINTS, STYLE_NAMES, STYLES, richest_style
from app.engine.interpolation import interpolate as interpolate_1d
from app.engine.masks import MaskPlanes
from app.engine.stats import clipped_stats

EVAL_ROWS = 256  # rows of the background evaluated per block (float64 only per block)


class BackgroundError(ValueError):
    """The background cannot be estimated as configured (no usable pixels, too few cells)."""


def _cell_edges(n: int, bin_size: int) -> np.ndarray:
    """Edges of max(1, round(n / bin_size)) nearly equal cells covering 0..n."""
    ncell = max(1, int(round(n / bin_size)))
    return np.linspace(0, n, ncell + 1).round().astype(int)


@dataclass
class Mesh:
    """Per-cell statistics and where the cells are."""

    values: np.ndarray  # (ny, nx) background statistic; NaN where a cell had no pixels
    rms: np.ndarray  # (ny, nx) clipped standard deviation of the cell's pixels
    counts: np.ndarray  # (ny, nx) pixels used
    yc: np.ndarray  # cell centres, pixels
    xc: np.ndarray


def mesh_statistics(image: np.ndarray, ignore: np.ndarray, config: BackgroundConfig) -> Mesh:
    """Per-cell background values, their rms and pixel counts, and the cell centres.

    Cells are made equal in size by padding the shorter ones (cells differ by at most one
    pixel) with NaN, so one gather lays every cell out as a row and one vectorized call
    does all cells. Ignored pixels are NaN too, set in the gathered cells.
    """
    h, w = image.shape
    ye, xe = _cell_edges(h, config.binSize), _cell_edges(w, config.binSize)
    ny, nx = len(ye) - 1, len(xe) - 1
    size_y, size_x = np.diff(ye), np.diff(xe)
    window = (int(size_y.max()), int(size_x.max()))
    y0, x0 = np.repeat(ye[:-1], nx), np.tile(xe[:-1], ny)
    cells = gather_windows(image, y0, x0, window).astype(np.float32, copy=False)
    pad = ((np.arange(window[0]) >= size_y[:, None])[:, None, :, None]
           | (np.arange(window[1]) >= size_x[:, None])[None, :, None, :])
    drop = gather_windows(ignore, y0, x0, window).reshape(ny, nx, *window) | pad
    np.copyto(cells, np.float32(np.nan), where=drop.reshape(cells.shape))
    cells = cells.reshape(ny, nx, -1)
    counts = np.isfinite(cells).sum(axis=-1)
    mean, _, rms = clipped_stats(cells, nsigma=config.nSigmaClip, niter=config.nIterClip,
                                      axis=-1, overwrite_input=True)
    if config.statisticsProperty == "MEANCLIP":
        values = mean
    elif config.statisticsProperty == "MEDIAN":
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an empty cell is NaN, as wanted
            values = np.nanmedian(cells, axis=-1)
    else:
        with np.errstate(invalid="ignore"):
            values = np.where(counts > 0, np.nansum(np.nan_to_num(cells, nan=0.0), axis=-1)
                              / np.maximum(counts, 1), np.nan)
    yc = 0.5 * (ye[:-1] + ye[1:]) - 0.5
    xc = 0.5 * (xe[:-1] + xe[1:]) - 0.5
    rms = np.asarray(rms, np.float64) / clipped_sigma_factor(config.nSigmaClip)
    return Mesh(np.asarray(values, np.float64), rms, counts, yc, xc)


def clipped_sigma_factor(nsigma: float) -> float:
    """The standard deviation of a Gaussian clipped at ±``nsigma`` σ, in units of σ
    (0.987 at 3σ): the clipped rms is divided by it so the sky noise is not underestimated."""
    k = float(nsigma)
    return float(np.sqrt(1.0 - 2.0 * k * np.exp(-0.5 * k * k) / np.sqrt(2 * np.pi)
                         / erf(k / np.sqrt(2.0))))


def _fill_empty_cells(values: np.ndarray) -> np.ndarray:
    """Give NaN cells the value of the nearest finite cell."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return values
    if bad.all():
        raise BackgroundError(
            "no usable pixels to estimate the background from: every pixel is masked "
            "(see background.ignoredPixelMask) or not finite")
    _, (iy, ix) = ndimage.distance_transform_edt(bad, return_indices=True)
    return values[iy, ix]


def _reduced(wanted: int, cells: int, config: BackgroundConfig, what: str) -> int:
    """The order a fit over ``cells`` points can have: ``wanted``, or lower when allowed."""
    if wanted < cells:
        return wanted
    if config.undersampleStyle == "THROW_EXCEPTION":
        raise BackgroundError(
            f"{cells} background cells along {what} cannot support a Chebyshev order of "
            f"{wanted}; use a smaller background.binSize, a lower approxOrder, or "
            "undersampleStyle REDUCE_INTERP_ORDER")
    return cells - 1


def approximate(values: np.ndarray, weights: np.ndarray | None, yc: np.ndarray,
                xc: np.ndarray, shape: tuple[int, int], config: BackgroundConfig
                ) -> np.ndarray:
    """afw's ApproximateChebyshev: a weighted Chebyshev fit to the cell values, evaluated
    at every pixel (float32). Empty cells carry no weight."""
    order_x = _reduced(config.approxOrderX, len(xc), config, "x")
    order_y_wanted = config.approxOrderY if config.approxOrderY >= 0 else config.approxOrderX
    order_y = _reduced(order_y_wanted, len(yc), config, "y")
    finite = np.isfinite(values)
    if not finite.any():
        _fill_empty_cells(values)  # raises
    gx, gy = np.meshgrid(xc, yc)
    w = np.ones_like(values) if weights is None else np.where(np.isfinite(weights), weights, 0)
    use = finite & (w > 0)
    if not use.any():
        use = finite
        w = np.ones_like(values)
    h, wd = shape
    bbox = (0, 0, wd - 1, h - 1)
    field = ChebyshevBoundedField.fit(bbox, gx[use], gy[use], values[use], np.sqrt(w[use]),
                                      order_x=order_x, order_y=order_y)
    return evaluate_field(field, shape)


def evaluate_field(field: ChebyshevBoundedField, shape: tuple[int, int]) -> np.ndarray:
    """A Chebyshev field at every pixel of an image with its box, separably: T(y) C T(x)ᵀ,
    a block of rows at a time (float32 out)."""
    h, w = shape
    x0, y0, x1, y1 = field.bbox
    sx = (2.0 * np.arange(w) - (x0 + x1)) / (x1 - x0 + 1)
    sy = (2.0 * np.arange(h) - (y0 + y1)) / (y1 - y0 + 1)
    tx = chebyshev_basis(sx, field.order_x)  # (w, ox + 1)
    ty = chebyshev_basis(sy, field.order_y)  # (h, oy + 1)
    right = field.coefficients @ tx.T  # (oy + 1, w)
    out = np.empty(shape, np.float32)
    for start in range(0, h, EVAL_ROWS):
        rows = slice(start, start + EVAL_ROWS)
        out[rows] = ty[rows] @ right
    return out


def _interpolator(style: str, nodes: np.ndarray, values: np.ndarray, hold: bool = False):
    """A 1-d interpolant along axis 0 of ``values`` (nodes × columns) in afw's ``style``,
    continued beyond the outermost nodes linearly (a cubic extrapolated over half a cell
    amplifies noise; departure: afw continues it quadratically), or held at the end values
    (``hold``)."""
    code = STYLES[style]
    beyond = "hold" if hold else "linear"
    return lambda t: interpolate_1d(nodes, values, code, t, beyond)


def interpolate(values: np.ndarray, yc: np.ndarray, xc: np.ndarray, shape: tuple[int, int],
                config: BackgroundConfig, hold_edges: bool = False) -> np.ndarray:
    """afw's interpolated background: through the cell centres along y for each cell
    column, then along x for each row (float32); beyond the outermost centres continued
    linearly, or held at the edge values (``hold_edges``)."""
    values = _fill_empty_cells(values)
    style_y = _style_for(len(yc), config)
    style_x = _style_for(len(xc), config)
    columns = _interpolator(style_y, yc, values, hold_edges)(
        np.arange(shape[0], dtype=float))  # (h, nx)
    x = np.arange(shape[1], dtype=float)
    out = np.empty(shape, np.float32)
    for start in range(0, shape[0], EVAL_ROWS):  # float64 per block, not a full-size copy
        rows = slice(start, start + EVAL_ROWS)
        out[rows] = _interpolator(style_x, xc, columns[rows].T, hold_edges)(x).T
    return out


def _style_for(points: int, config: BackgroundConfig) -> str:
    """The interpolation style ``points`` cell centres support: afw's REDUCE_INTERP_ORDER
    takes the richest they allow."""
    style = config.algorithm
    if MIN_POINTS[STYLES[style]] <= points:
        return style
    if config.undersampleStyle == "THROW_EXCEPTION":
        raise BackgroundError(
            f"{points} background cells along an axis are too few for {style} "
            "interpolation; use a smaller background.binSize or undersampleStyle "
            "REDUCE_INTERP_ORDER")
    return STYLE_NAMES[richest_style(points)]


def smooth_mesh(values: np.ndarray, weights: np.ndarray | None, mesh: Mesh,
                shape: tuple[int, int], config: BackgroundConfig, hold_edges: bool = False
                ) -> np.ndarray:
    """Cell values made into a full-resolution image as ``config`` says (float32)."""
    if config.useApprox:
        return approximate(values, weights, mesh.yc, mesh.xc, shape, config)
    return interpolate(values, mesh.yc, mesh.xc, shape, config, hold_edges)


def _ignored(image: np.ndarray, mask: np.ndarray, planes: MaskPlanes,
             config: BackgroundConfig) -> np.ndarray:
    return planes.any(mask, config.ignoredPixelMask) | ~np.isfinite(image)


def _weights(mesh: Mesh, config: BackgroundConfig) -> np.ndarray | None:
    """Inverse variance of each cell's mean (afw's ``weighting``), or None."""
    if not config.weighting:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((mesh.counts > 1) & (mesh.rms > 0), mesh.counts / mesh.rms**2, 0.0)


def estimate_background(
    image: np.ndarray, mask: np.ndarray, planes: MaskPlanes, config: BackgroundConfig,
    *, hold_edges: bool = False,
) -> np.ndarray:
    """The background image: mesh statistics of unmasked pixels, made smooth (an
    interpolation held at its edge values beyond the outermost cells with ``hold_edges``)."""
    mesh = mesh_statistics(image, _ignored(image, mask, planes, config), config)
    return smooth_mesh(mesh.values, _weights(mesh, config), mesh, image.shape, config,
                       hold_edges)


HIGH_PASS = 5  # box (pixels) whose mean is taken off each pixel before its noise is measured


def estimate_background_and_rms(
    image: np.ndarray, mask: np.ndarray, planes: MaskPlanes, config: BackgroundConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The background image and the per-pixel noise (rms) image, for an image that has no
    variance plane (SExtractor's BACKGROUND and BACKGROUND_RMS).

    A cell's clipped spread counts any structure larger than a star (a galaxy that fills the
    frame, a gradient) as noise. So the noise is measured on the image less its running mean
    over ``HIGH_PASS``² pixels, which keeps the pixel-to-pixel noise and takes away what
    varies more slowly; for white noise that leaves a known fraction, √(1 − 1/25), divided
    out. (Noise correlated over a few pixels, as in a resampled image, is underestimated a
    little; a variance or weight plane given with the image is then the better source.) The
    cells' rms is interpolated (Akima), not approximated: the noise may change from cell to
    cell.
    """
    ignore = _ignored(image, mask, planes, config)
    mesh = mesh_statistics(image, ignore, config)
    background = smooth_mesh(mesh.values, _weights(mesh, config), mesh, image.shape, config)
    filled = np.where(ignore, background, image).astype(np.float32)
    filled -= ndimage.uniform_filter(filled, HIGH_PASS, mode="nearest")
    steps = mesh_statistics(filled, ignore, config)
    rms = np.where(steps.counts > 1, steps.rms / np.sqrt(1.0 - 1.0 / HIGH_PASS**2), np.nan)
    interpolated = config.model_copy(update={"useApprox": False})
    return background, interpolate(rms, mesh.yc, mesh.xc, image.shape, interpolated)
