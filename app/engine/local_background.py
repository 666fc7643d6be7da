"""SourceDetectionTask's temporary local background: mesh statistics through Akima splines.

LSST sets ``tempLocalBackground`` to 64-pixel cells interpolated with ``AKIMA_SPLINE``
(``useApprox=False``), and that choice matters at this cell size: the cells are fitted to the
image with its sources in, so a cell on a bright star or galaxy stands far above its
neighbours. A bicubic spline through the mesh (the SubtractBackgroundTask surface of
`app.engine.background`) rings at such a cell over the whole image, by several times the
noise of the smoothed image, and that both inflates the threshold made again on the
subtracted image and hides faint pairs a hundred pixels away. Akima's spline takes each
interval's slopes from its neighbours only, so a bright cell moves the background within two
cells of it and nowhere else.

As afw's BackgroundMI, the cells are interpolated along x for each row of cells, then along
y for every column of pixels. Departure: beyond the outermost cell centres the surface is
held at its edge value (afw extrapolates the end intervals), which cannot run away on a
background that is only subtracted for the peak search.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import Akima1DInterpolator

from app.engine.background import _fill_empty_cells, mesh_statistics
from app.engine.config import BackgroundConfig
from app.engine.masks import MaskPlanes

ROWS = 256  # image rows evaluated per call of the column spline


def _along(centres: np.ndarray, values: np.ndarray, at: np.ndarray, axis: int) -> np.ndarray:
    """Akima interpolation of ``values`` (cells along ``axis``) at ``at``, held at the ends."""
    if len(centres) == 1:
        shape = list(values.shape)
        shape[axis] = len(at)
        return np.broadcast_to(values, shape).astype(np.float64)
    spline = Akima1DInterpolator(centres, values, axis=axis)
    return spline(np.clip(at, centres[0], centres[-1]))


def local_background(image: np.ndarray, mask: np.ndarray, planes: MaskPlanes,
                     config: BackgroundConfig) -> np.ndarray:
    """The background image (float32) of ``config``'s mesh, Akima-interpolated."""
    ignore = planes.any(mask, config.ignoredPixelMask) | ~np.isfinite(image)
    values, yc, xc = mesh_statistics(image, ignore, config)
    values = _fill_empty_cells(values)
    h, w = image.shape
    rows = _along(xc, values, np.arange(w, dtype=float), axis=1)  # (cell rows, w)
    out = np.empty((h, w), np.float32)
    for start in range(0, h, ROWS):
        y = np.arange(start, min(start + ROWS, h), dtype=float)
        out[start: start + len(y)] = _along(yc, rows, y, axis=0)
    return out
