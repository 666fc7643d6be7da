"""PSFs given by their optical transfer function, rendered exactly on square pixels.

A source's pixel values are samples, at integer positions, of (PSF ⊛ object ⊛ square pixel).
In Fourier space that is ``OTF(k) · object(k) · sinc(kx) sinc(ky) · exp(−2πi k·x₀)``; sampling
folds the spectrum onto the band [−½, ½)² (every alias ``k + m`` with ``m`` integer whose
envelope is not negligible is added), and an inverse FFT of the folded spectrum on a stamp gives
the samples, the light falling beyond the stamp wrapped onto it. The sinc vanishes at every
non-zero integer frequency and ``OTF(0) = 1``, so a stamp sums to the flux asked for exactly.

The same spectra, multiplied by ``−2πi kx`` (or ``ky``), are the derivatives of a stamp with
respect to the source's position, exact to the same precision: what the Cramér–Rao bound of a
centroid needs (:meth:`FourierPsf.centroid_bounds`).

:class:`FourierPsf` is the base of the simulator's PSF families (Kolmogorov, Moffat, aberrated
optics × atmosphere): a family gives its OTF, its bandwidth and its wings, and the base renders,
makes kernels, encircled energies, adaptive-moment shapes and centroid bounds from them. The
simulator's truth is this PSF; GalSim (Rowe et al. 2015) renders the same way (its ``drawFFT``
with ``method='auto'`` folds a profile's k-space image the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIGMA_TO_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))
MAX_BATCH_ELEMENTS = 2_000_000  # complex Fourier cells per rendering chunk (~32 MB)
OTF_NEGLIGIBLE = 1e-9  # aliases whose |OTF · sinc| stays below this are left out
OVERSAMPLING = 4  # fine samples per pixel on which PSF shapes are measured
EE_STAMP = 256  # stamp side on which encircled energies are summed (wrapped light ≲ 1e-6)
_MOMENT_TOL = 1e-10


@dataclass(frozen=True)
class GalaxyShape:
    """Exponential-disk shapes for a batch: arrays of scale length, axis ratio, angle.

    ``scale_px`` is the circularized scale length ``r_s = hlr / 1.67835`` in pixels (the
    major/minor scale lengths are ``r_s/√q`` and ``r_s √q``, area-preserving); ``pa_rad`` is
    the major axis's angle counter-clockwise from +x.
    """

    scale_px: np.ndarray
    q: np.ndarray
    pa_rad: np.ndarray

    def quadratic(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coefficients (a, b, c) of ``(2π)²|Aᵀk|² = a kx² + 2b kx ky + c ky²``."""
        ra2 = self.scale_px**2 / self.q
        rb2 = self.scale_px**2 * self.q
        cos, sin = np.cos(self.pa_rad), np.sin(self.pa_rad)
        f = (2.0 * np.pi) ** 2
        return (
            f * (ra2 * cos**2 + rb2 * sin**2),
            f * (ra2 - rb2) * sin * cos,
            f * (ra2 * sin**2 + rb2 * cos**2),
        )

    def take(self, index: slice | np.ndarray) -> GalaxyShape:
        """The shapes of a subset of the batch."""
        return GalaxyShape(self.scale_px[index], self.q[index], self.pa_rad[index])


def exponential_denominator(coeffs: tuple[np.ndarray, ...], kx: np.ndarray,
                            ky: np.ndarray) -> np.ndarray:
    """``(1 + (2π)²|Aᵀk|²)^(3/2)``, (n, ky, kx): unit exponential disks' transform is its
    inverse."""
    a, b, c = (v[:, None, None] for v in coeffs)
    q = 1.0 + a * kx[None, None, :] ** 2 + c * ky[None, :, None] ** 2
    q += 2.0 * b * (ky[:, None] * kx[None, :])[None]
    return q * np.sqrt(q)


