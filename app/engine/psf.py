"""PSF models: evaluate the point-spread function anywhere on an exposure.

Every model answers the questions the tutorial asks of ``calexp.getPsf()``: a normalized
image of the PSF at a point (centred, or shifted to a sub-pixel position as LSST's
``computeImage`` does), its second-moment size (``computeShape(...).getDeterminantRadius()``)
and from that the FWHM.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import numpy as np
from scipy.special import erf

SIGMA_TO_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))


@runtime_checkable
class PsfModel(Protocol):
    """What the engine needs of a PSF."""

    def kernel(self, x: float, y: float) -> np.ndarray:
        """Odd-sized stamp, normalized to sum 1, centred on its middle pixel, at (x, y)."""
        ...

    def sigma(self, x: float, y: float) -> float:
        """Determinant radius of the PSF's second moments at (x, y), in pixels."""
        ...


def psf_fwhm(psf: PsfModel, x: float, y: float) -> float:
    """FWHM in pixels from the determinant radius, as the tutorial computes it."""
    return float(psf.sigma(x, y) * SIGMA_TO_FWHM)


def psf_sigmas(psf: PsfModel, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Determinant radius at many positions, batched when the model can (``sigmas``)."""
    batched = getattr(psf, "sigmas", None)
    if batched is not None:
        return np.asarray(batched(x, y), float)
    return np.array([psf.sigma(float(a), float(b)) for a, b in zip(x, y, strict=True)])


def lanczos_weights(frac: np.ndarray, order: int = 5) -> np.ndarray:
    """Lanczos interpolation weights for fractional shifts ``frac`` (any shape, |frac| ≤ 1).

    Returns an array of shape ``frac.shape + (2*order,)``: the weights of the pixels at
    offsets ``-order+1 .. order`` from ``floor`` of the sampled position, normalized to sum 1.
    """
    frac = np.asarray(frac, dtype=float)
    offsets = np.arange(-order + 1, order + 1, dtype=float)
    t = frac[..., None] - offsets
    w = np.sinc(t) * np.sinc(t / order)
    w[np.abs(t) >= order] = 0.0
    return w / w.sum(axis=-1, keepdims=True)


def shift_stamp(stamp: np.ndarray, dx: float, dy: float, order: int = 5) -> np.ndarray:
    """Shift a stamp by (dx, dy) pixels with separable Lanczos interpolation.

    The result ``out`` satisfies ``out(x, y) = stamp(x - dx, y - dy)``; pixels whose source
    falls off the stamp read zero.
    """
    out = stamp.astype(float)
    for axis, shift in ((1, dx), (0, dy)):
        whole = int(np.floor(-shift))
        frac = -shift - whole
        weights = lanczos_weights(np.array(frac), order)
        n = out.shape[axis]
        padded = np.pad(out, [(order + abs(whole) + 1,) * 2 if a == axis else (0, 0)
                              for a in range(2)])
        base = order + abs(whole) + 1 + whole
        acc = np.zeros_like(out)
        for k, off in enumerate(range(-order + 1, order + 1)):
            idx = np.arange(n) + base + off
            acc += weights[k] * np.take(padded, idx, axis=axis)
        out = acc
    return out


def moments_sigma(stamp: np.ndarray) -> float:
    """Determinant radius (Ixx·Iyy − Ixy²)^¼ of a stamp's unweighted second moments."""
    ny, nx = stamp.shape
    y, x = np.mgrid[:ny, :nx].astype(float)
    total = stamp.sum()
    xc = (stamp * x).sum() / total
    yc = (stamp * y).sum() / total
    ixx = (stamp * (x - xc) ** 2).sum() / total
    iyy = (stamp * (y - yc) ** 2).sum() / total
    ixy = (stamp * (x - xc) * (y - yc)).sum() / total
    return float((ixx * iyy - ixy**2) ** 0.25)


def pixel_gaussian(size: int, sigma: float, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """A pixel-integrated circular Gaussian stamp of odd ``size``, centre offset (dx, dy).

    Normalized to unit total flux over the infinite plane, so a stamp too small for its
    sigma sums to less than 1.
    """
    half = size // 2
    edges = np.arange(-half - 0.5, half + 1.0)
    s = sigma * np.sqrt(2.0)
    px = np.diff(0.5 * erf((edges - dx) / s))
    py = np.diff(0.5 * erf((edges - dy) / s))
    return np.outer(py, px)


class GaussianPsf:
    """A circular Gaussian PSF, the same everywhere.

    LSST installs one of these (InstallGaussianPsfTask) as the first guess before it
    measures the real PSF; detection smooths with a Gaussian of the PSF's sigma.

    ``sampling`` says how the kernel image is made: ``"integrated"`` (skyphot's own: the
    Gaussian integrated over each pixel, normalized over the infinite plane) or ``"point"``
    (afw's ``GaussianPsf.doComputeKernelImage``: sampled at pixel centres and normalized to
    sum 1 over the stamp), so a PSF read from an LSST archive gives the image afw gives.
    Either way ``sigma`` is the Gaussian's, as afw's ``computeShape`` reports it, not the
    moments of the pixelized stamp.
    """

    def __init__(self, sigma: float, size: int | None = None,
                 sampling: Literal["integrated", "point"] = "integrated") -> None:
        if not sigma > 0:
            raise ValueError(f"PSF sigma must be positive, got {sigma}")
        if sampling not in ("integrated", "point"):
            raise ValueError(f"PSF sampling must be 'integrated' or 'point', got {sampling!r}")
        self._sigma = float(sigma)
        self.size = size or 2 * int(np.ceil(5 * sigma)) + 1
        self.sampling = sampling

    def kernel(self, x: float, y: float) -> np.ndarray:
        if self.sampling == "point":
            offsets = np.arange(self.size) - self.size // 2
            row = np.exp(-0.5 * (offsets / self._sigma) ** 2)
            stamp = np.outer(row, row)
            return stamp / stamp.sum()
        return pixel_gaussian(self.size, self._sigma)

    def sigma(self, x: float, y: float) -> float:
        return self._sigma
