"""Cosmic rays rendered into an image, for simulations and tests, with the pixels each one hit.

What a thick, back-illuminated CCD records (LSST's sensors: 100 µm of silicon, 10 µm pixels):

- **tracks**: muons crossing the silicon at zenith angle θ, the flux through a plane following
  cos³θ (sea-level muons ∝ cos²θ per solid angle, times the projection cosθ), so cosθ = u^¼.
  A track is ``thickness × tanθ`` pixels long: most are a pixel or two (near-vertical muons
  are the "single-pixel hits"), a few per cent reach tens of pixels.
- **worms**: electrons (Compton or β from the glass and the dewar, a few tens to hundreds of
  keV) that scatter along curled paths of a few to ~25 pixels, depositing about twice a
  muon's charge per µm, more towards the end of their range.
- **spots**: low-energy electrons and X-rays absorbed in a point, 300–5000 electrons.

Energy: the charge deposited on each short step of a path follows a Landau distribution, drawn
as its usual approximation, the Moyal distribution (MPV + width × −ln Z², Z ~ N(0, 1)), around
the most probable deposit of a minimum-ionizing particle, ≈ 75 e⁻/µm in thin silicon; delta
rays (the long tail) are capped at 30 × the step's MPV. Charge diffuses on its way to the
pixel gates, the more the deeper it was freed: a Gaussian of σ = ``diffusion_px`` × √(depth /
thickness), so a track is sharp at one end and softer at the other. Every step's charge is
spread over the pixels by that Gaussian integrated over each pixel (erf differences), so the
pixels of a ray sum to its charge (less what fell off the image).

The shot noise of the cosmic ray's own charge is not drawn: with a Fano factor of ~0.1 in
silicon it is a few per cent of the image noise on a pixel of a few thousand electrons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import erf

from app.engine.exposure import Exposure

KINDS = ("track", "worm", "spot")
MIP_MPV_E_PER_UM = 75.0  # most probable charge a minimum-ionizing particle frees in Si
STEP_PX = 0.25  # projected path sampled every quarter pixel
MAX_ZENITH_DEG = 85.0  # longest tracks: thickness × tan 85° ≈ 11 × thickness
DELTA_RAY_CAP = 30.0  # a step deposits at most this × its most probable charge
STENCIL = 3  # charge spread over ±3 pixels of each step (σ ≤ 0.6 px leaves < 1e-6 outside)


@dataclass(frozen=True, kw_only=True)
class CosmicRayConfig:
    """How many cosmic rays, of which kinds, in what detector; same config + seed ⇒ same rays.

    ``n_rays`` is direct; a ground-based CCD records roughly 1–2 per cm² per minute
    (4k × 4k 10 µm pixels, 30 s: ~15–30), space ones ~100× more, and tests use many more
    for their statistics.
    """

    n_rays: int = 100
    fractions: tuple[float, float, float] = (0.6, 0.15, 0.25)  # track, worm, spot
    thickness_um: float = 100.0
    pixel_um: float = 10.0
    gain: float = 1.0  # electrons per count
    diffusion_px: float = 0.35  # σ of the charge freed at the back of the silicon
    landau_width: float = 0.12  # Moyal width / MPV of a segment's deposit
    worm_length_px: tuple[float, float] = (3.0, 25.0)
    worm_e_per_um: float = 150.0  # electrons: about twice a muon's ionization
    spot_electrons: tuple[float, float] = (300.0, 5000.0)  # log-uniform
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.n_rays >= 0, "n_rays must be ≥ 0"),
            (len(self.fractions) == 3 and min(self.fractions) >= 0 and sum(self.fractions) > 0,
             "fractions must be three non-negative numbers (track, worm, spot), not all 0"),
            (self.thickness_um > 0 and self.pixel_um > 0, "thickness and pixel size must be > 0"),
            (self.gain > 0, "gain must be positive"),
            (0 <= self.diffusion_px <= 0.6, "diffusion_px must be within [0, 0.6]"),
            (self.landau_width > 0, "landau_width must be positive"),
            (0 < self.worm_length_px[0] <= self.worm_length_px[1], "bad worm_length_px range"),
            (0 < self.spot_electrons[0] <= self.spot_electrons[1], "bad spot_electrons range"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class CosmicRays:
    """Rendered cosmic rays: one row per ray, and their charge as sparse pixels.

    Per ray (arrays of length ``n``): ``kind`` (index into :data:`KINDS`), start ``x0, y0`` and
    end ``x1, y1`` of the projected path (pixels), ``electrons`` freed, ``counts`` landed on the
    image (ADU, after the gain). Per (pixel, ray) deposit: ``pix_y, pix_x, pix_counts,
    pix_ray``; a pixel two rays crossed appears twice.
    """

    shape: tuple[int, int]
    kind: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    electrons: np.ndarray
    counts: np.ndarray
    pix_y: np.ndarray
    pix_x: np.ndarray
    pix_counts: np.ndarray
    pix_ray: np.ndarray

    def __len__(self) -> int:
        return len(self.kind)

    def deposit(self) -> np.ndarray:
        """The charge of all rays as a float32 image (counts)."""
        out = np.zeros(self.shape, np.float32)
        np.add.at(out, (self.pix_y, self.pix_x), self.pix_counts.astype(np.float32))
        return out

    def hit(self, min_counts: float) -> np.ndarray:
        """Boolean image: pixels that received at least ``min_counts`` from the rays together."""
        return self.deposit() >= min_counts

    def peak_counts(self) -> np.ndarray:
        """Each ray's brightest pixel (counts of that ray alone)."""
        out = np.zeros(len(self))
        np.maximum.at(out, self.pix_ray, self.pix_counts)
        return out

    def peak_pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """(y, x) of each ray's brightest pixel (−1 for a ray that missed the image)."""
        order = np.lexsort((-self.pix_counts, self.pix_ray))
        ray = self.pix_ray[order]
        first = np.ones(len(ray), bool)
        first[1:] = ray[1:] != ray[:-1]
        py = np.full(len(self), -1, np.int64)
        px = np.full(len(self), -1, np.int64)
        py[ray[first]] = self.pix_y[order][first]
        px[ray[first]] = self.pix_x[order][first]
        return py, px


