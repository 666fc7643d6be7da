"""An aberrated PSF: telescope optics convolved with the atmosphere, changing shape over the field.

The optics are an annular pupil (central obscuration, as GalSim's ``OpticalPSF``) with Zernike
phase aberrations in waves rms (Noll's indices and normalization: Z4 defocus, Z5/Z6 astigmatism,
Z7/Z8 coma). Their OTF is the pupil's autocorrelation, computed by FFT on a grid of lags and
interpolated (bicubic) to any frequency; the cutoff frequency ``D/λ`` is given in cycles per
pixel. The atmosphere is a Kolmogorov OTF, sheared into an elliptical core (wind shake, tracking)
by an area-preserving distortion. The PSF's OTF is their product (the PSFs convolved), then the
pixel and the source's position are applied as for every :class:`~app.engine.psf_fourier.
FourierPsf`.

Across the field the aberrations change as a telescope's do: defocus tilts with x (a tilted
focal plane), astigmatism grows as r² with its axis at twice the field angle, coma grows as r
pointing radially. So the PSF's shape — ellipticity, its direction, the coma's asymmetry — and
not only its size changes over the image. The aberrations are evaluated on a grid of nodes and
the optical OTF interpolated bilinearly between them: the true PSF at any position is that
weighted sum of the nodes' PSFs (a PSF itself: positive weights summing to 1), which is what
every method here evaluates, exactly. Each node's PSF is shifted so that its centroid (first
moment: the pupil's mean wavefront tilt, from the OTF's slope at k = 0) lies at the source's
position, so a source's true position is the centroid of its light, whatever its coma.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy.interpolate import RectBivariateSpline
from scipy.optimize import brentq

from app.engine.psf_fourier import (
    SIGMA_TO_FWHM,
    FourierPsf,
    moment_stamp,
    oversampling_for,
    shear_quadratic,
)
from app.engine.psf_kolmogorov import ATMOSPHERIC_FWHM_K0, FIVE_THIRDS, KOLMOGOROV_COEFF

PUPIL_SAMPLES = 64  # samples across the pupil diameter (≤ 0.3 waves of phase per sample at
# 0.5 waves rms of coma)
PUPIL_GRID = 4 * PUPIL_SAMPLES  # FFT grid of the pupil (≥ 2× for an unwrapped autocorrelation)
_CACHE_MAX_SIZE = 256  # stamps up to this side keep their nodes' interpolated OTFs
_NOLL = ("defocus", "astig1", "astig2", "coma1", "coma2")  # Z4 … Z8


@dataclass(frozen=True, kw_only=True)
class Optics:
    """A telescope's pupil and aberrations (waves rms, Noll normalization).

    ``zernikes`` are Z4–Z8 at the field centre; the field terms are their change at the edge
    (defocus, along +x) or at the corner (astigmatism ∝ r², coma ∝ r; r = 1 at the corners).
    The defaults, with a 3.75 px FWHM, give e ≈ 0.04 at the centre and FWHM +7 … +19 %,
    e 0.01 … 0.19 in directions that differ from corner to corner.
    """

    cutoff: float = 1.0  # D/λ in cycles per pixel (λ/D = 1 px: a 0.8 m telescope at 0.2″/px)
    obscuration: float = 0.35  # central obscuration, linear fraction of the diameter
    zernikes: tuple[float, float, float, float, float] = (0.03, 0.02, -0.01, 0.03, 0.01)
    field_defocus: float = 0.05
    field_astigmatism: float = 0.08
    field_coma: float = 0.08
    nodes: tuple[int, int] = (5, 5)  # grid of nodes over the image (x, y)

    def __post_init__(self) -> None:
        if not 0.1 <= self.cutoff <= 4.0:
            raise ValueError(f"optics cutoff D/λ must be within 0.1–4 cycles/pixel, "
                             f"got {self.cutoff}")
        if not 0.0 <= self.obscuration < 0.8:
            raise ValueError(f"obscuration must be within [0, 0.8), got {self.obscuration}")
        if len(self.zernikes) != len(_NOLL):
            raise ValueError(f"zernikes are {', '.join(_NOLL)} (Z4–Z8): give 5 values")
        if any(abs(z) > 1.0 for z in (*self.zernikes, self.field_defocus,
                                      self.field_astigmatism, self.field_coma)):
            raise ValueError("aberrations must stay within ±1 wave rms (the pupil sampling)")
        if min(self.nodes) < 2:
            raise ValueError("the node grid needs at least 2 × 2 nodes")

    def zernikes_at(self, fx: float, fy: float) -> np.ndarray:
        """Z4–Z8 (waves rms) at field position (fx, fy) ∈ [−1, 1]² (the image's edges)."""
        r = np.hypot(fx, fy) / np.sqrt(2.0)
        theta = np.arctan2(fy, fx)
        z = np.array(self.zernikes, float)
        z[0] += self.field_defocus * fx
        z[1] += self.field_astigmatism * r**2 * np.sin(2 * theta)
        z[2] += self.field_astigmatism * r**2 * np.cos(2 * theta)
        z[3] += self.field_coma * r * np.sin(theta)
        z[4] += self.field_coma * r * np.cos(theta)
        return z


def pupil_otf(optics: Optics, zernikes: np.ndarray) -> np.ndarray:
    """The optical OTF on the lag grid: ``(2L + 1)²`` complex, lag 0 in the centre (= 1),
    lag ``j`` ↔ frequency ``j · cutoff / PUPIL_SAMPLES`` cycles/pixel, ``L = PUPIL_SAMPLES + 4``.
    """
    n = PUPIL_GRID
    u = (np.arange(n) - n / 2 + 0.5) * (2.0 / PUPIL_SAMPLES)
    ux, uy = np.meshgrid(u, u)
    rho, phi = np.hypot(ux, uy), np.arctan2(uy, ux)
    inside = (rho <= 1.0) & (rho >= optics.obscuration)
    z4, z5, z6, z7, z8 = zernikes
    wave = (z4 * np.sqrt(3) * (2 * rho**2 - 1)
            + np.sqrt(6) * rho**2 * (z5 * np.sin(2 * phi) + z6 * np.cos(2 * phi))
            + np.sqrt(8) * (3 * rho**3 - 2 * rho) * (z7 * np.sin(phi) + z8 * np.cos(phi)))
    pupil = np.where(inside, np.exp(2j * np.pi * wave), 0.0)
    psf = np.abs(np.fft.fft2(pupil)) ** 2
    otf = np.fft.fftshift(np.fft.fft2(psf))
    c, half = n // 2, PUPIL_SAMPLES + 4
    otf = otf[c - half : c + half + 1, c - half : c + half + 1]
    return otf / otf[half, half]


@dataclass
class _Node:
    """One node's optical OTF as two bicubic splines (real, imaginary) over frequency,
    normalized to 1 at k = 0 and shifted so that the PSF's centroid is at its origin."""

    real: RectBivariateSpline
    imag: RectBivariateSpline
    norm: complex = field(default=1.0 + 0.0j)
    centroid: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        zero = np.zeros(1)
        self.norm = complex(self.real(0.0, 0.0)[0, 0] + 1j * self.imag(0.0, 0.0)[0, 0])
        # OTF ≈ 1 − 2πi k·c near 0 for a PSF of centroid c (the pupil's mean wavefront tilt)
        dkx = float(self.imag(zero, zero, dy=1)[0, 0] / self.norm.real)
        dky = float(self.imag(zero, zero, dx=1)[0, 0] / self.norm.real)
        self.centroid = (-dkx / (2 * np.pi), -dky / (2 * np.pi))

    def at(self, kx: np.ndarray, ky: np.ndarray) -> np.ndarray:
        """The OTF on the grid ``ky[:, None], kx[None, :]`` (unsorted axes allowed)."""
        ox, oy = np.argsort(kx), np.argsort(ky)
        ix, iy = np.empty_like(ox), np.empty_like(oy)
        ix[ox], iy[oy] = np.arange(ox.size), np.arange(oy.size)
        re = self.real(ky[oy], kx[ox], grid=True)[np.ix_(iy, ix)]
        im = self.imag(ky[oy], kx[ox], grid=True)[np.ix_(iy, ix)]
        cx, cy = self.centroid
        recentre = np.exp(2j * np.pi * (ky[:, None] * cy + kx[None, :] * cx))
        return (re + 1j * im) / self.norm * recentre


class AberratedPsf(FourierPsf):
    """Optics × elliptical Kolmogorov atmosphere × square pixels; shape changing over the field.

    Parameters
    ----------
    fwhm
        Adaptive-moment FWHM (pixels; pixel-integrated, 4× oversampled) at the image centre;
        the atmosphere's width is solved for so that the whole PSF has it.
    width, height
        Image size in pixels.
    optics
        Pupil and aberrations.
    ellipticity, angle_deg
        Distortion of the atmospheric core and its major axis' angle from +x.
    """

    def __init__(self, fwhm: float, *, width: int, height: int, optics: Optics | None = None,
                 ellipticity: float = 0.0, angle_deg: float = 0.0,
                 kernel_size: int = 41) -> None:
        if not fwhm > 0:
            raise ValueError(f"fwhm must be positive, got {fwhm}")
        if not 0.0 <= ellipticity < 0.5:
            raise ValueError(f"PSF ellipticity must be within [0, 0.5), got {ellipticity}")
        self.fwhm0 = float(fwhm)
        self.width, self.height = int(width), int(height)
        self.optics = optics or Optics()
        self.ellipticity, self.angle_deg = float(ellipticity), float(angle_deg)
        self.kernel_size = int(kernel_size)
        self.quad = shear_quadratic(self.ellipticity, np.deg2rad(self.angle_deg))
        nx, ny = self.optics.nodes
        self.node_x = np.linspace(0.0, self.width - 1.0, nx)
        self.node_y = np.linspace(0.0, self.height - 1.0, ny)
        self._nodes = [self._make_node(x, y) for y in self.node_y for x in self.node_x]
        self._cache: dict[tuple[int, int, int], dict[int, np.ndarray]] = {}
        self._ee: dict[float, np.ndarray] = {}
        self.k0 = self._solve_atmosphere()
        self._cache.clear()

    def __repr__(self) -> str:
        return (f"AberratedPsf(fwhm={self.fwhm0}, width={self.width}, height={self.height}, "
                f"optics={self.optics}, ellipticity={self.ellipticity}, "
                f"angle_deg={self.angle_deg})")

    def _make_node(self, x: float, y: float) -> _Node:
        fx = 2.0 * x / max(self.width - 1, 1) - 1.0
        fy = 2.0 * y / max(self.height - 1, 1) - 1.0
        grid = pupil_otf(self.optics, self.optics.zernikes_at(fx, fy))
        half = grid.shape[0] // 2
        k = (np.arange(grid.shape[0]) - half) * (self.optics.cutoff / PUPIL_SAMPLES)
        return _Node(RectBivariateSpline(k, k, grid.real, s=0),
                     RectBivariateSpline(k, k, grid.imag, s=0))

    def _solve_atmosphere(self) -> float:
        """The Kolmogorov k0 giving the requested FWHM at the image centre."""
        cx, cy = np.array([(self.width - 1) / 2.0]), np.array([(self.height - 1) / 2.0])

        def excess(atm_fwhm: float) -> float:
            self.k0 = ATMOSPHERIC_FWHM_K0 / atm_fwhm
            self._cache.clear()  # it holds the atmosphere's OTF
            ixx, iyy, ixy = self.moments(cx, cy)
            return float(SIGMA_TO_FWHM * (ixx * iyy - ixy**2)[0] ** 0.25) - self.fwhm0

        lo, hi = 0.3 * self.fwhm0, 1.5 * self.fwhm0
        if excess(lo) >= 0:
            raise ValueError(
                f"the optics alone give a FWHM above {self.fwhm0:.2f} px at the centre; ask for "
                "a larger fwhm or smaller aberrations (or a larger optics cutoff)")
        return ATMOSPHERIC_FWHM_K0 / brentq(excess, lo, hi, xtol=1e-5 * self.fwhm0)

    def moments(self, x: np.ndarray, y: np.ndarray, size: int | None = None,
                factor: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`FourierPsf.moments`, on one stamp size for every position (the
        diffraction wings make the measurement depend on it at 1e-4)."""
        return super().moments(x, y, size or self._moment_size(), factor or self._factor())

    def _factor(self) -> int:
        return oversampling_for(self.fwhm0)

    def _moment_size(self) -> int:
        return moment_stamp(1.3 * self.fwhm0)  # off-axis PSFs are larger

    # --- the OTF ---------------------------------------------------------------------------

    def weights(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Bilinear weights ``(n, n_nodes)`` of the nodes at positions (clamped to the image)."""
        x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
        nx, ny = self.node_x.size, self.node_y.size

        def axis(v: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            t = np.clip((v - nodes[0]) / (nodes[1] - nodes[0]), 0.0, nodes.size - 1.0)
            i = np.minimum(t.astype(np.int64), nodes.size - 2)
            return i, t - i

        ix, tx = axis(x, self.node_x)
        iy, ty = axis(y, self.node_y)
        w = np.zeros((x.size, nx * ny))
        rows = np.arange(x.size)
        for dy, wy in ((0, 1 - ty), (1, ty)):
            for dx, wx in ((0, 1 - tx), (1, tx)):
                np.add.at(w, (rows, (iy + dy) * nx + ix + dx), wy * wx)
        return w

    def _node_otfs(self, kx: np.ndarray, ky: np.ndarray, used: np.ndarray) -> np.ndarray:
        """``(len(used), len(ky)·len(kx))``: the used nodes' optical OTFs × the atmosphere's,
        zero beyond the optics' cutoff; kept for stamps up to ``_CACHE_MAX_SIZE``."""
        # an alias term is recognised by its first frequencies (the integer offsets)
        key = (ky.size, int(np.round(kx[0])), int(np.round(ky[0])))
        cached = self._cache.get(key) if ky.size <= _CACHE_MAX_SIZE else None
        if cached is None:
            cached = {}
            if ky.size <= _CACHE_MAX_SIZE:
                self._cache[key] = cached
        missing = [int(i) for i in used if int(i) not in cached]
        if missing:
            a, b, c = self.quad
            k2 = (a * kx[None, :] ** 2 + 2.0 * b * ky[:, None] * kx[None, :]
                  + c * ky[:, None] ** 2)
            atm = np.exp(-KOLMOGOROV_COEFF * (k2 ** (FIVE_THIRDS / 2)) / self.k0**FIVE_THIRDS)
            atm[(ky[:, None] ** 2 + kx[None, :] ** 2) > self.optics.cutoff**2] = 0.0
            for i in missing:
                cached[i] = (self._nodes[i].at(kx, ky) * atm).ravel()
        return np.stack([cached[int(i)] for i in used])

    def otf(self, kx: np.ndarray, ky: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        w = self.weights(x, y)
        used = np.flatnonzero(w.any(axis=0))
        nodes = self._node_otfs(kx, ky, used)
        return (w[:, used].astype(complex) @ nodes).reshape(len(w), ky.size, kx.size)

    def bandwidth(self) -> float:
        return self.optics.cutoff

    def wing(self, r: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Kolmogorov wing of the atmosphere plus twice an annular pupil's diffraction wing,
        ``(λ/D) / (π³ r³ (1 − ε²))`` per pixel."""
        r = np.asarray(r, float)
        atm = 0.0244 * (ATMOSPHERIC_FWHM_K0 / self.k0) ** FIVE_THIRDS * r ** (-11 / 3)
        eps = self.optics.obscuration
        return atm + 2.0 / (np.pi**3 * self.optics.cutoff * r**3 * (1 - eps**2))

    # --- shapes and energies ---------------------------------------------------------------

    @cached_property
    def _node_fwhm(self) -> np.ndarray:
        ixx, iyy, ixy = self.moments(*self.node_positions())
        return SIGMA_TO_FWHM * (ixx * iyy - ixy**2) ** 0.25

    def node_positions(self) -> tuple[np.ndarray, np.ndarray]:
        """Image positions of the nodes, in the order of :meth:`weights`' columns."""
        gx, gy = np.meshgrid(self.node_x, self.node_y)
        return gx.ravel(), gy.ravel()

    def fwhm(self, x: float | np.ndarray, y: float | np.ndarray) -> float | np.ndarray:
        """FWHM (pixels): the nodes' measured adaptive FWHM, interpolated bilinearly (the PSF
        is bilinear in the nodes' PSFs, its moments are not: exact at the nodes, ≲ 1 % off
        between them; :meth:`moments` measures any position exactly)."""
        out = (self.weights(x, y) @ self._node_fwhm).reshape(np.shape(x))
        return float(out) if np.ndim(out) == 0 else out

    def encircled_energies(self, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
        """Encircled energies at many positions, exactly: the nodes' energies weighted (the
        PSF is linear in the nodes' PSFs)."""
        r = float(radius)
        if r not in self._ee:
            self._ee[r] = self.rendered_encircled_energies(*self.node_positions(), r)
        return self.weights(x, y) @ self._ee[r]

    def shapes(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
        """``(fwhm, e1, e2)`` of the PSF at positions, measured (adaptive, oversampled)."""
        ixx, iyy, ixy = self.moments(x, y)
        t = ixx + iyy
        return (SIGMA_TO_FWHM * (ixx * iyy - ixy**2) ** 0.25, (ixx - iyy) / t, 2 * ixy / t)