def stamp_origin(x: np.ndarray, y: np.ndarray, size: int) -> tuple[np.ndarray, ...]:
    """Integer stamp origins ``(x0, y0)`` and in-stamp positions ``(px, py)`` for sources.

    The source's nearest pixel lands on the stamp's pixel ``size // 2``.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ix, iy = np.floor(x + 0.5).astype(np.int64), np.floor(y + 0.5).astype(np.int64)
    c = size // 2
    return ix - c, iy - c, x - ix + c, y - iy + c


def disk_overlap(size: int, xc: float, yc: float, radius: float, sub: int = 32) -> np.ndarray:
    """Fraction of each pixel of a ``size × size`` grid inside a circle (supersampled)."""
    idx = np.arange(size, dtype=float)
    d = np.hypot(idx[None, :] - xc, idx[:, None] - yc)
    frac = (d <= radius).astype(float)
    edge = np.abs(d - radius) < 0.75
    jj, ii = np.nonzero(edge)
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    sx = ii[:, None, None] + offs[None, None, :] - xc
    sy = jj[:, None, None] + offs[None, :, None] - yc
    frac[jj, ii] = ((sx**2 + sy**2) <= radius**2).mean(axis=(1, 2))
    return frac


def adaptive_moments(
    stamp: np.ndarray, sigma0: float = 2.0, max_iter: int = 500, tol: float = _MOMENT_TOL
) -> tuple[float, float, float, float, float]:
    """Adaptive (elliptical-Gaussian-weighted) second moments of a stamp, as SdssShape does.

    Iterates weight = Gaussian of the current moments until ``M = 2 <x xᵀ>_W`` (the fixed point
    where the weight matches the object). Returns ``(xc, yc, ixx, iyy, ixy)`` in pixels
    (array coordinates of the stamp); the determinant radius is ``(ixx iyy − ixy²)^¼``.
    This is how LSST's ``ImagePsf.computeShape`` sizes a PSF; unweighted moments diverge for
    atmospheric PSFs.
    """
    img = np.asarray(stamp, dtype=float)
    ny, nx = img.shape
    yy, xx = np.mgrid[:ny, :nx].astype(float)
    jpk, ipk = np.unravel_index(np.argmax(img), img.shape)
    xc, yc = float(ipk), float(jpk)
    ixx = iyy = float(sigma0) ** 2
    ixy = 0.0
    for _ in range(max_iter):
        det = ixx * iyy - ixy**2
        if not det > 1e-8:
            raise ValueError("adaptive moments failed: moments collapsed (undersampled?)")
        dx, dy = xx - xc, yy - yc
        w = img * np.exp(-0.5 * (iyy * dx * dx - 2 * ixy * dx * dy + ixx * dy * dy) / det)
        total = w.sum()
        if not total > 0:
            raise ValueError("adaptive moments failed: non-positive weighted flux")
        xc_new = xc + (w * dx).sum() / total
        yc_new = yc + (w * dy).sum() / total
        nxx = 2.0 * (w * dx * dx).sum() / total
        nyy = 2.0 * (w * dy * dy).sum() / total
        nxy = 2.0 * (w * dx * dy).sum() / total
        change = abs(nxx - ixx) + abs(nyy - iyy) + abs(nxy - ixy)
        change += abs(xc_new - xc) + abs(yc_new - yc)
        xc, yc, ixx, iyy, ixy = xc_new, yc_new, nxx, nyy, nxy
        if change < tol * (ixx + iyy):
            return xc, yc, ixx, iyy, ixy
    raise ValueError("adaptive moments did not converge")


def adaptive_sigma(stamp: np.ndarray) -> float:
    """Determinant radius ``(ixx iyy − ixy²)^¼`` of a stamp's adaptive moments, in pixels."""
    _, _, ixx, iyy, ixy = adaptive_moments(stamp)
    return float((ixx * iyy - ixy**2) ** 0.25)


