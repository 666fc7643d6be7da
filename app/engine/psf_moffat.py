"""A Moffat PSF, optionally elliptical, pixel-integrated and exactly flux-conserving.

The profile ``I(r) ∝ (1 + |A⁻¹r|²/α²)^(−β)`` (Moffat 1969) is the usual empirical fit to
ground-based stars: β ≈ 2.5 has the broad wings of a long exposure through turbulence, β ≈ 4.5
is close to a Gaussian (β → ∞). Its two-dimensional Fourier transform is, with ν = β − 1 and
``z = 2π α |Aᵀk|``,

    OTF(k) = 2^(1−ν) / Γ(ν) · z^ν K_ν(z),

(``K_ν`` the modified Bessel function of the second kind; 1 at k = 0), so it is rendered in
Fourier space like the Kolmogorov PSF (:mod:`app.engine.psf_fourier`). ``A`` is an area-
preserving shear of distortion ``ellipticity`` along ``angle_deg``.

FWHM convention, as for :class:`~app.engine.psf_kolmogorov.KolmogorovPsf`: the requested FWHM
is 2.3548 × the determinant radius of the adaptive moments of the pixel-integrated PSF (what
LSST's ``computeShape`` reports), measured 4× oversampled so that it is defined down to 1 px
(:meth:`~app.engine.psf_fourier.FourierPsf.moments`); α is calibrated to it numerically, per
PSF, on a table of α covering the image's FWHM range.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.optimize import brentq
from scipy.special import gammaln, kv

from app.engine.psf_fourier import (
    OTF_NEGLIGIBLE,
    SIGMA_TO_FWHM,
    FourierPsf,
    GradientPsf,
    moment_stamp,
    oversampling_for,
    shear_quadratic,
)

BETA_RANGE = (1.5, 10.0)
_CAL_NODES = 12  # α nodes of the calibration table
_TABLE_STEP = 2.0e-4  # z step of the OTF table (linear interpolation of log OTF: ≲ 1e-8)


@lru_cache(maxsize=16)
def _profile_table(beta: float) -> tuple[float, np.ndarray]:
    """``log OTF`` of unit α on a uniform grid of z (step, values), to where it is negligible.

    Evaluating ``K_ν`` for every Fourier cell of every stamp costs ~50× more than
    interpolating this table; the OTF the simulator renders *is* the interpolated one (it
    departs from the exact Moffat transform by < 1e-8 of its peak), so stamps, kernels,
    encircled energies and bounds all describe the same PSF.
    """
    nu = beta - 1.0
    z_end = 10.0
    while _log_otf(z_end, nu) > np.log(OTF_NEGLIGIBLE) - 5.0:
        z_end *= 1.5
    z = np.arange(0.0, z_end + _TABLE_STEP, _TABLE_STEP)
    return _TABLE_STEP, np.concatenate([[0.0], _log_otf(z[1:], nu)])


def _log_otf(z: np.ndarray | float, nu: float) -> np.ndarray | float:
    """``log(2^(1−ν)/Γ(ν) z^ν K_ν(z))`` for z > 0."""
    with np.errstate(under="ignore"):
        return ((1.0 - nu) * np.log(2.0) - gammaln(nu) + nu * np.log(z)
                + np.log(np.maximum(kv(nu, z), 1e-300)))


def moffat_otf(kx: np.ndarray, ky: np.ndarray, alpha: np.ndarray, beta: float,
               quad: tuple[float, float, float]) -> np.ndarray:
    """The Moffat OTF at ``ky[:, None], kx[None, :]`` for each ``alpha``: (n, ky, kx)."""
    a, b, c = quad
    k2 = a * kx[None, :] ** 2 + 2.0 * b * ky[:, None] * kx[None, :] + c * ky[:, None] ** 2
    step, table = _profile_table(float(beta))
    scales, which = np.unique(2.0 * np.pi * np.asarray(alpha, float), return_inverse=True)
    index = np.multiply.outer(scales / step, np.sqrt(k2))
    i = np.minimum(index.astype(np.int64), table.size - 2)
    t = index - i
    # linear interpolation of log OTF (beyond the table it extrapolates, far below 1e-15)
    otf = np.exp(table[i] * (1.0 - t) + table[i + 1] * t)
    return otf[which.reshape(-1)]


class _MoffatOfAlpha(FourierPsf):
    """Moffat stamps whose scale α is given per source as its ``x`` (for calibration)."""

    def __init__(self, beta: float, quad: tuple[float, float, float], q: float) -> None:
        self.beta, self.quad, self.q = beta, quad, q

    def otf(self, kx: np.ndarray, ky: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return moffat_otf(kx, ky, x, self.beta, self.quad)

    def bandwidth(self) -> float:
        return 1.0e9  # set per call by MoffatPsf (see _bandwidth_for)


def _bandwidth_for(alpha_min: float, beta: float, q: float) -> float:
    """Frequency beyond which the Moffat OTF × sinc < OTF_NEGLIGIBLE for α ≥ ``alpha_min``."""
    nu = beta - 1.0

    def excess(k: float) -> float:
        z = 2.0 * np.pi * alpha_min * np.sqrt(q) * k
        return float(_log_otf(z, nu)) - np.log(np.pi * k) - np.log(OTF_NEGLIGIBLE)

    return float(brentq(excess, 1e-3, 1e3))


class MoffatPsf(GradientPsf):
    """Moffat PSF × square pixels: FWHM (adaptive, pixelized) varying linearly over the image.

    Parameters
    ----------
    fwhm
        Adaptive-moment FWHM at the image centre, pixels (≥ 1 px).
    beta
        Moffat index β (1.5–10; ground-based stars 2.5–4.5).
    ellipticity, angle_deg
        Distortion (a² − b²)/(a² + b²) of the profile before pixel integration, and its major
        axis' angle counter-clockwise from +x.
    gradient, width, height, kernel_size
        As :class:`~app.engine.psf_fourier.GradientPsf`.
    """

    def __init__(self, fwhm: float, beta: float, *, ellipticity: float = 0.0,
                 angle_deg: float = 0.0, gradient: float = 0.0, width: int | None = None,
                 height: int | None = None, kernel_size: int = 41) -> None:
        super().__init__(fwhm, gradient=gradient, width=width, height=height,
                         kernel_size=kernel_size)
        if not BETA_RANGE[0] <= beta <= BETA_RANGE[1]:
            raise ValueError(f"Moffat beta must be within {BETA_RANGE}, got {beta}")
        if not 0.0 <= ellipticity < 0.5:
            raise ValueError(f"PSF ellipticity must be within [0, 0.5), got {ellipticity}")
        lo, _ = self.fwhm_extremes()
        if lo < 1.0:
            raise ValueError(f"Moffat FWHM must be ≥ 1 px everywhere, got {lo:.3f}")
        self.beta = float(beta)
        self.ellipticity, self.angle_deg = float(ellipticity), float(angle_deg)
        self.quad = shear_quadratic(self.ellipticity, np.deg2rad(self.angle_deg))
        self.q = float(np.sqrt((1.0 - ellipticity) / (1.0 + ellipticity)))
        self._alpha_of_fwhm = self._calibrate()
        self._band = _bandwidth_for(self.alpha(*self._smallest())[0], self.beta, self.q)

    def __repr__(self) -> str:
        return (f"MoffatPsf(fwhm={self.fwhm0}, beta={self.beta}, ellipticity={self.ellipticity},"
                f" angle_deg={self.angle_deg}, gradient={self.gradient}, width={self.width}, "
                f"height={self.height})")

    def _smallest(self) -> tuple[np.ndarray, np.ndarray]:
        """A position where the FWHM is smallest."""
        if self.gradient == 0.0 or self.width is None or self.height is None:
            return np.zeros(1), np.zeros(1)
        corner = 0.0 if self.gradient > 0 else 1.0
        return (np.array([corner * (self.width - 1)]), np.array([corner * (self.height - 1)]))

    def _calibrate(self) -> CubicSpline:
        """log FWHM (adaptive, pixelized) → log α over the image's FWHM range."""
        lo, hi = self.fwhm_extremes()
        to_alpha = 1.0 / (2.0 * np.sqrt(2.0 ** (1.0 / self.beta) - 1.0))  # half-max → α
        alpha = np.geomspace(0.6 * lo * to_alpha, 1.3 * hi * to_alpha, _CAL_NODES)
        nodes = _MoffatOfAlpha(self.beta, self.quad, self.q)
        band = _bandwidth_for(float(alpha[0]), self.beta, self.q)
        nodes.bandwidth = lambda: band  # type: ignore[method-assign]
        ixx, iyy, ixy = nodes.moments(alpha, alpha, moment_stamp(hi), oversampling_for(lo))
        fwhm = SIGMA_TO_FWHM * (ixx * iyy - ixy**2) ** 0.25
        if not (fwhm[0] < lo and fwhm[-1] > hi and np.all(np.diff(fwhm) > 0)):
            raise ValueError(f"cannot calibrate a Moffat β={self.beta} to FWHM {lo:.2f}–{hi:.2f}")
        return CubicSpline(np.log(fwhm), np.log(alpha))

    def alpha(self, x: float | np.ndarray, y: float | np.ndarray) -> np.ndarray:
        """Moffat scale α (pixels, along the geometric-mean axis) at (x, y)."""
        return np.exp(self._alpha_of_fwhm(np.log(np.atleast_1d(self.fwhm(x, y)))))

    def otf(self, kx: np.ndarray, ky: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return moffat_otf(kx, ky, self.alpha(x, y), self.beta, self.quad)

    def bandwidth(self) -> float:
        return self._band

    def wing(self, r: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``(β−1)/(π α²) (1 + r²/a²)^(−β)``, a = α/√q the major axis: an upper estimate."""
        alpha = self.alpha(x, y)
        a2 = alpha**2 / self.q
        return (self.beta - 1.0) / (np.pi * alpha**2) * (1.0 + np.asarray(r) ** 2 / a2) ** (
            -self.beta)
