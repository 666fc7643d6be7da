"""Simulated LSST-like calexps (or raw-ish frames with their sky in) with exactly known truth.

Stars and pairs of stars are drawn with one of three PSF families (``psf_family``): Kolmogorov
seeing (:class:`~app.engine.psf_kolmogorov.KolmogorovPsf`, the default), Moffat
(:class:`~app.engine.psf_moffat.MoffatPsf`, β and an elliptical profile) or optics × atmosphere
(:class:`~app.engine.psf_optics.AberratedPsf`, shape changing across the field); galaxies are
exponential disks convolved with that PSF. Every source is rendered in Fourier space on its own
stamp, so its pixels sum to its truth flux exactly.
The exposure is what LSST's ISR + characterization leaves: a background-subtracted image (the
subtracted sky model kept in ``background``), a variance plane including the sources' Poisson
noise, SAT / BAD|INTRP / EDGE mask planes, a TAN (optionally TAN-SIP) WCS and a PhotoCalib.
With ``sky_in`` the image keeps its sky (``background`` None): a frame as an astronomer has
it before any background subtraction, to be written as a plain image
(:func:`app.io.fits_variants.write_plain_image`).
Its PSF is left unset: the engine must measure it (tests can install ``SimulatedExposure.psf``).

Conventions: arrays are ``[y, x]``; positions are 0-based with integer values at pixel centres;
fluxes are in counts (ADU) unless named ``_njy``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Column, Table
from astropy.wcs import WCS, Sip
from numpy.typing import ArrayLike
from scipy.spatial import cKDTree

from app.engine.exposure import Exposure, ExposureInfo, PhotoCalib
from app.engine.masks import MaskPlanes
from app.engine.psf_fourier import FourierPsf, GalaxyShape, fisher_bounds, stamp_origin
from app.engine.psf_kolmogorov import KolmogorovPsf
from app.engine.psf_moffat import MoffatPsf
from app.engine.psf_optics import AberratedPsf, Optics
from app.engine.sky_frame import WCS_FRAMES, frame_of, pixel_to_icrs, reframed

EXP_HLR_PER_SCALE = 1.678346990016661  # half-light radius / scale length of an exponential
_STAMP_CELLS = 4_000_000  # stamp pixels rendered per chunk (≈32 MB of float64)
_NOISE_ROWS = 256  # image rows per noise block (fixed: results depend on it)
_PSF_SN_STAMP = 64  # stamp on which psf_sn's PSF is summed for galaxies
_BRIGHT_SN = 50.0  # "bright": brighter than a star of this PSF S/N (bright_galaxy_fraction)
PSF_FAMILIES = ("kolmogorov", "moffat", "aberrated")
_WING_TOLERANCE = 0.01  # stamp edges (and the light wrapped onto stamps) below this × sky σ

Position = tuple  # (x, y, flux, kind) or (x, y, flux, kind, hlr_arcsec, q, pa_deg)


@dataclass(frozen=True, kw_only=True)
class SimulationConfig:
    """Everything that defines a simulated exposure; same config + seed ⇒ same pixels.

    Magnitudes are AB; with the defaults (``magzero`` 31, sky 1000 counts, 0.75″ seeing) stars
    span PSF S/N ≈ 3 (i ≈ 24.1) to saturation (i ≲ 15.5).
    """

    width: int = 2048
    height: int = 2048
    pixel_scale_arcsec: float = 0.2
    fwhm_arcsec: float = 0.75  # PSF FWHM at the centre (2.3548 × adaptive determinant radius)
    fwhm_gradient: float = 0.04  # fractional FWHM change centre → far corner (−: near corner)
    psf_family: str = "kolmogorov"  # or "moffat", "aberrated" (optics × atmosphere)
    moffat_beta: float = 3.5
    psf_ellipticity: float = 0.0  # distortion of the Moffat profile / the atmospheric core
    psf_angle_deg: float = 0.0  # its major axis, counter-clockwise from +x
    optics: Optics = field(default_factory=Optics)  # pupil and aberrations ("aberrated")
    sky_in: bool = False  # leave the sky in the image (no background subtracted)
    sky_counts: float = 1000.0  # mean sky level per pixel (subtracted from the calexp)
    sky_gradient: float = 20.0  # amplitude (counts) of the sky's smooth tilt + curvature
    gain: float = 1.0  # electrons per count
    read_noise: float = 5.0  # electrons
    magzero: float = 31.0  # AB magnitude of one count
    n_stars: int = 300
    star_mag_range: tuple[float, float] = (15.0, 24.3)
    n_galaxies: int = 300
    bright_galaxy_fraction: float | None = None  # if set, n_galaxies is chosen for it
    galaxy_mag_range: tuple[float, float] = (18.0, 24.0)
    hlr_range_arcsec: tuple[float, float] = (0.3, 1.5)
    q_range: tuple[float, float] = (0.3, 1.0)
    mag_slope: float = 0.3  # number counts dlog10(N)/dm within the magnitude ranges
    n_saturated: int = 3
    saturated_mag_range: tuple[float, float] = (12.5, 14.5)
    saturation: float = 60000.0  # counts, raw (sky included)
    bad_columns: tuple[int, ...] | None = None  # None: one column at 37 % of the width
    edge_width: int = 0
    n_pairs: int = 10
    pair_separation_fwhm: float = 2.0
    pair_flux_ratio_range: tuple[float, float] = (1.0, 5.0)
    pair_mag_range: tuple[float, float] = (18.0, 22.0)  # of the brighter member
    min_separation_px: float = 0.0  # random sources are kept this far from all others
    positions: Sequence[Position] | None = None  # injected sources, placed first
    ra0: float = 62.0
    dec0: float = -37.0
    rotation_deg: float = 0.0
    sip: bool = False
    sky_frame: str = "icrs"  # the WCS's frame: icrs, fk5 (J2000), galactic, ecliptic; same sky
    visit: int = 1
    detector: int = 0
    band: str = "i"
    mjd: float = 60310.25
    exptime: float = 30.0
    seed: int = 0

    def __post_init__(self) -> None:
        _require(self.width >= 16 and self.height >= 16, "width and height must be ≥ 16")
        _require(self.pixel_scale_arcsec > 0, "pixel_scale_arcsec must be positive")
        _require(self.fwhm_arcsec > 0, "fwhm_arcsec must be positive")
        _require(self.psf_family in PSF_FAMILIES,
                 f"psf_family must be one of {', '.join(PSF_FAMILIES)}, got {self.psf_family!r}")
        _require(self.psf_family != "kolmogorov" or self.psf_ellipticity == 0,
                 "psf_ellipticity needs psf_family 'moffat' or 'aberrated' (Kolmogorov is round)")
        _require(0 <= self.psf_ellipticity < 0.5, "psf_ellipticity must be within [0, 0.5)")
        _require(1.5 <= self.moffat_beta <= 10, "moffat_beta must be within 1.5–10")
        _require(self.bright_galaxy_fraction is None or 0 <= self.bright_galaxy_fraction < 1,
                 "bright_galaxy_fraction must be within [0, 1)")
        _require(0 <= self.fwhm_gradient < 0.5, "fwhm_gradient must be within [0, 0.5)")
        _require(self.sky_counts >= 0, "sky_counts must be ≥ 0")
        _require(abs(self.sky_gradient) <= self.sky_counts or self.sky_gradient == 0,
                 "|sky_gradient| must not exceed sky_counts (the sky must stay ≥ 0)")
        _require(self.gain > 0, "gain must be positive")
        _require(self.read_noise >= 0, "read_noise must be ≥ 0")
        _require(self.saturation > self.sky_counts + abs(self.sky_gradient),
                 "saturation must exceed the sky")
        for name in ("n_stars", "n_galaxies", "n_saturated", "n_pairs", "edge_width"):
            _require(getattr(self, name) >= 0, f"{name} must be ≥ 0")
        for name in ("star_mag_range", "galaxy_mag_range", "saturated_mag_range",
                     "pair_mag_range", "hlr_range_arcsec", "q_range", "pair_flux_ratio_range"):
            lo, hi = getattr(self, name)
            _require(lo <= hi, f"{name} must be (low, high) with low ≤ high")
        _require(self.hlr_range_arcsec[0] > 0, "hlr_range_arcsec must be positive")
        _require(0 < self.q_range[0] and self.q_range[1] <= 1, "q_range must be within (0, 1]")
        _require(self.pair_flux_ratio_range[0] >= 1, "pair flux ratios must be ≥ 1")
        _require(self.pair_separation_fwhm > 0, "pair_separation_fwhm must be positive")
        _require(self.min_separation_px >= 0, "min_separation_px must be ≥ 0")
        _require(2 * self.edge_width < min(self.width, self.height), "edge_width too large")
        _require(self.sky_frame in WCS_FRAMES,
                 f"sky_frame must be one of {', '.join(WCS_FRAMES)}, got {self.sky_frame!r}")
        for x in self.bad_columns or ():
            _require(0 <= x < self.width, f"bad column {x} is outside the image")
        for p in self.positions or ():
            _require(len(p) in (4, 7), f"position {p!r} must be (x, y, flux, kind[, hlr, q, pa])")
            _require(p[3] in ("star", "galaxy"), f"kind must be 'star' or 'galaxy', got {p[3]!r}")
            _require(float(p[2]) > 0, f"injected flux must be positive, got {p[2]}")
            if len(p) == 7:
                _require(float(p[4]) > 0 and 0 < float(p[5]) <= 1,
                         f"injected galaxy needs hlr > 0 and 0 < q ≤ 1, got {p!r}")
        # freeze the sequences so the config stays hashable and immutable
        if self.positions is not None:
            object.__setattr__(self, "positions", tuple(tuple(p) for p in self.positions))
        if self.bad_columns is not None:
            object.__setattr__(self, "bad_columns", tuple(int(x) for x in self.bad_columns))

    @property
    def fwhm_px(self) -> float:
        """PSF FWHM at the centre in pixels."""
        return self.fwhm_arcsec / self.pixel_scale_arcsec

    @property
    def bad_column_list(self) -> tuple[int, ...]:
        """The bad columns, the default one resolved."""
        if self.bad_columns is None:
            return (int(round(0.37 * (self.width - 1))),)
        return tuple(int(x) for x in self.bad_columns)

    @property
    def physical_filter(self) -> str:
        """DC2-style physical filter name (as in DP0.2: ``i_sim_1.4``)."""
        return f"{self.band}_sim_1.4"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass
class SimulatedExposure:
    """A simulated calexp, its truth catalog, the PSF it was drawn with and the noiseless model.

    ``model`` is the sources alone (counts, float64, no sky, no noise, no saturation).
    """

    exposure: Exposure
    truth: Table
    psf: FourierPsf
    model: np.ndarray


@dataclass
class _Sources:
    """Per-object truth arrays, in drawing order."""

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    galaxy: np.ndarray  # bool
    pair_id: np.ndarray
    hlr_arcsec: np.ndarray
    q: np.ndarray
    pa_deg: np.ndarray

    @classmethod
    def concat(cls, parts: list[_Sources]) -> _Sources:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__annotations__))

    @classmethod
    def build(cls, x: ArrayLike, y: ArrayLike, flux: ArrayLike, galaxy: ArrayLike = False,
              pair_id: ArrayLike = -1, hlr: ArrayLike = np.nan, q: ArrayLike = np.nan,
              pa: ArrayLike = np.nan) -> _Sources:
        """From per-object arrays or scalars broadcast to ``len(x)``."""
        n = np.asarray(x).size

        def full(v: ArrayLike, dtype: type = float) -> np.ndarray:
            return np.broadcast_to(np.asarray(v, dtype), (n,)).copy()

        return cls(full(x), full(y), full(flux), full(galaxy, bool), full(pair_id, np.int64),
                   full(hlr), full(q), full(pa))


@dataclass
class _Placer:
    """Draws uniform positions over the image, optionally ≥ ``min_sep`` from all others."""

    width: int
    height: int
    min_sep: float
    rng: np.random.Generator
    cells: dict[tuple[int, int], list[tuple[float, float]]] = field(default_factory=dict)

    def _key(self, x: float, y: float) -> tuple[int, int]:
        return int(np.floor(x / self.min_sep)), int(np.floor(y / self.min_sep))

    def add(self, xs: np.ndarray, ys: np.ndarray) -> None:
        """Record positions that later draws must avoid."""
        if self.min_sep <= 0:
            return
        for x, y in zip(xs, ys, strict=True):
            self.cells.setdefault(self._key(x, y), []).append((float(x), float(y)))

    def _free(self, x: float, y: float) -> bool:
        kx, ky = self._key(x, y)
        r2 = self.min_sep**2
        for i in (kx - 1, kx, kx + 1):
            for j in (ky - 1, ky, ky + 1):
                for px, py in self.cells.get((i, j), ()):
                    if (px - x) ** 2 + (py - y) ** 2 < r2:
                        return False
        return True

    def draw(self, n: int, offsets: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None,
             ) -> np.ndarray:
        """``n`` accepted rows ``(x, y, angle)``; ``offsets(x, y, angle)`` gives members' dx, dy.

        Without ``offsets`` each row is one source; with it, the members at ``(x+dx, y+dy)``
        must all be free and are all recorded.
        """
        lo = np.array([-0.5, -0.5, 0.0])
        hi = np.array([self.width - 0.5, self.height - 0.5, np.pi])
        if self.min_sep <= 0:
            return self.rng.uniform(lo, hi, size=(n, 3))
        out: list[np.ndarray] = []
        tries = 0
        while len(out) < n:
            batch = self.rng.uniform(lo, hi, size=(max(2 * (n - len(out)), 16), 3))
            for row in batch:
                tries += 1
                dx, dy = (np.zeros(1), np.zeros(1)) if offsets is None else offsets(*row)
                xs, ys = row[0] + dx, row[1] + dy
                if all(self._free(a, b) for a, b in zip(xs, ys, strict=True)):
                    self.add(xs, ys)
                    out.append(row)
                    if len(out) == n:
                        break
            if tries > 200 * n + 1000:
                raise ValueError(
                    f"cannot place {n} sources {self.min_sep} px apart on "
                    f"{self.width}×{self.height}; lower min_separation_px or the counts"
                )
        return np.array(out).reshape(-1, 3)


def power_law_mags(rng: np.random.Generator, n: int, lo: float, hi: float,
                   slope: float) -> np.ndarray:
    """``n`` magnitudes in [lo, hi] with number counts ∝ 10^(slope·m) (uniform if slope 0)."""
    u = rng.uniform(size=n)
    if slope == 0 or hi == lo:
        return lo + u * (hi - lo)
    a, b = 10.0 ** (slope * lo), 10.0 ** (slope * hi)
    return np.log10(a + u * (b - a)) / slope


def _mag_cdf(m: float, lo: float, hi: float, slope: float) -> float:
    """Fraction of :func:`power_law_mags` draws brighter than ``m``."""
    if m <= lo:
        return 0.0
    if m >= hi:
        return 1.0
    if slope == 0 or hi == lo:
        return (m - lo) / (hi - lo)
    a, b = 10.0 ** (slope * lo), 10.0 ** (slope * hi)
    return (10.0 ** (slope * m) - a) / (b - a)


def bright_magnitude(cfg: SimulationConfig, psf: FourierPsf) -> float:
    """Magnitude of a star of PSF S/N 50 at the image centre (sky and its own Poisson noise)."""
    p = psf.kernel((cfg.width - 1) / 2.0, (cfg.height - 1) / 2.0, 65)
    n_eff = 1.0 / float((p * p).sum())
    sky_var = cfg.sky_counts / cfg.gain + (cfg.read_noise / cfg.gain) ** 2
    s2 = _BRIGHT_SN**2
    flux = 0.5 * (s2 / cfg.gain + np.sqrt((s2 / cfg.gain) ** 2 + 4 * s2 * n_eff * sky_var))
    return cfg.magzero - 2.5 * float(np.log10(flux))


def galaxy_count(cfg: SimulationConfig, psf: FourierPsf) -> int:
    """``n_galaxies``, or with ``bright_galaxy_fraction`` the count that makes galaxies that
    share (in expectation) of the objects brighter than a star of PSF S/N 50 (pairs and the
    saturated stars aside)."""
    f = cfg.bright_galaxy_fraction
    if f is None:
        return cfg.n_galaxies
    m = bright_magnitude(cfg, psf)
    stars = cfg.n_stars * _mag_cdf(m, *cfg.star_mag_range, cfg.mag_slope)
    per_galaxy = _mag_cdf(m, *cfg.galaxy_mag_range, cfg.mag_slope)
    if f > 0 and not per_galaxy > 0:
        raise ValueError(f"bright_galaxy_fraction needs galaxies brighter than magnitude {m:.2f}"
                         " (a star of PSF S/N 50); lower galaxy_mag_range")
    return 0 if f == 0 else int(round(f / (1.0 - f) * stars / per_galaxy))


def _draw_sources(cfg: SimulationConfig, psf: FourierPsf, rng: np.random.Generator) -> _Sources:
    """All objects: injected, saturated stars, pairs, stars, galaxies (in that order)."""

    def flux_of(mag: np.ndarray) -> np.ndarray:
        return 10.0 ** (-0.4 * (mag - cfg.magzero))

    placer = _Placer(cfg.width, cfg.height, cfg.min_separation_px, rng)
    parts = [_injected(cfg)]
    placer.add(parts[0].x, parts[0].y)
    rows = placer.draw(cfg.n_saturated)
    mags = rng.uniform(*cfg.saturated_mag_range, size=cfg.n_saturated)
    parts.append(_Sources.build(rows[:, 0], rows[:, 1], flux_of(mags)))
    parts.append(_draw_pairs(cfg, psf, rng, placer, flux_of))
    rows = placer.draw(cfg.n_stars)
    mags = power_law_mags(rng, cfg.n_stars, *cfg.star_mag_range, cfg.mag_slope)
    parts.append(_Sources.build(rows[:, 0], rows[:, 1], flux_of(mags)))
    n = galaxy_count(cfg, psf)
    rows = placer.draw(n)
    mags = power_law_mags(rng, n, *cfg.galaxy_mag_range, cfg.mag_slope)
    hlr = rng.uniform(*cfg.hlr_range_arcsec, size=n)
    q = rng.uniform(*cfg.q_range, size=n)
    pa = rng.uniform(0.0, 180.0, size=n)
    parts.append(_Sources.build(rows[:, 0], rows[:, 1], flux_of(mags), True, -1, hlr, q, pa))
    return _Sources.concat(parts)


def _injected(cfg: SimulationConfig) -> _Sources:
    """The caller's ``positions`` as sources (galaxies default to hlr 0.5″, round)."""
    pos = list(cfg.positions or ())
    if not pos:
        return _Sources.build([], [], [])
    gal = np.array([p[3] == "galaxy" for p in pos])
    shape = np.array([p[4:7] if len(p) == 7 else (0.5, 1.0, 0.0) for p in pos], float)
    return _Sources.build(
        [float(p[0]) for p in pos], [float(p[1]) for p in pos], [float(p[2]) for p in pos],
        gal, -1, np.where(gal, shape[:, 0], np.nan), np.where(gal, shape[:, 1], np.nan),
        np.where(gal, shape[:, 2], np.nan),
    )


