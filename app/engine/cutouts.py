"""Cutouts: many same-sized windows of an image at once."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def gather_windows(plane: np.ndarray, y0: np.ndarray, x0: np.ndarray,
                   shape: tuple[int, int]) -> np.ndarray:
    """``plane[y0:y0+height, x0:x0+width]`` for every (y0, x0), as an (N, height, width)
    array; where a window leaves the plane, its pixels are those of the clipped indices.

    Windows wholly on the plane are copied as blocks from a strided view of it, several
    times faster than a gather by each pixel's own index, which only the few windows that
    cross its edge need.
    """
    h, w = plane.shape
    height, width = shape
    out = np.empty((len(y0), height, width), plane.dtype)
    inside = (y0 >= 0) & (y0 + height <= h) & (x0 >= 0) & (x0 + width <= w)
    if inside.any():
        out[inside] = sliding_window_view(plane, shape)[y0[inside], x0[inside]]
    edge = ~inside
    if edge.any():
        yy = np.clip(y0[edge, None] + np.arange(height), 0, h - 1)
        xx = np.clip(x0[edge, None] + np.arange(width), 0, w - 1)
        out[edge] = plane[yy[:, :, None], xx[:, None, :]]
    return out
