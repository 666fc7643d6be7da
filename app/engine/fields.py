"""Smooth fields over an image: afw's ChebyshevBoundedField.

LSST stores aperture corrections (ApCorrMap) and spatially varying calibrations as 2-d
Chebyshev series over the image's bounding box. skyphot fits its own aperture corrections
in the same form and decodes archived ones into it, so a field read from a calexp and one
measured here are the same object.

Conventions, as afw's: the box is an integer pixel box ``(min_x, min_y, max_x, max_y)``,
inclusive; positions map to [-1, 1] over the box grown by half a pixel on each side
(``Box2D(Box2I)``); ``coefficients[j, i]`` multiplies ``T_j(y') · T_i(x')``. A triangular
field keeps only terms with ``i + j ≤ order``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]  # min_x, min_y, max_x, max_y (inclusive pixels)


def chebyshev_basis(t: np.ndarray, order: int) -> np.ndarray:
    """(N, order + 1): T_0(t) … T_order(t) by the recurrence ``T_k = 2t T_{k-1} − T_{k-2}``."""
    t = np.asarray(t, float)
    out = np.empty((t.size, order + 1))
    out[:, 0] = 1.0
    if order >= 1:
        out[:, 1] = t.ravel()
    for k in range(2, order + 1):
        out[:, k] = 2.0 * out[:, 1] * out[:, k - 1] - out[:, k - 2]
    return out


@dataclass(frozen=True)
class ChebyshevBoundedField:
    """A 2-d Chebyshev series over a pixel box; evaluating it is a few multiply-adds."""

    bbox: Box
    coefficients: np.ndarray  # (order_y + 1, order_x + 1)

    def _scaled(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x0, y0, x1, y1 = self.bbox
        # Box2D(bbox): from min - 0.5 to max + 0.5, mapped onto [-1, 1]
        sx = (2.0 * np.asarray(x, float) - (x0 + x1)) / (x1 - x0 + 1)
        sy = (2.0 * np.asarray(y, float) - (y0 + y1)) / (y1 - y0 + 1)
        return sx, sy

    @property
    def order_x(self) -> int:
        return self.coefficients.shape[1] - 1

    @property
    def order_y(self) -> int:
        return self.coefficients.shape[0] - 1

    def __call__(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """The field at pixel positions (same frame as ``bbox``); any matching shapes."""
        x, y = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
        sx, sy = self._scaled(x.ravel(), y.ravel())
        tx = chebyshev_basis(sx, self.order_x)
        ty = chebyshev_basis(sy, self.order_y)
        values = np.einsum("nj,ji,ni->n", ty, self.coefficients, tx)
        return values.reshape(x.shape)

    def mean(self) -> float:
        """The field's mean over its box's pixel centres (LSST's BoundedField.mean)."""
        x0, y0, x1, y1 = self.bbox
        xs = np.linspace(x0, x1, min(x1 - x0 + 1, 64))
        ys = np.linspace(y0, y1, min(y1 - y0 + 1, 64))
        gx, gy = np.meshgrid(xs, ys)
        return float(self(gx, gy).mean())

    def relocated(self, dx: int, dy: int) -> ChebyshevBoundedField:
        """The same field over a box shifted by (dx, dy): afw's ``relocate`` to another frame."""
        x0, y0, x1, y1 = self.bbox
        return ChebyshevBoundedField((x0 + dx, y0 + dy, x1 + dx, y1 + dy), self.coefficients)

    @classmethod
    def constant(cls, bbox: Box, value: float) -> ChebyshevBoundedField:
        return cls(bbox, np.array([[float(value)]]))

    @classmethod
    def fit(cls, bbox: Box, x: np.ndarray, y: np.ndarray, z: np.ndarray,
            weights: np.ndarray | None = None, *, order_x: int, order_y: int | None = None,
            triangular: bool = True) -> ChebyshevBoundedField:
        """Weighted least-squares fit (afw's ``ChebyshevBoundedField.fit``).

        ``weights`` multiply the rows of the design matrix, as afw's do (so they are
        1/σ, not 1/σ²).
        """
        order_y = order_x if order_y is None else order_y
        field = cls(bbox, np.zeros((order_y + 1, order_x + 1)))
        sx, sy = field._scaled(np.asarray(x, float), np.asarray(y, float))
        tx, ty = chebyshev_basis(sx, order_x), chebyshev_basis(sy, order_y)
        jj, ii = np.meshgrid(np.arange(order_y + 1), np.arange(order_x + 1), indexing="ij")
        terms = (jj + ii <= max(order_x, order_y)) if triangular else np.ones_like(jj, bool)
        j, i = jj[terms], ii[terms]
        design = ty[:, j] * tx[:, i]
        rhs = np.asarray(z, float)
        if weights is not None:
            w = np.asarray(weights, float)
            design, rhs = design * w[:, None], rhs * w
        solution, *_ = np.linalg.lstsq(design, rhs, rcond=None)
        coefficients = np.zeros((order_y + 1, order_x + 1))
        coefficients[j, i] = solution
        return cls(bbox, coefficients)
