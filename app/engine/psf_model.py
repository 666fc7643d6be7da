"""The measured PSF: a pixel image whose every pixel varies as a polynomial over the field.

This is PSFEx's model, as LSST's PsfexPsfDeterminer builds it: basis images, each weighted
by a polynomial in the position on the image. Evaluating it anywhere is a dot product; many
positions at once are one einsum. The basis is at image-pixel resolution, or, for an
undersampled image, finer (PSFEx's ``pixstep`` < 1, here ``step``): then it is the
pixel-convolved PSF sampled every ``step`` pixels, and a kernel is that grid resampled to
the image pixels (:mod:`app.engine.psf_resample`), at any sub-pixel phase.
"""

from __future__ import annotations

import contextlib
from functools import cache

import numpy as np
from scipy.interpolate import RectBivariateSpline
from threadpoolctl import ThreadpoolController

from app.engine.psf_resample import kernel_side, resample_images
from app.engine.stats import nanmedian_rows

MOMENT_GRID = 13  # nodes per axis of the grid the PSF's moments are interpolated from


def poly_terms(u: np.ndarray, v: np.ndarray, order: int) -> np.ndarray:
    """(N, T) monomials u^i v^j with i + j ≤ order, in a fixed order."""
    u = np.atleast_1d(np.asarray(u, float))
    v = np.atleast_1d(np.asarray(v, float))
    i, j = term_exponents(order)
    return _powers(u, order)[:, i] * _powers(v, order)[:, j]


def _powers(u: np.ndarray, order: int) -> np.ndarray:
    """(N, order + 1): 1, u, u², … by repeated products (a power ufunc calls pow() per
    element, several times slower for many positions)."""
    out = np.empty((len(u), order + 1))
    out[:, 0] = 1.0
    for k in range(1, order + 1):
        np.multiply(out[:, k - 1], u, out=out[:, k])
    return out


@cache
def term_exponents(order: int) -> tuple[np.ndarray, np.ndarray]:
    """The powers (i, j) of u and v of each term: by total degree, then by j."""
    pairs = [(total - j, j) for total in range(order + 1) for j in range(total + 1)]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


