"""Background: statistics on a mesh of cells, interpolated smoothly across the image.

This is LSST's SubtractBackgroundTask: the image is cut into cells of about ``binSize``
pixels, each cell's clipped mean (MEANCLIP) is taken with masked pixels (detections, bad,
edge…) left out, and a bicubic spline through the cell centres gives the background at every
pixel (continued linearly beyond the outermost cell centres). Cells with no usable pixels
take the value of the nearest cell that has some.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.interpolate import RectBivariateSpline

from app.engine.config import BackgroundConfig
from app.engine.cutouts import gather_windows
from app.engine.masks import MaskPlanes
from app.engine.stats import clipped_stats

SPLINE_ROWS = 256  # rows of the background evaluated per spline call


def _cell_edges(n: int, bin_size: int) -> np.ndarray:
    """Edges of max(1, round(n / bin_size)) nearly equal cells covering 0..n."""
    ncell = max(1, int(round(n / bin_size)))
    return np.linspace(0, n, ncell + 1).round().astype(int)


def mesh_statistics(
    image: np.ndarray, ignore: np.ndarray, config: BackgroundConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-cell background values and the cell centres (yc, xc) in pixels.

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
    if config.statisticsProperty == "MEANCLIP":
        values = clipped_stats(cells, nsigma=config.nSigmaClip, niter=config.nIterClip,
                               axis=-1, overwrite_input=True)[0]
    elif config.statisticsProperty == "MEDIAN":
        values = np.nanmedian(cells, axis=-1) if np.isfinite(cells).any() else np.full(
            (ny, nx), np.nan)
    else:
        values = np.nanmean(cells, axis=-1)
    yc = 0.5 * (ye[:-1] + ye[1:]) - 0.5
    xc = 0.5 * (xe[:-1] + xe[1:]) - 0.5
    return np.asarray(values, dtype=np.float64), yc, xc


def _fill_empty_cells(values: np.ndarray) -> np.ndarray:
    """Give NaN cells the value of the nearest finite cell."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return values
    if bad.all():
        raise ValueError("no usable pixels to estimate the background from")
    _, (iy, ix) = ndimage.distance_transform_edt(bad, return_indices=True)
    return values[iy, ix]


def interpolate_mesh(values: np.ndarray, yc: np.ndarray, xc: np.ndarray,
                     shape: tuple[int, int]) -> np.ndarray:
    """Smooth spline through the cell values, evaluated on every pixel (float32)."""
    values = _fill_empty_cells(values)
    ky = min(3, len(yc) - 1)
    kx = min(3, len(xc) - 1)
    if kx == 0 or ky == 0:
        # one row or column of cells: interpolate along the other axis only
        line = np.interp(
            np.arange(shape[1] if ky == 0 else shape[0]),
            xc if ky == 0 else yc,
            values.ravel(),
        )
        out = np.broadcast_to(line[None, :] if ky == 0 else line[:, None], shape)
        return np.ascontiguousarray(out, dtype=np.float32)
    spline = RectBivariateSpline(yc, xc, values, kx=kx, ky=ky, s=0)
    # inside the outermost cell centres the spline; beyond them a linear continuation along
    # its slope at the edge (a cubic extrapolated over half a cell amplifies the cells' noise)
    y = np.arange(shape[0], dtype=float)
    x = np.arange(shape[1], dtype=float)
    yi, xi = np.clip(y, yc[0], yc[-1]), np.clip(x, xc[0], xc[-1])
    out = np.empty(shape, dtype=np.float32)
    for start in range(0, shape[0], SPLINE_ROWS):  # float64 in blocks, not a full-size copy
        rows = slice(start, start + SPLINE_ROWS)
        out[rows] = spline(yi[rows], xi)
    # the slopes are only needed on the rows and columns beyond the outermost centres
    rows, cols = y != yi, x != xi
    if rows.any():
        out[rows] += spline(yi[rows], xi, dx=1) * (y - yi)[rows, None]
    if cols.any():
        out[:, cols] += spline(yi, xi[cols], dy=1) * (x - xi)[None, cols]
    return out

def estimate_background(
    image: np.ndarray, mask: np.ndarray, planes: MaskPlanes, config: BackgroundConfig
) -> np.ndarray:
    """The background image: mesh statistics of unmasked pixels, interpolated."""
    ignore = planes.any(mask, config.ignoredPixelMask) | ~np.isfinite(image)
    values, yc, xc = mesh_statistics(image, ignore, config)
    return interpolate_mesh(values, yc, xc, image.shape)