def batch_adaptive_moments(stamps: np.ndarray, sigma0: float = 2.0, max_iter: int = 500,
                           tol: float = _MOMENT_TOL) -> tuple[np.ndarray, ...]:
    """:func:`adaptive_moments` of ``(n, ny, nx)`` stamps at once: ``(xc, yc, ixx, iyy, ixy)``.

    Same iteration, vectorized; each stamp stops changing once it has converged.
    """
    img = np.asarray(stamps, float)
    n, ny, nx = img.shape
    yy, xx = np.mgrid[:ny, :nx].astype(float)
    peak = np.argmax(img.reshape(n, -1), axis=1)
    yc, xc = (v.astype(float) for v in np.unravel_index(peak, (ny, nx)))
    ixx, iyy, ixy = np.full(n, sigma0**2), np.full(n, sigma0**2), np.zeros(n)
    active = np.ones(n, bool)
    for _ in range(max_iter):
        a = np.flatnonzero(active)
        if a.size == 0:
            return xc, yc, ixx, iyy, ixy
        det = ixx[a] * iyy[a] - ixy[a] ** 2
        if not np.all(det > 1e-8):
            raise ValueError("adaptive moments failed: moments collapsed (undersampled?)")
        dx = xx[None] - xc[a, None, None]
        dy = yy[None] - yc[a, None, None]
        w = img[a] * np.exp(-0.5 * (iyy[a, None, None] * dx * dx
                                    - 2 * ixy[a, None, None] * dx * dy
                                    + ixx[a, None, None] * dy * dy) / det[:, None, None])
        total = w.sum(axis=(1, 2))
        if not np.all(total > 0):
            raise ValueError("adaptive moments failed: non-positive weighted flux")
        new = [xc[a] + (w * dx).sum(axis=(1, 2)) / total,
               yc[a] + (w * dy).sum(axis=(1, 2)) / total,
               2.0 * (w * dx * dx).sum(axis=(1, 2)) / total,
               2.0 * (w * dy * dy).sum(axis=(1, 2)) / total,
               2.0 * (w * dx * dy).sum(axis=(1, 2)) / total]
        change = sum(np.abs(v - old[a]) for v, old in zip(new, (xc, yc, ixx, iyy, ixy),
                                                              strict=True))
        for v, old in zip(new, (xc, yc, ixx, iyy, ixy), strict=True):
            old[a] = v
        active[a] = change >= tol * (ixx[a] + iyy[a])
    raise ValueError("adaptive moments did not converge")


def ellipticity(ixx: np.ndarray, iyy: np.ndarray, ixy: np.ndarray) -> tuple[np.ndarray, ...]:
    """Distortion ``(e1, e2) = ((Ixx − Iyy), 2Ixy) / (Ixx + Iyy)`` and ``|e|`` of moments."""
    t = ixx + iyy
    e1, e2 = (ixx - iyy) / t, 2.0 * ixy / t
    return e1, e2, np.hypot(e1, e2)


def shear_quadratic(e: float, angle_rad: float) -> tuple[float, float, float]:
    """``(a, b, c)`` with ``|Aᵀk|² = a kx² + 2b kx ky + c ky²`` for an area-preserving shear.

    The profile ``f(A⁻¹ r)`` with axes stretched by ``1/√q`` and ``√q`` along ``angle`` (q from
    the distortion ``e = (1 − q²)/(1 + q²)``) keeps its determinant radius; its transform is
    ``F(Aᵀk)``.
    """
    q = np.sqrt((1.0 - e) / (1.0 + e))
    cos, sin = np.cos(angle_rad), np.sin(angle_rad)
    ra2, rb2 = 1.0 / q, q
    return (ra2 * cos**2 + rb2 * sin**2, (ra2 - rb2) * sin * cos, ra2 * sin**2 + rb2 * cos**2)


def oversampling_for(fwhm: float) -> int:
    """Fine samples per pixel for measuring a PSF's moments (see `FourierPsf.moments`)."""
    return OVERSAMPLING if fwhm < 2.5 else 2


def moment_stamp(fwhm: float) -> int:
    """Side (pixels) of the stamps adaptive moments are measured on: ±4 FWHM, at least 32."""
    return max(32, 2 * int(np.ceil(4.0 * fwhm)))


def _x_aliases(bandwidth: float) -> list[int]:
    """Alias offsets m for the half-plane axis kx ∈ [0, ½] that reach |kx + m| < bandwidth."""
    top = int(np.ceil(bandwidth)) + 1
    return [m for m in range(-top, top + 1) if (m if m >= 0 else -m - 0.5) < bandwidth]