def _draw_pairs(cfg: SimulationConfig, psf: FourierPsf, rng: np.random.Generator,
                placer: _Placer, flux_of: Callable[[np.ndarray], np.ndarray]) -> _Sources:
    """``n_pairs`` pairs of stars ``pair_separation_fwhm`` × local FWHM apart, midpoint drawn."""

    def offsets(x: float, y: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
        half = 0.5 * cfg.pair_separation_fwhm * float(psf.fwhm(x, y))
        sign = np.array([-1.0, 1.0])
        return sign * half * np.cos(angle), sign * half * np.sin(angle)

    rows = placer.draw(cfg.n_pairs, offsets)
    n = len(rows)
    mags = power_law_mags(rng, n, *cfg.pair_mag_range, cfg.mag_slope)
    ratio = rng.uniform(*cfg.pair_flux_ratio_range, size=n)
    xs, ys = [], []
    for x, y, angle in rows:
        dx, dy = offsets(x, y, angle)
        xs.append(x + dx)
        ys.append(y + dy)
    flux = np.stack([flux_of(mags), flux_of(mags) / ratio], axis=1)
    pair_id = np.repeat(np.arange(n), 2)
    return _Sources.build(np.ravel(xs), np.ravel(ys), flux.ravel(), False, pair_id)


def sky_model(cfg: SimulationConfig) -> np.ndarray:
    """The true sky (counts, float64 ``(height, width)``): level + smooth tilt and curvature.

    ``sky = sky_counts + sky_gradient · (0.4u + 0.3v + 0.2(u² − v²) + 0.1uv)`` with u, v the
    positions scaled to [−1, 1]; |the bracket| ≤ 1, so the sky stays within ± sky_gradient.
    """
    u = np.linspace(-1.0, 1.0, cfg.width)
    v = np.linspace(-1.0, 1.0, cfg.height)
    g = cfg.sky_gradient
    sky = np.add.outer(cfg.sky_counts + g * (0.3 * v - 0.2 * v**2), g * (0.4 * u + 0.2 * u**2))
    if g:
        sky += (0.1 * g * v)[:, None] * u[None, :]
    return sky


def make_wcs(cfg: SimulationConfig) -> WCS:
    """TAN WCS (TAN-SIP with ``sip``) centred on ICRS (ra0, dec0), north up at rotation 0,
    east left; written in ``sky_frame`` (the same mapping of pixels to the sky, see
    `app.engine.sky_frame.reframed`).

    SIP adds a quadratic + cubic distortion reaching ≈ 1 px at the corners.
    """
    wcs = WCS(naxis=2)
    crpix = np.array([(cfg.width + 1) / 2.0, (cfg.height + 1) / 2.0])  # FITS 1-based centre
    scale = cfg.pixel_scale_arcsec / 3600.0
    th = np.deg2rad(cfg.rotation_deg)
    wcs.wcs.crpix = crpix
    wcs.wcs.cd = scale * np.array([[-np.cos(th), np.sin(th)], [np.sin(th), np.cos(th)]])
    wcs.wcs.crval = [cfg.ra0, cfg.dec0]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    if cfg.sip:
        r = float(np.hypot(cfg.width, cfg.height)) / 2.0
        a, b = np.zeros((4, 4)), np.zeros((4, 4))
        a[2, 0], a[1, 1], a[0, 2], a[3, 0], a[1, 2] = 0.4, -0.2, 0.25, 0.15, -0.1
        b[2, 0], b[1, 1], b[0, 2], b[0, 3], b[2, 1] = -0.2, 0.35, 0.15, 0.1, 0.12
        order = np.add.outer(np.arange(4), np.arange(4))
        a /= r**order
        b /= r**order
        wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
        wcs.sip = Sip(a, b, None, None, crpix)
    wcs.pixel_shape = (cfg.width, cfg.height)
    wcs.wcs.set()
    return wcs if cfg.sky_frame == "icrs" else reframed(wcs, cfg.sky_frame)


def _stamp_sizes(cfg: SimulationConfig, psf: FourierPsf, src: _Sources, fwhm: np.ndarray,
                 tolerance: float) -> np.ndarray:
    """Per-object FFT stamp sizes: wings below ``tolerance`` counts/pixel at the edge.

    Galaxies also keep ≥ 99.9 % of their light within the stamp (9.23 major scale lengths).
    """
    size = psf.point_stamp_sizes(src.flux, src.x, src.y, tolerance)
    g = src.galaxy
    if np.any(g):
        rs = src.hlr_arcsec[g] / cfg.pixel_scale_arcsec / EXP_HLR_PER_SCALE
        ra = rs / np.sqrt(src.q[g])
        sb = np.maximum(src.flux[g] / (2 * np.pi * rs**2 * tolerance), 1.0)
        reach = np.maximum(9.23 * ra, ra * np.log(sb)) + 2.0 * fwhm[g]
        gal = np.clip(32 * np.ceil(2.0 * reach / 32.0), 64, 1024).astype(int)
        size[g] = np.maximum(size[g], gal)
    return size


@dataclass
class _RenderStats:
    """Per-object numbers found while rendering."""

    in_image: np.ndarray
    psf_sn: np.ndarray
    saturated: np.ndarray
    crb_x: np.ndarray
    crb_y: np.ndarray


def _add_stamp(image: np.ndarray, stamp: np.ndarray, x0: int,
               y0: int) -> tuple[slice, slice, slice, slice] | None:
    """Add ``stamp`` at origin (x0, y0), clipped to the image.

    Returns the (stamp y, stamp x, image y, image x) slices of the overlap, None if there is none.
    """
    h, w = image.shape
    n = stamp.shape[0]
    xa, xb, ya, yb = max(x0, 0), min(x0 + n, w), max(y0, 0), min(y0 + n, h)
    if xa >= xb or ya >= yb:
        return None
    image[ya:yb, xa:xb] += stamp[ya - y0 : yb - y0, xa - x0 : xb - x0]
    return slice(ya - y0, yb - y0), slice(xa - x0, xb - x0), slice(ya, yb), slice(xa, xb)


def _render_sources(cfg: SimulationConfig, psf: FourierPsf, src: _Sources, fwhm: np.ndarray,
                    sky: np.ndarray) -> tuple[np.ndarray, _RenderStats]:
    """The noiseless model image (float64) and per-object in-image fraction, psf_sn, saturation
    and the centroid bounds of stars.

    Objects are grouped by stamp size and rendered in batches; only the placement loops over
    objects. ``psf_sn = flux / σ_F`` with ``σ_F² = Σ P² V / (Σ P²)²`` over in-image pixels, P the
    pixelized PSF there (sum 1), V the expected variance of sky + this object alone.
    """
    n = src.x.size
    model = np.zeros((cfg.height, cfg.width))
    stats = _RenderStats(np.zeros(n), np.full(n, np.nan), np.zeros(n, bool), np.full(n, np.nan),
                         np.full(n, np.nan))
    if n == 0:
        return model, stats
    noise = np.sqrt(cfg.sky_counts / cfg.gain + (cfg.read_noise / cfg.gain) ** 2)
    sizes = _stamp_sizes(cfg, psf, src, fwhm, max(_WING_TOLERANCE * noise, 1e-3))
    rs = src.hlr_arcsec / cfg.pixel_scale_arcsec / EXP_HLR_PER_SCALE
    shape = GalaxyShape(rs, src.q, np.deg2rad(src.pa_deg))
    for size in np.unique(sizes):
        for is_gal in (False, True):
            idx = np.flatnonzero((sizes == size) & (src.galaxy == is_gal))
            step = max(1, _STAMP_CELLS // (size * size))
            for start in range(0, idx.size, step):
                chunk = idx[start : start + step]
                _render_chunk(cfg, psf, int(size), chunk, src, shape if is_gal else None,
                              sky, model, stats)
    return model, stats


def _render_chunk(cfg: SimulationConfig, psf: FourierPsf, size: int, chunk: np.ndarray,
                  src: _Sources, shape: GalaxyShape | None, sky: np.ndarray,
                  model: np.ndarray, stats: _RenderStats) -> None:
    """Render one batch of same-size stamps, add them to ``model``, fill ``stats``."""
    x, y = src.x[chunk], src.y[chunk]
    x0, y0, px, py = stamp_origin(x, y, size)
    gal = None if shape is None else shape.take(chunk)
    stamps = psf.stamps(size, x, y, px, py, src.flux[chunk], gal)
    ps = min(size, _PSF_SN_STAMP)
    off = size // 2 - ps // 2
    if gal is None:
        psfs, poff = stamps / src.flux[chunk, None, None], 0
        grads = psf.gradients(ps, x, y, px - off, py - off)
    else:
        psfs, poff = psf.stamps(ps, x, y, px - off, py - off, np.ones(chunk.size)), off
    for j, i in enumerate(chunk):
        sl = _add_stamp(model, stamps[j], int(x0[j]), int(y0[j]))
        if sl is None:
            continue
        sy, sx, iy, ix = sl
        own = stamps[j][sy, sx]
        stats.in_image[i] = own.sum() / src.flux[i]
        stats.saturated[i] = bool((own + sky[iy, ix]).max() > cfg.saturation)
        stats.psf_sn[i] = _psf_sn(cfg, src.flux[i], psfs[j], int(x0[j]) + poff,
                                  int(y0[j]) + poff, stamps[j], int(x0[j]), int(y0[j]), sky)
        if gal is None:
            bounds = _centroid_bounds(cfg, src.flux[i], psfs[j][off : off + ps, off : off + ps],
                                      grads[0][j], grads[1][j], int(x0[j]) + off,
                                      int(y0[j]) + off, stamps[j], int(x0[j]), int(y0[j]), sky)
            stats.crb_x[i], stats.crb_y[i] = bounds


def _on_image(cfg: SimulationConfig, n: int, px0: int, py0: int, own: np.ndarray, x0: int,
              y0: int, sky: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """The in-image part of an ``n``-pixel stamp at (px0, py0) lying within the object's own
    stamp ``own`` (origin x0, y0): its slices, and the expected variance there,
    ``V = (sky + own)/gain + (read_noise/gain)²`` counts². None if off the image."""
    h, w = sky.shape
    xa, xb, ya, yb = max(px0, 0), min(px0 + n, w), max(py0, 0), min(py0 + n, h)
    if xa >= xb or ya >= yb:
        return None
    var = (sky[ya:yb, xa:xb] + own[ya - y0 : yb - y0, xa - x0 : xb - x0]) / cfg.gain
    var += (cfg.read_noise / cfg.gain) ** 2
    return (slice(ya - py0, yb - py0), slice(xa - px0, xb - px0)), var


def _psf_sn(cfg: SimulationConfig, flux: float, psf: np.ndarray, px0: int, py0: int,
            own: np.ndarray, x0: int, y0: int, sky: np.ndarray) -> float:
    """Expected S/N of PSF photometry: ``flux ΣP² / sqrt(Σ P² V)`` over in-image pixels.

    ``psf`` (sum 1, origin px0, py0) lies within the object's own stamp ``own`` (origin x0, y0).
    """
    on = _on_image(cfg, psf.shape[0], px0, py0, own, x0, y0, sky)
    if on is None:
        return float("nan")
    (sy, sx), var = on
    p2 = psf[sy, sx] * psf[sy, sx]
    return float(flux * p2.sum() / np.sqrt((p2 * var).sum()))


def _centroid_bounds(cfg: SimulationConfig, flux: float, psf: np.ndarray, dx: np.ndarray,
                     dy: np.ndarray, px0: int, py0: int, own: np.ndarray, x0: int, y0: int,
                     sky: np.ndarray) -> tuple[float, float]:
    """Cramér–Rao bounds (σx, σy) of a star's centroid over its in-image pixels
    (:func:`~app.engine.psf_fourier.fisher_bounds`; flux and position free, sky known)."""
    on = _on_image(cfg, psf.shape[0], px0, py0, own, x0, y0, sky)
    if on is None:
        return float("nan"), float("nan")
    (sy, sx), var = on
    bx, by = fisher_bounds(psf[None, sy, sx], dx[None, sy, sx], dy[None, sy, sx],
                           np.array([flux]), var[None])
    return float(bx[0]), float(by[0])


def _observe(cfg: SimulationConfig, sky: np.ndarray, model: np.ndarray,
             rng: np.random.Generator, planes: MaskPlanes) -> tuple[np.ndarray, ...]:
    """Noisy, saturated, background-subtracted image, its variance and mask, by row blocks.

    Electrons ~ Poisson((sky + model)·gain) + Normal(0, read_noise); SAT where the true or
    the observed raw value reaches ``saturation`` (those pixels then read ``saturation``).
    With ``sky_in`` the sky is not subtracted.
    """
    h, w = model.shape
    image = np.empty((h, w), np.float32)
    variance = np.empty((h, w), np.float32)
    mask = np.zeros((h, w), np.int32)
    sat_bit = np.int32(planes.bitmask("SAT"))
    var0 = (cfg.read_noise / cfg.gain) ** 2
    for r0 in range(0, h, _NOISE_ROWS):
        b = slice(r0, min(r0 + _NOISE_ROWS, h))
        expected = sky[b] + model[b]
        variance[b] = expected / cfg.gain + var0
        raw = rng.poisson(np.maximum(expected * cfg.gain, 0.0)).astype(float)
        if cfg.read_noise > 0:
            raw += rng.normal(0.0, cfg.read_noise, size=raw.shape)
        raw /= cfg.gain
        sat = (expected > cfg.saturation) | (raw >= cfg.saturation)
        raw[sat] = cfg.saturation
        image[b] = raw if cfg.sky_in else raw - sky[b]
        mask[b][sat] |= sat_bit
    return image, variance, mask


def _interpolate_bad_columns(cfg: SimulationConfig, image: np.ndarray, variance: np.ndarray,
                             mask: np.ndarray, planes: MaskPlanes) -> None:
    """Replace bad columns by linear interpolation between the nearest good ones (ISR style)."""
    bad = sorted(set(cfg.bad_column_list))
    if not bad:
        return
    bad_set = set(bad)
    bits = np.int32(planes.bitmask(["BAD", "INTRP"]))
    for x in bad:
        left = next((c for c in range(x - 1, -1, -1) if c not in bad_set), None)
        right = next((c for c in range(x + 1, cfg.width) if c not in bad_set), None)
        for plane in (image, variance):
            if left is None and right is None:
                plane[:, x] = 0.0
            elif left is None or right is None:
                plane[:, x] = plane[:, left if right is None else right]
            else:
                t = (x - left) / (right - left)
                plane[:, x] = (1 - t) * plane[:, left] + t * plane[:, right]
        mask[:, x] |= bits


def _truth_table(cfg: SimulationConfig, src: _Sources, fwhm: np.ndarray, wcs: WCS,
                 calib: PhotoCalib, stats: _RenderStats) -> Table:
    """The truth catalog, one row per object, with units and descriptions."""
    n = src.x.size
    ra, dec = pixel_to_icrs(wcs, frame_of(wcs), src.x, src.y)
    if n > 1:
        nearest = cKDTree(np.column_stack([src.x, src.y])).query(
            np.column_stack([src.x, src.y]), k=2)[0][:, 1]
    else:
        nearest = np.full(n, np.inf)
    cols = [
        ("id", np.arange(n, dtype=np.int64), None, "object id (row number)"),
        ("x", src.x, "pix", "true centroid x, 0-based, integer at pixel centres"),
        ("y", src.y, "pix", "true centroid y, 0-based, integer at pixel centres"),
        ("ra", np.asarray(ra, float), "deg", "ICRS right ascension of (x, y) through the WCS"),
        ("dec", np.asarray(dec, float), "deg", "ICRS declination of (x, y) through the WCS"),
        ("flux", src.flux, "ct", "total flux in counts (exact sum of the rendered light)"),
        ("flux_njy", src.flux * calib.njy_per_count, "nJy", "total flux calibrated"),
        ("mag", cfg.magzero - 2.5 * np.log10(src.flux), "mag", "AB magnitude of the total flux"),
        ("kind", np.where(src.galaxy, "galaxy", "star"), None, "'star' or 'galaxy'"),
        ("is_pair", src.pair_id >= 0, None, "member of a close pair of stars"),
        ("pair_id", src.pair_id, None, "pair number, -1 when not in a pair"),
        ("saturated", stats.saturated, None, "its own light + sky exceeds saturation somewhere"),
        ("hlr_arcsec", src.hlr_arcsec, "arcsec",
         "galaxy circularized half-light radius sqrt(a b) before PSF (NaN for stars)"),
        ("q", src.q, None, "galaxy axis ratio b/a (NaN for stars)"),
        ("pa_deg", src.pa_deg, "deg",
         "galaxy major axis angle, counter-clockwise from +x (NaN for stars)"),
        ("psf_sn", stats.psf_sn, None,
         "expected PSF-flux S/N: flux / sqrt(sum P^2 V / (sum P^2)^2), sky + own light"),
        ("nearest_px", nearest, "pix", "distance to the nearest other object"),
        ("fwhm_px", fwhm, "pix", "PSF FWHM here (2.3548 x adaptive-moment determinant radius)"),
        ("crb_x", stats.crb_x, "pix",
         "Cramer-Rao bound of a star's centroid x (flux and position free, sky known; NaN for "
         "galaxies)"),
        ("crb_y", stats.crb_y, "pix", "Cramer-Rao bound of a star's centroid y"),
        ("in_image_fraction", stats.in_image, None, "fraction of the flux on the image"),
    ]
    return Table([Column(data, name=name, unit=unit, description=desc)
                  for name, data, unit, desc in cols],
                 meta={"PIXSCALE": cfg.pixel_scale_arcsec})


def make_psf(cfg: SimulationConfig) -> FourierPsf:
    """The configuration's true PSF (``psf_family``, FWHM at the centre, its variation)."""
    if cfg.psf_family == "moffat":
        return MoffatPsf(cfg.fwhm_px, cfg.moffat_beta, ellipticity=cfg.psf_ellipticity,
                         angle_deg=cfg.psf_angle_deg, gradient=cfg.fwhm_gradient,
                         width=cfg.width, height=cfg.height)
    if cfg.psf_family == "aberrated":
        # the optics make the size and shape vary; fwhm_gradient does not apply
        return AberratedPsf(cfg.fwhm_px, width=cfg.width, height=cfg.height, optics=cfg.optics,
                            ellipticity=cfg.psf_ellipticity, angle_deg=cfg.psf_angle_deg)
    return KolmogorovPsf(cfg.fwhm_px, gradient=cfg.fwhm_gradient, width=cfg.width,
                         height=cfg.height)


def simulate_exposure(config: SimulationConfig) -> SimulatedExposure:
    """Simulate a background-subtracted calexp (or a frame with its sky in) with exactly known
    sources.

    Parameters
    ----------
    config
        What to simulate; the same config (seed included) gives identical pixels.

    Returns
    -------
    SimulatedExposure
        ``exposure`` (image = noisy sky + sources − true sky, counts; ``background`` = that
        sky; with ``sky_in`` the image keeps the sky and ``background`` is None; variance in
        counts²; SAT/BAD/INTRP/EDGE mask; WCS; PhotoCalib; ``psf=None``),
        ``truth`` (one row per object), ``psf`` (the exact PSF) and ``model`` (noiseless
        sources, float64 counts).
    """
    cfg = config
    rng = np.random.default_rng(cfg.seed)
    psf = make_psf(cfg)
    src = _draw_sources(cfg, psf, rng)
    fwhm = np.asarray(psf.fwhm(src.x, src.y), float).reshape(-1)
    sky = sky_model(cfg)
    model, stats = _render_sources(cfg, psf, src, fwhm, sky)
    planes = MaskPlanes()
    image, variance, mask = _observe(cfg, sky, model, rng, planes)
    _interpolate_bad_columns(cfg, image, variance, mask, planes)
    if cfg.edge_width:
        e = cfg.edge_width
        border = np.ones(mask.shape, bool)
        border[e:-e, e:-e] = False
        mask[border] |= np.int32(planes.bitmask("EDGE"))
    wcs = make_wcs(cfg)
    calib = PhotoCalib.from_magzero(cfg.magzero)
    info = ExposureInfo(
        visit=cfg.visit, detector=cfg.detector, band=cfg.band,
        physical_filter=cfg.physical_filter, mjd=cfg.mjd, exptime=cfg.exptime,
        extra={"simulated": True, "seed": cfg.seed, "fwhm_px": cfg.fwhm_px,
               "sky_counts": cfg.sky_counts, "saturation": cfg.saturation,
               **({} if cfg.psf_family == "kolmogorov" else {"psf_family": cfg.psf_family}),
               **({"sky_in": True} if cfg.sky_in else {})},
    )
    exposure = Exposure(image=image, mask=mask, variance=variance, planes=planes, wcs=wcs,
                        psf=None, photo_calib=calib, info=info,
                        background=None if cfg.sky_in else sky.astype(np.float32))
    truth = _truth_table(cfg, src, fwhm, wcs, calib, stats)
    return SimulatedExposure(exposure=exposure, truth=truth, psf=psf, model=model)