class PixelPsf:
    """PSF model: ``kernel(x, y) = Σ_t term_t(u, v) · basis[t]``, normalized to sum 1.

    ``u, v`` are the position scaled to [-1, 1] over the image, so coefficients are
    well-conditioned whatever the image size. ``step`` is the basis's sampling in image
    pixels: 1, or < 1 for an oversampled model, whose kernels are its basis resampled to
    the image pixels as PsfexPsf resamples its components (``pixel_basis``, once).
    """

    def __init__(self, basis: np.ndarray, order: int, width: int, height: int,
                 step: float = 1.0) -> None:
        self.basis = np.asarray(basis, dtype=np.float64)
        if not 0 < step <= 1:
            raise ValueError(f"PSF model step must be within (0, 1] pixels, got {step}")
        self.step = float(step)
        side = kernel_side(self.basis.shape[-1], self.step)
        self.pixel_basis = (self.basis if self.step == 1.0
                            else resample_images(self.basis, self.step, side, side))
        self.basis_sums = self.pixel_basis.sum(axis=(1, 2))  # each term's share of a kernel
        self.order = order
        self.width = width
        self.height = height
        self._moment_grids: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._splines: list[RectBivariateSpline] | None = None

    @property
    def size(self) -> int:
        """Side of the kernels, image pixels."""
        return self.pixel_basis.shape[-1]

    @property
    def oversampled(self) -> bool:
        return self.step < 1.0

    def _uv(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (2 * np.asarray(x, float) / max(self.width - 1, 1) - 1,
                2 * np.asarray(y, float) / max(self.height - 1, 1) - 1)

    def kernels(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(N, K, K) normalized kernels at many positions."""
        return self._combine(x, y, self.pixel_basis)

    def model_images(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(N, M, M) the model at its own sampling (the kernels when ``step`` is 1), each
        normalized to sum 1."""
        return self._combine(x, y, self.basis)

    def _combine(self, x: np.ndarray, y: np.ndarray, basis: np.ndarray) -> np.ndarray:
        u, v = self._uv(x, y)
        k = np.einsum("nt,tij->nij", poly_terms(u, v, self.order), basis)
        total = k.sum(axis=(1, 2), keepdims=True)
        return k / np.where(total != 0, total, 1)

    def _adaptive_moments(self, x: np.ndarray, y: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Adaptive moments (xx, yy, xy) in pixels² of the model at each position.

        An oversampled model's are measured on its own grid and scaled by ``step²``: on the
        pixel samples of a PSF under FWHM ≈ 1.8 px the adaptive iteration collapses (the
        weight shrinks onto the central pixel), and by 3 px the two agree to 0.1 %.
        """
        if not self.oversampled:
            return _kernel_moments(self.kernels(x, y))
        xx, yy, xy = _kernel_moments(self.model_images(x, y))
        s2 = self.step * self.step
        return xx * s2, yy * s2, xy * s2

    def kernel(self, x: float, y: float) -> np.ndarray:
        return self.kernels(np.array([x]), np.array([y]))[0]

    def _moment_grid(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Grid nodes (gx, gy) spanning the image, n per axis, and the kernel's adaptive
        moments (3, n, n) there: (xx, yy, xy). Computed once per n."""
        if n not in self._moment_grids:
            gx = np.linspace(0, self.width - 1, n)
            gy = np.linspace(0, self.height - 1, n)
            xx, yy = np.meshgrid(gx, gy)
            m = np.array(self._adaptive_moments(xx.ravel(), yy.ravel()))
            self._moment_grids[n] = (gx, gy, m.reshape(3, n, n))
        return self._moment_grids[n]

    def sigmas(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Determinant radius of the adaptive moments (`moments`): the same numbers the
        shape plugins report, cheap for thousands of sources."""
        xx, yy, xy = self.moments(x, y)
        return (xx * yy - xy * xy) ** 0.25

    def moments(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Adaptive moments (xx, yy, xy) of the kernel at each position (pixels²).

        The kernel is a fixed image plus components with polynomial amplitudes, so its
        moments are smooth over the field: bicubic splines through a 13×13 grid match the
        moments computed at each position to ~1e-8 relative, far inside the iteration's own
        1e-5 tolerance, for a fraction of the cost. The outer half pixel of the image takes
        the moments at the edge pixels' centres (the model varies over the image, not over a
        pixel); positions off the image (or not finite) are computed directly.
        """
        x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
        gx, gy, _ = self._moment_grid(MOMENT_GRID)
        inside = ((x >= gx[0] - 0.5) & (x <= gx[-1] + 0.5)
                  & (y >= gy[0] - 0.5) & (y <= gy[-1] + 0.5))
        xi, yi = np.clip(x[inside], gx[0], gx[-1]), np.clip(y[inside], gy[0], gy[-1])
        out = np.empty((3, len(x)))
        for spline, dest in zip(self._moment_splines(), out, strict=True):
            dest[inside] = spline(yi, xi, grid=False)
        if not inside.all():
            out[:, ~inside] = self._adaptive_moments(x[~inside], y[~inside])
        return out[0], out[1], out[2]

    def _moment_splines(self) -> list[RectBivariateSpline]:
        """Bicubic splines of xx, yy, xy through the moment grid, fitted once."""
        if self._splines is None:
            gx, gy, grid = self._moment_grid(MOMENT_GRID)
            self._splines = [RectBivariateSpline(gy, gx, values, kx=3, ky=3, s=0)
                             for values in grid]
        return self._splines

    def sigma(self, x: float, y: float) -> float:
        return float(self.sigmas(np.array([x]), np.array([y]))[0])


def _kernel_moments(kernels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shape plugin's adaptive moments of noise-free kernels, imported on first use:
    the measurement package imports this module, so a module-level import would be circular."""
    from app.engine.measure.plugins.shape import kernel_moments

    return kernel_moments(kernels)


def kernel_sigma(kernels: np.ndarray) -> np.ndarray:
    """Determinant radius (Ixx·Iyy − Ixy²)^¼ of the adaptive moments of each kernel.

    LSST's ``Psf.computeShape().getDeterminantRadius()``; the tutorial multiplies it by 2.355
    to quote a FWHM.
    """
    xx, yy, xy = _kernel_moments(kernels)
    return (xx * yy - xy * xy) ** 0.25


@cache
def _blas() -> ThreadpoolController:
    """The process's BLAS/LAPACK thread pools, found once."""
    return ThreadpoolController()


def one_blas_thread() -> contextlib.AbstractContextManager[object]:
    """A context in which BLAS and LAPACK run on one thread: the PSF's matrices (a few
    hundred stars, a few thousand pixels) are too small to share out, and idle BLAS
    threads spin after every call, costing CPU and gaining no time."""
    return _blas().limit(limits=1, user_api="blas")


def leading_components(a: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` leading right singular vectors of ``a`` as rows, unit length.

    From the eigenvectors of the smaller Gram matrix: a few hundred stars by a few thousand
    pixels is then a small symmetric eigenproblem rather than a full SVD. On one BLAS
    thread: LAPACK's threads make a problem this small several times dearer in CPU and
    no faster.
    """
    with one_blas_thread():
        if a.shape[0] >= a.shape[1]:
            _, v = np.linalg.eigh(a.T @ a)
            return v[:, ::-1][:, :k].T
        vals, u = np.linalg.eigh(a @ a.T)
    u = u[:, ::-1][:, :k]
    s = np.sqrt(np.maximum(vals[::-1][:k], 0.0))
    return ((a.T @ u) / np.where(s > 0, s, 1.0)).T


N_COMPONENTS = 2  # principal components carrying the PSF's variation over the field
STARS_PER_TERM = 10  # fewer stars than this per polynomial term lowers the order


def fit_pixel_psf(
    stamps: np.ndarray, weights: np.ndarray, x: np.ndarray, y: np.ndarray, order: int,
    width: int, height: int,
) -> PixelPsf:
    """Fit normalized, centred star stamps with a mean image plus varying components.

    ``stamps`` (N, K, K) are centred and divided by each star's flux; ``weights`` (N, K, K)
    are inverse variances of those values, 0 where a pixel must not count (masked, or a
    neighbour's). The model is the weighted mean stamp plus ``N_COMPONENTS`` principal
    components of the residuals, each with an amplitude polynomial in position. Fitting
    every pixel's own polynomial would follow the noise of the faint wings and run wild at
    the corners; the components keep only the coherent change of the PSF (size, ellipticity)
    across the field, as PSFEx's basis does.
    """
    used = weights.reshape(len(stamps), -1).sum(axis=1) > 0  # stars rejected carry no weight
    stamps, weights = stamps[used], weights[used]
    x, y = np.asarray(x, float)[used], np.asarray(y, float)[used]
    n, k, _ = stamps.shape
    while order > 0 and n < STARS_PER_TERM * (order + 1) * (order + 2) // 2:
        order -= 1
    s = stamps.reshape(n, -1)
    w = weights.reshape(n, -1)
    wsum = w.sum(axis=0)
    mean = np.where(wsum > 0, (w * s).sum(axis=0) / np.where(wsum > 0, wsum, 1), 0.0)
    terms = (order + 1) * (order + 2) // 2
    basis = np.zeros((terms, k * k))
    basis[0] = mean
    if order > 0:
        resid = np.where(w > 0, s - mean, 0.0)
        star_w = np.sqrt(nanmedian_rows(np.where(w > 0, w, np.nan)))  # per-star S/N scale
        star_w = np.nan_to_num(star_w)
        comps = leading_components(resid * star_w[:, None], N_COMPONENTS)  # (C, P)
        # each star's amplitude on each component, by weighted least squares
        lhs = np.einsum("np,cp,dp->ncd", w, comps, comps)
        rhs = np.einsum("np,cp,np->nc", w, comps, resid)
        tr = np.trace(lhs, axis1=1, axis2=2)
        lhs += np.where(tr > 0, 1e-12 * tr, 1.0)[:, None, None] * np.eye(len(comps))
        amp = np.linalg.solve(lhs, rhs[..., None])[..., 0]  # (N, C)
        u = 2 * np.asarray(x, float) / max(width - 1, 1) - 1
        v = 2 * np.asarray(y, float) / max(height - 1, 1) - 1
        a = poly_terms(u, v, order)
        sw = star_w / max(star_w.max(), 1e-30)
        for c in range(len(comps)):
            keep = np.ones(n, dtype=bool)
            coef = np.zeros(terms)
            for _ in range(3):  # clipped fit: a bad star must not steer the field
                coef, *_ = np.linalg.lstsq(a[keep] * sw[keep, None], amp[keep, c] * sw[keep],
                                           rcond=None)
                r = amp[:, c] - a @ coef
                mad = 1.4826 * np.median(np.abs(r[keep])) + 1e-30
                keep = np.abs(r) < 4 * mad
            basis += coef[:, None] * comps[c][None, :]
    return PixelPsf(basis.reshape(terms, k, k), order, width, height)