@dataclass
class _Paths:
    """Sampled points of every ray: position (px), depth fraction, charge (e⁻), ray index."""

    x: np.ndarray
    y: np.ndarray
    depth: np.ndarray
    charge: np.ndarray
    ray: np.ndarray


def _moyal(rng: np.random.Generator, mpv: np.ndarray, width: float) -> np.ndarray:
    """Landau-like deposits around ``mpv``: Moyal(mpv, width·mpv), capped for delta rays."""
    z = rng.standard_normal(np.shape(mpv))
    x = mpv * (1.0 + width * -np.log(np.maximum(z * z, 1e-300)))
    return np.clip(x, 0.0, DELTA_RAY_CAP * mpv)


def _tracks(cfg: CosmicRayConfig, n: int, rng: np.random.Generator,
            start: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Points of ``n`` muon tracks from ``start`` (x, y); returns the points and the ends."""
    if n == 0:
        return [], start.copy()
    t_px = cfg.thickness_um / cfg.pixel_um
    cos_lo = np.cos(np.radians(MAX_ZENITH_DEG))
    cos_t = np.maximum(rng.uniform(size=n) ** 0.25, cos_lo)
    length = t_px * np.sqrt(1.0 - cos_t**2) / cos_t
    phi = rng.uniform(0, 2 * np.pi, size=n)
    end = start + length[:, None] * np.column_stack([np.cos(phi), np.sin(phi)])
    n_pts = np.maximum(np.ceil(length / STEP_PX).astype(int), 4)
    ray = np.repeat(np.arange(n), n_pts)
    first = np.concatenate([[0], np.cumsum(n_pts)[:-1]])
    s = (np.arange(len(ray)) - first[ray] + 0.5) / n_pts[ray]  # fraction along = depth
    mpv = MIP_MPV_E_PER_UM * (cfg.thickness_um / cos_t) / n_pts
    charge = _moyal(rng, mpv[ray], cfg.landau_width)
    from_back = rng.uniform(size=n) < 0.5  # entering from the front or the back
    depth = np.where(from_back[ray], 1.0 - s, s)
    xy = start[ray] + s[:, None] * (end - start)[ray]
    points = np.column_stack([xy, depth, charge])
    return np.split(points, np.cumsum(n_pts)[:-1]), end


def _worms(cfg: CosmicRayConfig, n: int, rng: np.random.Generator,
           start: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Points of ``n`` curled electron paths: a persistent random walk in the plane."""
    lo, hi = cfg.worm_length_px
    pieces, ends = [], np.empty((n, 2))
    for i in range(n):
        length = rng.uniform(lo, hi)
        m = max(int(np.ceil(length / STEP_PX)), 4)
        angle = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0.0, 0.35, m))
        steps = STEP_PX * np.column_stack([np.cos(angle), np.sin(angle)])
        xy = start[i] + np.cumsum(steps, axis=0) - steps[0]
        s = np.arange(m) / m
        # ionization rises towards the end of the electron's range
        mpv = cfg.worm_e_per_um * STEP_PX * cfg.pixel_um * (1.0 + 2.0 * s**2)
        charge = _moyal(rng, mpv, cfg.landau_width)
        depth = np.clip(rng.uniform() + np.cumsum(rng.normal(0.0, 0.03, m)), 0.0, 1.0)
        pieces.append(np.column_stack([xy, depth, charge]))
        ends[i] = xy[-1]
    return pieces, ends


