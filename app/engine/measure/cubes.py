"""Numerics on stacks of stamps: smoothing, Gaussian weights, exact circular overlap."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from photutils.geometry import circular_overlap_grid


def smooth_cube(cube: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Correlate each stamp with a normalized Gaussian of its own ``sigma`` (same size out).

    Edges are padded with zeros: only the central pixels of the result are used.
    """
    sigma = np.broadcast_to(np.asarray(sigma, float), (cube.shape[0],))
    half = int(np.ceil(3.5 * sigma.max()))
    t = np.arange(-half, half + 1, dtype=float)
    kern = np.exp(-0.5 * (t[None, :] / sigma[:, None]) ** 2)
    kern /= kern.sum(axis=1, keepdims=True)
    padded = np.pad(cube.astype(np.float64), ((0, 0), (half, half), (half, half)))
    rows = np.einsum("nyxk,nk->nyx", sliding_window_view(padded, 2 * half + 1, axis=2), kern)
    return np.einsum("nyxk,nk->nxy", sliding_window_view(rows, 2 * half + 1, axis=1), kern
                     ).transpose(0, 2, 1)


def stamp_offsets(half: int, x0: np.ndarray, y0: np.ndarray, x: np.ndarray, y: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(dx, dy) of every stamp pixel from each source's position, as (N, 1, S) and (N, S, 1)
    arrays that broadcast to the (N, S, S) stamps: terms in one coordinate only then cost a
    row, not a cube."""
    off = np.arange(2 * half + 1, dtype=float)
    dx = (x0[:, None, None] + off[None, None, :]) - x[:, None, None]
    dy = (y0[:, None, None] + off[None, :, None]) - y[:, None, None]
    return dx, dy


def gaussian_weight(dx: np.ndarray, dy: np.ndarray, xx: np.ndarray, yy: np.ndarray,
                    xy: np.ndarray) -> np.ndarray:
    """Unnormalized elliptical Gaussian exp(-½ dᵀ Q⁻¹ d) with Q = [[xx, xy], [xy, yy]].

    Zero where the quadratic form is undefined (no positive-definite Q, or no position).
    The −½ is folded into the per-source coefficients and the terms in one coordinate are
    formed on a row or a column, so the full cube takes one product and two sums (scaling
    by −½ is exact: the weights are those of the plain formula to the bit).
    """
    det = xx * yy - xy * xy
    det = np.where(det > 0, det, np.nan)
    ixx, iyy, ixy = yy / det, xx / det, -xy / det
    q = -ixy[:, None, None] * dx * dy  # −½ · 2 ixy dx dy
    q += -0.5 * ixx[:, None, None] * dx * dx
    q += -0.5 * iyy[:, None, None] * dy * dy
    w = np.exp(q, out=q)
    return np.fmax(w, 0.0, out=w)  # NaN → 0


def exact_circle_weights(ox: np.ndarray, oy: np.ndarray, size: int, r: float) -> np.ndarray:
    """(N, size, size) exact area of each unit pixel of a stamp inside a circle of radius
    ``r`` centred at (ox, oy), in the stamp's pixel coordinates (pixel centres 0..size-1).

    photutils' compiled ``circular_overlap_grid``, the kernel of its exact aperture masks,
    one call per stamp: on 3000 stamps of 27² px it takes 11 µs a stamp where skyphot's
    own vectorized numpy integral over the stamps' edge rings took 62 µs, and the two
    agree to 2e-10 of a pixel.
    """
    out = np.empty((len(ox), size, size))
    for i, (cx, cy) in enumerate(zip(np.asarray(ox, float), np.asarray(oy, float),
                                     strict=True)):
        out[i] = circular_overlap_grid(-0.5 - cx, size - 0.5 - cx, -0.5 - cy, size - 0.5 - cy,
                                       size, size, r, 1, 1)
    return out
