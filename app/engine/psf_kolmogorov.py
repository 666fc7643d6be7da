"""A Kolmogorov atmospheric PSF, pixel-integrated and exactly flux-conserving.

The optical transfer function of long-exposure seeing through Kolmogorov turbulence is
``OTF(k) = exp(-3.44 (k / k0)^(5/3))`` (``k`` in cycles per pixel, ``k0 = r0 / λ`` in the same
units). Multiplying by ``sinc(kx) sinc(ky)`` integrates over square pixels, and a phase ramp
puts the source at any sub-pixel position. Stamps are rendered by inverse FFT of the *folded*
spectrum (the first alias on each axis is added), so the samples are exactly those of the
pixel-integrated profile, periodically wrapped on the stamp. Since ``OTF(0) = 1`` a stamp sums
to exactly the flux asked for.

FWHM convention. The second moments of a Kolmogorov profile diverge (its wings fall as
``r^(-11/3)``), so an unweighted second-moment size depends on the stamp it is measured on.
LSST's ``Psf.computeShape`` measures *adaptive* (Gaussian-weighted, iterated) moments of the
pixelized PSF image, and the DP0.2 tutorial quotes ``FWHM = 2.3548 × determinant radius`` of
that shape. Here the requested ``fwhm`` is that number: ``k0`` is calibrated (numerically, once
per process) so that the pixelized PSF's adaptive-moment FWHM equals it. The half-maximum width
of the pixelized profile and the FWHM of the atmospheric profile alone are available too
(:meth:`KolmogorovPsf.halfmax_fwhm`, :meth:`KolmogorovPsf.atmospheric_fwhm`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.integrate import quad
from scipy.interpolate import CubicSpline
from scipy.optimize import brentq
from scipy.special import j0

from app.engine.psf_fourier import (
    OTF_NEGLIGIBLE,
    SIGMA_TO_FWHM,
    GalaxyShape,
    GradientPsf,
    adaptive_moments,
    adaptive_sigma,
    disk_overlap,
    exponential_denominator,
    stamp_origin,
)

__all__ = [
    "ATMOSPHERIC_FWHM_K0", "SIGMA_TO_FWHM", "GalaxyShape", "KolmogorovPsf", "adaptive_moments",
    "adaptive_sigma", "atmospheric_fwhm_k0", "disk_overlap", "fwhm_range", "k0_for_fwhm",
    "psf_stamp_size", "render_batch", "stamp_origin",
]

KOLMOGOROV_COEFF = 3.44
FIVE_THIRDS = 5.0 / 3.0
MAX_BATCH_ELEMENTS = 2_000_000  # complex Fourier cells per rendering chunk (~32 MB)
_ALIAS_NEGLIGIBLE = 1e-14  # skip the alias terms when the spectrum at Nyquist is below this
_CAL_RANGE = (1.8, 20.0)  # atmospheric FWHM range (pixels) of the calibration table


ATMOSPHERIC_FWHM_K0 = 0.9755336133829007  # atmospheric_fwhm_k0(), precomputed


def atmospheric_fwhm_k0(compute: bool = False) -> float:
    """FWHM × k0 of the (unpixelized) Kolmogorov profile, dimensionless (≈ 0.9755).

    The classical ``FWHM = 0.976 λ / r0``. With ``compute`` it is recomputed by a Hankel
    transform and root finding (0.3 s); otherwise the stored value of that computation.
    """
    if not compute:
        return ATMOSPHERIC_FWHM_K0

    def profile(r: float) -> float:
        return quad(
            lambda k: np.exp(-KOLMOGOROV_COEFF * k**FIVE_THIRDS) * j0(2 * np.pi * k * r) * k,
            0.0,
            8.0,
            limit=400,
            epsabs=1e-14,
        )[0]

    peak = profile(0.0)
    return 2.0 * brentq(lambda r: profile(r) - 0.5 * peak, 0.1, 2.0, xtol=1e-13)


def render_batch(
    size: int,
    k0: np.ndarray,
    px: np.ndarray,
    py: np.ndarray,
    flux: np.ndarray,
    galaxy: GalaxyShape | None = None,
) -> np.ndarray:
    """Render ``n`` sources on ``size × size`` stamps in one batched inverse FFT.

    The spectrum is folded with the first alias on each axis so the samples are those of the
    pixel-integrated profile, not a band-limited approximation.

    Parameters
    ----------
    size
        Stamp side in pixels (any; multiples of 32 are fastest).
    k0
        Per-source Kolmogorov cutoff (cycles/pixel), see :func:`k0_for_fwhm`.
    px, py
        Per-source position in the stamp's array coordinates (pixel centres at integers).
    flux
        Per-source total flux (counts); each stamp sums to it exactly, the light that falls
        beyond the stamp wrapping around onto it.
    galaxy
        If given, each source is an exponential disk of that shape convolved with the PSF.

    Returns
    -------
    numpy.ndarray
        ``(n, size, size)`` float64 stamps.
    """
    k0 = np.atleast_1d(np.asarray(k0, float))
    px, py = np.atleast_1d(np.asarray(px, float)), np.atleast_1d(np.asarray(py, float))
    flux = np.atleast_1d(np.asarray(flux, float))
    n = k0.size
    out = np.empty((n, size, size))
    if n == 0:
        return out
    cells = size * (size // 2 + 1)
    step = max(1, MAX_BATCH_ELEMENTS // cells)
    for start in range(0, n, step):
        sl = slice(start, start + step)
        gal = None
        if galaxy is not None:
            gal = GalaxyShape(galaxy.scale_px[sl], galaxy.q[sl], galaxy.pa_rad[sl])
        spec = _folded_spectrum(size, k0[sl], px[sl], py[sl], gal)
        spec *= flux[sl, None, None]
        out[sl] = np.fft.irfft2(spec, s=(size, size), axes=(1, 2))
    return out


def _folded_spectrum(
    size: int, k0: np.ndarray, px: np.ndarray, py: np.ndarray, galaxy: GalaxyShape | None
) -> np.ndarray:
    """Half-plane spectrum (n, size, size//2+1) of unit-flux sources, aliases folded in."""
    kx = np.fft.rfftfreq(size)
    ky = np.fft.fftfreq(size)
    s = KOLMOGOROV_COEFF * k0 ** (-FIVE_THIRDS)
    nyquist = np.exp(-s.min() * 0.5**FIVE_THIRDS) * np.sinc(0.5)
    x_terms = [kx] if nyquist < _ALIAS_NEGLIGIBLE else [kx, kx - 1.0]
    ky_alias = ky - np.where(ky >= 0, 1.0, -1.0)
    y_terms = [ky] if nyquist < _ALIAS_NEGLIGIBLE else [ky, ky_alias]
    coeffs = None if galaxy is None else galaxy.quadratic()
    total = np.zeros((k0.size, size, kx.size), dtype=complex)
    for kxt in x_terms:
        phase_x = np.exp(-2j * np.pi * np.multiply.outer(px, kxt))  # (n, M)
        for kyt in y_terms:
            phase_y = np.exp(-2j * np.pi * np.multiply.outer(py, kyt))  # (n, N)
            k2 = kyt[:, None] ** 2 + kxt[None, :] ** 2
            amp = np.exp(-np.multiply.outer(s, k2 ** (FIVE_THIRDS / 2)))
            amp *= np.sinc(kyt)[:, None] * np.sinc(kxt)[None, :]
            if coeffs is not None:
                amp /= exponential_denominator(coeffs, kxt, kyt)
            total += amp * phase_y[:, :, None] * phase_x[:, None, :]
    return total


@lru_cache(maxsize=1)
def _calibration() -> tuple[CubicSpline, CubicSpline, tuple[float, float]]:
    """Splines, in log space, of atmospheric FWHM vs adaptive-moment FWHM (pixelized PSF).

    Returns ``(atm_of_adaptive, halfmax_of_atm, (lo, hi))`` where (lo, hi) is the
    adaptive-FWHM range covered. Computed once per process (≈0.5 s).
    """
    c = atmospheric_fwhm_k0()
    atm = np.geomspace(*_CAL_RANGE, 48)
    adaptive, halfmax = [], []
    for f in atm:
        size = int(max(64, 16 * np.ceil(f)))
        size += size % 2
        stamp = render_batch(size, np.array([c / f]), np.array([size // 2]),
                             np.array([size // 2]), np.array([1.0]))[0]
        adaptive.append(SIGMA_TO_FWHM * adaptive_sigma(stamp))
        halfmax.append(_halfmax_width(c / f))
    la, lat, lh = np.log(adaptive), np.log(atm), np.log(halfmax)
    return CubicSpline(la, lat), CubicSpline(lat, lh), (float(adaptive[0]), float(adaptive[-1]))


def _halfmax_width(k0: float) -> float:
    """Full width at half maximum (along x) of the pixel-integrated Kolmogorov profile."""
    kmax = 3.6 * k0
    dk = k0 / 60.0
    k = np.arange(-kmax, kmax + dk / 2, dk)
    otf = np.exp(-KOLMOGOROV_COEFF * (np.hypot(k[:, None], k[None, :]) / k0) ** FIVE_THIRDS)
    g = (otf * np.sinc(k)[:, None]).sum(axis=0) * dk * np.sinc(k)  # integrate over ky

    def prof(x: float) -> float:
        return float((g * np.cos(2 * np.pi * k * x)).sum() * dk)

    peak = prof(0.0)
    return 2.0 * brentq(lambda x: prof(x) - 0.5 * peak, 1e-3, 5.0 / k0, xtol=1e-12)


def fwhm_range() -> tuple[float, float]:
    """Range of (adaptive-moment) FWHM in pixels that :class:`KolmogorovPsf` supports."""
    lo, hi = _calibration()[2]
    return lo * 1.001, hi * 0.999


def k0_for_fwhm(fwhm: np.ndarray) -> np.ndarray:
    """Kolmogorov ``k0`` (cycles/pixel) giving a pixelized PSF of adaptive FWHM ``fwhm`` px."""
    atm_of_adaptive = _calibration()[0]
    f = np.asarray(fwhm, float)
    lo, hi = fwhm_range()
    if np.any((f < lo) | (f > hi)):
        raise ValueError(f"PSF FWHM must be within {lo:.3f}..{hi:.2f} px, got {f}")
    return atmospheric_fwhm_k0() / np.exp(atm_of_adaptive(np.log(f)))


class KolmogorovPsf(GradientPsf):
    """The simulator's default PSF: Kolmogorov seeing × square pixels, FWHM varying linearly.

    ``fwhm`` (pixels) is the FWHM at the image centre in LSST's convention (2.3548 × the
    determinant radius of the adaptive moments of the pixelized PSF, to which ``k0`` is
    calibrated: ``adaptive_sigma(self.kernel(x, y)) = self.sigma(x, y)`` to ~1e-6); across
    the image it varies as :class:`~app.engine.psf_fourier.GradientPsf` says. Implements
    :class:`app.engine.psf.PsfModel`.

    Parameters
    ----------
    fwhm
        FWHM at the image centre, pixels (supported range: :func:`fwhm_range`, ≈ 2–21 px).
    gradient
        Fractional FWHM change from the centre to the far corner.
    width, height
        Image size in pixels (needed when ``gradient`` is not 0).
    kernel_size
        Side (odd) of the stamps :meth:`kernel` returns by default.
    """

    def __init__(self, fwhm: float, *, gradient: float = 0.0, width: int | None = None,
                 height: int | None = None, kernel_size: int = 41) -> None:
        super().__init__(fwhm, gradient=gradient, width=width, height=height,
                         kernel_size=kernel_size)
        k0_for_fwhm(np.array(self.fwhm_extremes()))

    def __repr__(self) -> str:
        return (f"KolmogorovPsf(fwhm={self.fwhm0}, gradient={self.gradient}, "
                f"width={self.width}, height={self.height}, kernel_size={self.kernel_size})")

    def otf(self, kx: np.ndarray, ky: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``exp(−3.44 (k/k0)^(5/3))`` with the local ``k0``."""
        s = KOLMOGOROV_COEFF * self.k0(x, y) ** (-FIVE_THIRDS)
        k2 = ky[:, None] ** 2 + kx[None, :] ** 2
        return np.exp(-np.multiply.outer(s, k2 ** (FIVE_THIRDS / 2)))

    def bandwidth(self) -> float:
        k0 = float(k0_for_fwhm(np.array([self.fwhm_extremes()[0]]))[0])
        return k0 * (np.log(1.0 / OTF_NEGLIGIBLE) / KOLMOGOROV_COEFF) ** 0.6

    def wing(self, r: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """≈ 0.0244 fwhm^(5/3) r^(−11/3): the Kolmogorov wing, fraction of the flux per pixel."""
        return 0.0244 * np.asarray(self.fwhm(x, y)) ** FIVE_THIRDS * np.asarray(r) ** (-11 / 3)

    def k0(self, x: float | np.ndarray, y: float | np.ndarray) -> np.ndarray:
        """Kolmogorov cutoff frequency (cycles/pixel) at (x, y)."""
        return k0_for_fwhm(np.atleast_1d(self.fwhm(x, y)))

    def atmospheric_fwhm(self, x: float, y: float) -> float:
        """FWHM (pixels) of the Kolmogorov profile before pixel integration."""
        return float(atmospheric_fwhm_k0() / self.k0(x, y)[0])

    def halfmax_fwhm(self, x: float, y: float) -> float:
        """Full width at half maximum (pixels, along x) of the pixel-integrated profile."""
        halfmax_of_atm = _calibration()[1]
        return float(np.exp(halfmax_of_atm(np.log(self.atmospheric_fwhm(x, y)))))

    def stamp_size(self, flux: float, fwhm: float, tolerance: float = 0.5) -> int:
        """Smallest stamp (≥ 64, a multiple of 32) whose edge surface brightness < tolerance.

        The Kolmogorov wing, ≈ 0.0244 fwhm^(5/3) r^(-11/3) of the flux per pixel, times
        ``flux`` (counts) must fall below ``tolerance`` (counts per pixel) at the stamp edge,
        so that the light wrapped around by the FFT is invisible in the noise.
        """
        return psf_stamp_size(np.array([flux]), np.array([fwhm]), tolerance)[0]

    def point_stamp_sizes(self, flux: np.ndarray, x: np.ndarray, y: np.ndarray,
                          tolerance: float) -> np.ndarray:
        return psf_stamp_size(flux, np.asarray(self.fwhm(x, y), float), tolerance)

    def stamps(self, size: int, x: np.ndarray, y: np.ndarray, px: np.ndarray, py: np.ndarray,
               flux: np.ndarray, galaxy: GalaxyShape | None = None) -> np.ndarray:
        """As :meth:`FourierPsf.stamps`, by :func:`render_batch` (the simulator's original
        renderer, two alias terms per axis, so a configuration's pixels never change)."""
        return render_batch(size, self.k0(np.atleast_1d(x), np.atleast_1d(y)), px, py, flux,
                            galaxy)


def psf_stamp_size(flux: np.ndarray, fwhm: np.ndarray, tolerance: float) -> np.ndarray:
    """Per-source stamp sizes (multiples of 32, ≥ 64, ≤ 1024) for point sources.

    Chosen so that ``flux × wing(r = size/2) < tolerance`` counts per pixel, with the
    Kolmogorov wing ``≈ 0.0244 fwhm^(5/3) r^(-11/3)`` (fraction of the flux per pixel).
    """
    flux = np.maximum(np.asarray(flux, float), 0.0)
    r = (np.maximum(flux, 1e-30) * 0.0244 * np.asarray(fwhm, float) ** FIVE_THIRDS
         / tolerance) ** (3.0 / 11.0)
    size = 32 * np.ceil(2.0 * r / 32.0)
    return np.clip(size, 64, 1024).astype(int)