def _spots(cfg: CosmicRayConfig, n: int, rng: np.random.Generator,
           start: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """``n`` point-like absorptions: log-uniform charge at one random depth."""
    lo, hi = np.log(cfg.spot_electrons)
    charge = np.exp(rng.uniform(lo, hi, n))
    depth = rng.uniform(size=n)
    pieces = [np.array([[start[i, 0], start[i, 1], depth[i], charge[i]]]) for i in range(n)]
    return pieces, start.copy()


def _draw_paths(cfg: CosmicRayConfig, shape: tuple[int, int], rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, _Paths]:
    """Kinds, starts and ends of the rays, and their sampled points."""
    h, w = shape
    p = np.asarray(cfg.fractions, float)
    kind = rng.choice(3, size=cfg.n_rays, p=p / p.sum())
    start = rng.uniform([-0.5, -0.5], [w - 0.5, h - 0.5], size=(cfg.n_rays, 2))
    end = np.empty_like(start)
    pieces: list[np.ndarray] = [np.empty((0, 4))] * cfg.n_rays
    for k, make in enumerate((_tracks, _worms, _spots)):
        idx = np.flatnonzero(kind == k)
        got, end[idx] = make(cfg, len(idx), rng, start[idx])
        for i, piece in zip(idx, got, strict=True):
            pieces[i] = piece
    pts = np.concatenate(pieces) if pieces else np.empty((0, 4))
    ray = np.repeat(np.arange(cfg.n_rays), [len(q) for q in pieces])
    return kind, start, end, _Paths(pts[:, 0], pts[:, 1], pts[:, 2], pts[:, 3], ray)


def _spread(paths: _Paths, diffusion: float, shape: tuple[int, int]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each point's charge over its pixels: (y, x, electrons, ray), summed per (pixel, ray)."""
    h, w = shape
    sigma = np.maximum(diffusion * np.sqrt(paths.depth), 0.02)
    ix, iy = np.rint(paths.x).astype(np.int64), np.rint(paths.y).astype(np.int64)
    off = np.arange(-STENCIL, STENCIL + 1)
    edges = off[None, :] - 0.5
    s2 = (np.sqrt(2.0) * sigma)[:, None]

    def weights(centre: np.ndarray, pixel: np.ndarray) -> np.ndarray:
        d = (pixel - centre)[:, None]
        return 0.5 * (erf((edges + 1.0 - d) / s2) - erf((edges - d) / s2))

    wx, wy = weights(paths.x, ix), weights(paths.y, iy)
    q = paths.charge[:, None, None] * wy[:, :, None] * wx[:, None, :]
    yy = np.broadcast_to((iy[:, None] + off)[:, :, None], q.shape)
    xx = np.broadcast_to((ix[:, None] + off)[:, None, :], q.shape)
    ray = np.broadcast_to(paths.ray[:, None, None], q.shape)
    keep = (q > 1e-3) & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    key = (ray[keep] * h + yy[keep]) * w + xx[keep]
    uniq, inverse = np.unique(key, return_inverse=True)
    charge = np.bincount(inverse, weights=q[keep], minlength=len(uniq))
    rest, px = np.divmod(uniq, w)
    r, py = np.divmod(rest, h)
    return py, px, charge, r


def render_cosmic_rays(shape: tuple[int, int], config: CosmicRayConfig) -> CosmicRays:
    """Draw ``config.n_rays`` cosmic rays on an image of ``shape`` (height, width).

    Returns
    -------
    CosmicRays
        The rays (kind, path ends, charge) and the counts each deposited on each pixel; add
        them to an exposure with :func:`add_cosmic_rays`.
    """
    rng = np.random.default_rng(config.seed)
    kind, start, end, paths = _draw_paths(config, shape, rng)
    py, px, electrons, ray = _spread(paths, config.diffusion_px, shape)
    counts = electrons / config.gain
    total_e = np.bincount(paths.ray, weights=paths.charge, minlength=config.n_rays)
    landed = np.bincount(ray, weights=counts, minlength=config.n_rays)
    return CosmicRays(shape=tuple(shape), kind=kind, x0=start[:, 0], y0=start[:, 1],
                      x1=end[:, 0], y1=end[:, 1], electrons=total_e, counts=landed,
                      pix_y=py, pix_x=px, pix_counts=counts, pix_ray=ray)


def add_cosmic_rays(exposure: Exposure, rays: CosmicRays, *, gain: float) -> None:
    """Add the rays' charge to ``exposure`` in place, as the camera would have recorded it.

    The variance grows by the charge / ``gain`` (counts²): ISR computes a raw frame's variance
    from its pixel values, so a cosmic-ray pixel is noisier in the variance plane too.
    Saturation is not applied: a ray's brightest pixel holds a few thousand electrons, far
    below a full well.
    """
    if rays.shape != exposure.shape:
        raise ValueError(f"cosmic rays drawn for shape {rays.shape}, exposure is "
                         f"{exposure.shape}")
    w = exposure.width
    flat, inverse = np.unique(rays.pix_y * w + rays.pix_x, return_inverse=True)
    dep = np.bincount(inverse, weights=rays.pix_counts, minlength=len(flat)).astype(np.float32)
    ys, xs = np.divmod(flat, w)
    exposure.image[ys, xs] += dep
    exposure.variance[ys, xs] += dep / np.float32(gain)