def _y_aliases(bandwidth: float) -> list[int]:
    """Alias offsets m for the full axis ky ∈ [−½, ½) that reach |ky + m| < bandwidth."""
    top = int(np.ceil(bandwidth)) + 1
    return [m for m in range(-top, top + 1) if m == 0 or abs(m) - 0.5 < bandwidth]


class FourierPsf:
    """A PSF known by its OTF at every position: the base of the simulator's PSF families.

    Subclasses implement :meth:`otf`, :meth:`bandwidth`, :meth:`wing`, :meth:`fwhm` and may
    override :meth:`encircled_energies` with something faster than rendering each position.
    Implements :class:`app.engine.psf.PsfModel`.
    """

    kernel_size: int = 41

    # --- what a family defines -------------------------------------------------------------

    def otf(self, kx: np.ndarray, ky: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """OTF (before pixel integration) at frequencies ``ky[:, None], kx[None, :]`` (cycles
        per pixel, any, aliases included) for sources at image positions ``x, y``: an
        ``(n, len(ky), len(kx))`` real or complex array, 1 at k = 0."""
        raise NotImplementedError

    def bandwidth(self) -> float:
        """Frequency (cycles/pixel) beyond which ``|OTF(k)| sinc`` < ``OTF_NEGLIGIBLE``
        everywhere on the image."""
        raise NotImplementedError

    def wing(self, r: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Upper estimate of the fraction of the flux per pixel at radius ``r`` (pixels)."""
        raise NotImplementedError

    def fwhm(self, x: float | np.ndarray, y: float | np.ndarray) -> float | np.ndarray:
        """FWHM (pixels) at (x, y): 2.3548 × adaptive-moment determinant radius (LSST's)."""
        raise NotImplementedError

    # --- derived -----------------------------------------------------------------------

    def sigma(self, x: float | np.ndarray, y: float | np.ndarray) -> float | np.ndarray:
        """Adaptive-moment determinant radius (pixels) of the pixelized PSF at (x, y)."""
        out = np.asarray(self.fwhm(x, y)) / SIGMA_TO_FWHM
        return float(out) if np.ndim(out) == 0 else out

    def spectra(self, size: int, x: np.ndarray, y: np.ndarray, px: np.ndarray, py: np.ndarray,
                galaxy: GalaxyShape | None = None, parts: tuple[str, ...] = ("value",)
                ) -> list[np.ndarray]:
        """Folded half-plane spectra ``(n, size, size//2 + 1)`` of unit-flux sources.

        ``x, y`` (image) choose the local PSF, ``px, py`` (stamp array coordinates) place the
        source on the stamp. ``parts`` lists what to return, in order: ``"value"`` (the
        stamps' spectra), ``"x"`` / ``"y"`` (the spectra of the stamps' derivatives with
        respect to the source's position along that axis).
        """
        kx = np.fft.rfftfreq(size)
        ky = np.fft.fftfreq(size)
        band = self.bandwidth()
        coeffs = None if galaxy is None else galaxy.quadratic()
        totals = [np.zeros((len(x), size, kx.size), dtype=complex) for _ in parts]
        for mx in _x_aliases(band):
            kxt = kx + mx
            phase_x = np.exp(-2j * np.pi * np.multiply.outer(px, kxt))
            for my in _y_aliases(band):
                kyt = ky + my
                phase_y = np.exp(-2j * np.pi * np.multiply.outer(py, kyt))
                amp = self.otf(kxt, kyt, x, y) * (np.sinc(kyt)[:, None] * np.sinc(kxt)[None, :])
                if coeffs is not None:
                    amp = amp / exponential_denominator(coeffs, kxt, kyt)
                amp = amp * phase_y[:, :, None] * phase_x[:, None, :]
                for total, part in zip(totals, parts, strict=True):
                    if part == "value":
                        total += amp
                    elif part == "x":
                        total += amp * (-2j * np.pi * kxt)[None, None, :]
                    else:
                        total += amp * (-2j * np.pi * kyt)[None, :, None]
        return totals

    def stamps(self, size: int, x: np.ndarray, y: np.ndarray, px: np.ndarray, py: np.ndarray,
               flux: np.ndarray, galaxy: GalaxyShape | None = None) -> np.ndarray:
        """``(n, size, size)`` float64 stamps, each summing to its ``flux`` exactly (see
        :meth:`spectra` for the arguments)."""
        return self._batched(size, x, y, px, py, np.asarray(flux, float), galaxy, ("value",))[0]

    def gradients(self, size: int, x: np.ndarray, y: np.ndarray, px: np.ndarray,
                  py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Derivatives of unit-flux point-source stamps with respect to the source's x and y
        (per pixel of displacement), each ``(n, size, size)``."""
        dx, dy = self._batched(size, x, y, px, py, np.ones(1), None, ("x", "y"))
        return dx, dy

    def _batched(self, size: int, x: np.ndarray, y: np.ndarray, px: np.ndarray,
                 py: np.ndarray, flux: np.ndarray, galaxy: GalaxyShape | None,
                 parts: tuple[str, ...]) -> list[np.ndarray]:
        x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
        px, py = np.atleast_1d(np.asarray(px, float)), np.atleast_1d(np.asarray(py, float))
        flux = np.broadcast_to(np.atleast_1d(flux), x.shape)
        out = [np.empty((x.size, size, size)) for _ in parts]
        step = max(1, MAX_BATCH_ELEMENTS // (size * (size // 2 + 1) * len(parts)))
        for start in range(0, x.size, step):
            sl = slice(start, start + step)
            gal = None if galaxy is None else galaxy.take(sl)
            specs = self.spectra(size, x[sl], y[sl], px[sl], py[sl], gal, parts)
            for o, spec in zip(out, specs, strict=True):
                spec *= flux[sl, None, None]
                o[sl] = np.fft.irfft2(spec, s=(size, size), axes=(1, 2))
        return out

    def point_stamp_sizes(self, flux: np.ndarray, x: np.ndarray, y: np.ndarray,
                          tolerance: float) -> np.ndarray:
        """Per-source stamp sides (multiples of 32, 32 … 1024) whose edge is below
        ``tolerance`` counts per pixel: ``flux × wing(size / 2) < tolerance``."""
        flux = np.maximum(np.asarray(flux, float), 0.0)
        sizes = np.full(flux.shape, 1024)
        for size in range(992, 0, -32):
            fits = flux * self.wing(np.full(flux.shape, size / 2.0), x, y) < tolerance
            sizes = np.where(fits, size, sizes)
        return sizes

    def render(self, x: float, y: float, flux: float = 1.0, size: int | None = None
               ) -> tuple[np.ndarray, tuple[int, int]]:
        """A star of ``flux`` counts at (x, y): its stamp and the stamp's origin ``(x0, y0)``.

        Stamp pixel ``[j, i]`` is image pixel ``(x0 + i, y0 + j)``; the stamp sums to ``flux``
        exactly. ``size`` defaults to one whose edge is below 0.5 counts per pixel.
        """
        if size is None:
            size = int(self.point_stamp_sizes(np.array([flux]), np.array([x]), np.array([y]),
                                              0.5)[0])
        x0, y0, px, py = stamp_origin(np.array([x]), np.array([y]), size)
        stamp = self.stamps(size, np.array([x]), np.array([y]), px, py, np.array([flux]))[0]
        return stamp, (int(x0[0]), int(y0[0]))

    def centred(self, x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
        """Unit-flux PSFs of sources at ``x, y`` drawn on the centre pixel of ``size`` stamps."""
        x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
        c = np.full(x.shape, float(size // 2))
        return self.stamps(size, x, y, c, c, np.ones(x.shape))

    def kernel(self, x: float, y: float, size: int | None = None) -> np.ndarray:
        """Odd ``size`` stamp (default ``kernel_size``) of the PSF centred on its middle pixel,
        cut from a stamp ≥ 4× larger and normalized to sum 1, as an LSST PSF kernel image is."""
        return self.kernels(np.array([x]), np.array([y]), size)[0]

    def kernels(self, x: np.ndarray, y: np.ndarray, size: int | None = None) -> np.ndarray:
        """:meth:`kernel` at many positions, ``(n, size, size)``."""
        size = self.kernel_size if size is None else int(size)
        if size < 3 or size % 2 == 0:
            raise ValueError(f"kernel size must be odd and ≥ 3, got {size}")
        big = max(256, 4 * size + 4)
        c, half = big // 2, size // 2
        out = self.centred(x, y, big)[:, c - half : c + half + 1, c - half : c + half + 1]
        return out / out.sum(axis=(1, 2), keepdims=True)

    def encircled_energy(self, x: float, y: float, radius: float) -> float:
        """Fraction of a centred star's flux in a circular aperture of ``radius`` pixels.

        What exact-overlap aperture photometry measures on the (pixel-integrated) image:
        pixel values weighted by the pixel's area inside the circle (supersampled 32×32 on
        pixels that straddle the edge).
        """
        return float(self.rendered_encircled_energies(np.array([x]), np.array([y]), radius)[0])

    def encircled_energies(self, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
        """:meth:`encircled_energy` at many positions (families may interpolate exactly)."""
        return self.rendered_encircled_energies(x, y, radius)

    def rendered_encircled_energies(self, x: np.ndarray, y: np.ndarray,
                                    radius: float) -> np.ndarray:
        """Encircled energies summed on rendered stamps, one per position."""
        size = int(max(EE_STAMP, 8 * np.ceil(radius)))
        size += size % 2
        c = size // 2
        weights = disk_overlap(size, c, c, radius)
        x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
        out = np.empty(x.size)
        step = max(1, MAX_BATCH_ELEMENTS // (size * size))
        for start in range(0, x.size, step):
            sl = slice(start, start + step)
            out[sl] = (self.centred(x[sl], y[sl], size) * weights).sum(axis=(1, 2))
        return out

    def oversampled(self, x: np.ndarray, y: np.ndarray, size: int,
                    factor: int = OVERSAMPLING) -> np.ndarray:
        """The pixel-integrated PSF (LSST's and PSFEx's "effective PSF") sampled ``factor``
        times finer than the pixels: ``(n, size·factor, size·factor)``, centred on fine pixel
        ``(size // 2)·factor``; interleaved from ``factor²`` sub-pixel-shifted renders."""
        x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
        c = float(size // 2)
        out = np.empty((x.size, size * factor, size * factor))
        ones = np.ones(x.size)
        for sy in range(factor):
            for sx in range(factor):
                out[:, sy::factor, sx::factor] = self.stamps(
                    size, x, y, np.full(x.size, c - sx / factor), np.full(x.size, c - sy / factor),
                    ones)
        return out

    def moments(self, x: np.ndarray, y: np.ndarray, size: int | None = None,
                factor: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Adaptive second moments ``(ixx, iyy, ixy)`` (pixels²) of the pixel-integrated PSF.

        Measured on :meth:`oversampled` stamps (4× below FWHM 2.5 px, else 2×, which agree to
        1e-5 at 2 px), so they are defined for undersampled PSFs too: on the pixel samples
        themselves the iteration collapses below FWHM ≈ 1.8 px, and differs by 0.7 % at 2.5
        px, 0.07 % at 3 px, 1e-5 at 4 px. ``size`` (pixels, default ±4 FWHM) is the stamp,
        ``factor`` the oversampling (default from the FWHM).
        """
        if size is None or factor is None:
            fwhm = float(np.max(self.fwhm(x, y)))
            size = size or moment_stamp(fwhm)
            factor = factor or oversampling_for(fwhm)
        fine = self.oversampled(x, y, size, factor)
        _, _, ixx, iyy, ixy = batch_adaptive_moments(fine, sigma0=2.0 * factor)
        return ixx / factor**2, iyy / factor**2, ixy / factor**2

    def centroid_bounds(self, stamps: np.ndarray, dx: np.ndarray, dy: np.ndarray,
                        flux: np.ndarray, variance: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Cramér–Rao bounds ``(σx, σy)`` (pixels) of point sources' centroids.

        ``stamps`` are the unit-flux PSFs P on the pixels (n, …), ``dx, dy`` their
        derivatives with respect to the source position, ``variance`` the pixels' expected
        variance (counts²). The model ``μ = F·P(x − x₀)`` with F, x₀, y₀ free (sky known) has
        Fisher matrix ``I = Σ ∂μ/∂θ ∂μ/∂θᵀ / V``; the bounds are ``√(I⁻¹)`` on the position
        diagonal, so an asymmetric PSF's flux–position correlation is counted.
        """
        return fisher_bounds(stamps, dx, dy, flux, variance)


def fisher_bounds(p: np.ndarray, dx: np.ndarray, dy: np.ndarray, flux: np.ndarray,
                  variance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """See :meth:`FourierPsf.centroid_bounds`; arrays ``(n, …)`` summed over the rest."""
    n = p.shape[0]
    flux = np.asarray(flux, float).reshape(n)
    g = [p.reshape(n, -1), flux[:, None] * dx.reshape(n, -1), flux[:, None] * dy.reshape(n, -1)]
    inv_v = 1.0 / variance.reshape(n, -1)
    fisher = np.empty((n, 3, 3))
    for i in range(3):
        for j in range(i, 3):
            fisher[:, i, j] = fisher[:, j, i] = (g[i] * g[j] * inv_v).sum(axis=1)
    cov = np.linalg.inv(fisher)
    return np.sqrt(cov[:, 1, 1]), np.sqrt(cov[:, 2, 2])


class GradientPsf(FourierPsf):
    """A PSF whose only change across the image is its size, linear along the diagonal.

    ``fwhm`` (pixels) is the FWHM at the image centre in LSST's convention (2.3548 × the
    determinant radius of the adaptive moments of the pixelized PSF). Across the image it
    varies as ``fwhm · (1 + gradient · u)``, ``u = ((x − xc)/hx + (y − yc)/hy) / 2`` ∈ [−1, 1]
    (−gradient at pixel (0, 0), +gradient at the far corner).
    """

    def __init__(self, fwhm: float, *, gradient: float = 0.0, width: int | None = None,
                 height: int | None = None, kernel_size: int = 41) -> None:
        if not fwhm > 0:
            raise ValueError(f"fwhm must be positive, got {fwhm}")
        if gradient != 0.0 and (width is None or height is None):
            raise ValueError("a FWHM gradient needs the image width and height")
        if not abs(gradient) < 1:
            raise ValueError(f"gradient must be within (-1, 1), got {gradient}")
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and ≥ 3, got {kernel_size}")
        self.fwhm0 = float(fwhm)
        self.gradient = float(gradient)
        self.width, self.height = width, height
        self.kernel_size = int(kernel_size)

    def fwhm_extremes(self) -> tuple[float, float]:
        """Smallest and largest FWHM on the image."""
        g = abs(self.gradient)
        return self.fwhm0 * (1 - g), self.fwhm0 * (1 + g)

    def _u(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Normalized position along the gradient, −1 at (0, 0) and +1 at the far corner."""
        if self.gradient == 0.0 or self.width is None or self.height is None:
            return np.zeros(np.broadcast(np.asarray(x), np.asarray(y)).shape)
        hx, hy = max(self.width - 1, 1) / 2.0, max(self.height - 1, 1) / 2.0
        return 0.5 * ((np.asarray(x, float) - hx) / hx + (np.asarray(y, float) - hy) / hy)

    def fwhm(self, x: float | np.ndarray, y: float | np.ndarray) -> float | np.ndarray:
        """FWHM in pixels at (x, y): 2.3548 × adaptive determinant radius (LSST convention)."""
        out = self.fwhm0 * (1.0 + self.gradient * self._u(x, y))
        return float(out) if np.ndim(out) == 0 else out

    def encircled_energies(self, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
        """Encircled energies at many positions: rendered at 9 points along the gradient and
        interpolated (a cubic spline in u, exact to ~1e-9: the PSF depends on u alone)."""
        from scipy.interpolate import CubicSpline

        x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
        if self.gradient == 0.0 or self.width is None or self.height is None:
            return np.full(x.shape, self.encircled_energy(0.0, 0.0, radius))
        u = np.linspace(-1.0, 1.0, 9)
        hx, hy = max(self.width - 1, 1) / 2.0, max(self.height - 1, 1) / 2.0
        ee = self.rendered_encircled_energies(hx * (1 + u), hy * (1 + u), radius)
        return CubicSpline(u, ee)(self._u(x, y))
