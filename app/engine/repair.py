"""Cosmic rays found, masked and interpolated: pipe_tasks' RepairTask with meas_algorithms' CR.cc.

:func:`repair_cosmic_rays` is RepairTask.cosmicRay; :func:`find_cosmic_rays` is CR.cc's
``findCosmicRays``; :func:`repair` is RepairTask.run (defects, then cosmic rays). A pixel is a
cosmic ray when it is sharper than the PSF allows any star to be:

1. (condition 2) it stands ``minSigma`` of its own noise σ above the mean of one opposite pair
   of its 8 neighbours (N–S, W–E, SW–NE, NW–SE), and is not below the background;
2. (condition 3) for one pair, with the background taken off,
   ``thres × (peak − cond3_fac σ_peak) > mean + cond3_fac σ_mean``, where ``thres`` is
   ``cond3_fac2`` × the PSF's own neighbour/peak ratio in that direction: a star's neighbours
   carry at least that ratio of its peak, so only something sharper than the PSF passes;
3. (condition 4) it carries no BAD, INTRP, SAT or NO_DATA bit and has no INTRP neighbour.

The pixels found are repaired as the search goes on (which lets the next pixel of a track
pass), grouped into 8-connected cosmic rays, and (condition 1) a cosmic ray is kept only if
its pixels hold ``min_DN`` counts above the background, and ``minSigma`` times their noise.
Each is interpolated, then grown up to ``niteration`` times: neighbours that pass conditions 2
and 3 with ``minSigma / 2`` and ``cond3_fac = 0`` against the repaired image join it (and,
here, neighbours standing out from their own interpolation; see below), then one last ring of
neighbours. Finally every cosmic-ray pixel is interpolated (:mod:`app.engine.interpolate`) and
gets CR | INTRP, or with ``keepCRs`` only CR, its value left alone. The variance plane is not
changed (as in LSST).

Speed: conditions 2 and 3 are tested on whole rows of the image at once only in a cheap
necessary form (condition 2 against the lowest pair); the few pixels that pass, and every
later step, work on pixel lists: on a 4000 × 4072 calexp, 0.20 s of CPU without a cosmic ray,
0.25 s with 100, 1.5 s with 3000 (bench/repair.py).

Departures from LSST, each for a reason:

- LSST replaces pixels as a raster scan meets them, so a pixel sees its earlier neighbours
  repaired; here the search is repeated on the neighbours of the pixels found, with those
  repaired, until no more pass (the same fixed point without the scan-order bias). Growing
  tests all cosmic rays' neighbours at once in each round, likewise.
- Pixels found are replaced by their interpolation from the pixels around them that are
  not cosmic rays, not by the passing pair's mean: a star pixel flagged by a noise
  fluctuation then leaves no hole that makes its neighbours look sharp.
- A pixel grows into a cosmic ray only if it is not brighter (by 2σ) than the brightest
  pixel of the ray next to it (the brightest it grew from): a ray's edges are fainter than
  the ray, while a star's core next to a falsely flagged pixel of its flank is brighter.
  Without this, at FWHM 1.5 px, growth from such a pixel ate star cores (2 core pixels
  among 1000 stars).
- Growing also takes a neighbour that stands ``minSigma / 2`` σ above the background and
  its own interpolation from the pixels that are not cosmic rays, and is sharper than the
  PSF against that interpolation (condition 3 with the interpolation for the pair's mean);
  then one more ring of neighbours is taken. LSST's test alone cannot follow a ray where
  it is two pixels wide (every pair through the twin pixel averages half the value), and
  CR.cc in effect (see :mod:`app.engine.interpolate`) grows against background-level
  holes, which is more aggressive and eats stars. Measured (tests/engine/test_repair.py,
  300 rays on 1024² with 300 stars; footprints detection finds on the rays at 5σ, before →
  after repair): FWHM 4 px 171 → 3, 2.5 px 224 → 23, 1.5 px 265 → 139.
- The PSF ratios are the lowest of the PSF at the centre and near the four corners (LSST: at
  its average position only), so a PSF that is sharper in a corner does not make that
  corner's stars look sharper than the PSF.
- Condition 1 asks a cosmic ray for ``minSigma`` × its noise (√ΣV over its pixels) as well
  as ``min_DN`` counts: ``min_DN`` is in counts, 4.7σ of a 1000-count sky, so pure-noise
  pixels passed it (12 on a 4000 × 4072 simulated field without a cosmic ray), and at FWHM
  1.5 px so did noise-lifted pixels on star flanks; a ray below that is not detected anyway.
- A pixel below the background is never a cosmic ray (CR.cc: below zero, on an image whose
  background it is told but which need not have it subtracted); grown pixels must not carry
  BAD, INTRP, SAT or NO_DATA either (CR.cc does not check them when growing).
- The background is the median of a regular subsample of about a million finite pixels off
  NO_DATA, BAD and SAT (RepairTask: the median of all pixels, or a background model when its
  bin is smaller than the image, which its defaults never make).
- The interpolation is the one CR.cc intends, not the background + noise it in effect
  writes (see :mod:`app.engine.interpolate`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from app.engine.config import FindCosmicRaysConfig, RepairConfig
from app.engine.exposure import Exposure
from app.engine.interpolate import MAX_GAP, blocked_pixels, interpolate_pixels, sorted_unique
from app.engine.psf import PsfModel, psf_fwhm

log = logging.getLogger(__name__)

CR_BAD_PLANES = ["BAD", "INTRP", "SAT", "NO_DATA"]  # CR.cc's badMask
INTERP_BAD_PLANES = ["BAD", "SAT", "NO_DATA", "CR"]  # never read when filling pixels
BACKGROUND_PLANES = ["BAD", "SAT", "NO_DATA"]
BACKGROUND_SAMPLES = 1_000_000
BLOCK_ROWS = 256  # rows tested at a time by the whole-image pass (its temporaries stay small)
MAX_SEARCH_ROUNDS = 20  # repetitions of the search on the neighbours of pixels found
NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


class TooManyCosmicRaysError(ValueError):
    """More pixels look like cosmic rays than ``nCrPixelMax`` (LSST's TooManyCosmicRays)."""


@dataclass(frozen=True)
class RepairResult:
    """What :func:`repair_cosmic_rays` did.

    ``y``, ``x`` (array indices) and ``cr_id`` (0..n_cosmic_rays−1) list the cosmic-ray pixels;
    ``skipped`` says why nothing was done, when nothing was.
    """

    n_cosmic_rays: int
    y: np.ndarray
    x: np.ndarray
    cr_id: np.ndarray
    interpolated: bool
    background: float
    thresholds: tuple[float, float, float]  # condition-3 (horizontal, vertical, diagonal)
    skipped: str | None = None
    n_defect_pixels: int = 0

    @property
    def n_pixels(self) -> int:
        return len(self.y)

    @classmethod
    def nothing(cls, reason: str, n_defect_pixels: int = 0) -> RepairResult:
        empty = np.zeros(0, np.int64)
        return cls(0, empty, empty, empty, False, float("nan"), (np.nan,) * 3, reason,
                   n_defect_pixels)


def cond3_thresholds(psf: PsfModel, width: int, height: int, cond3_fac2: float
                     ) -> tuple[float, float, float]:
    """``cond3_fac2`` × the PSF's neighbour/peak ratios along rows, columns and diagonals.

    The PSF image is evaluated centred on a pixel (where a star is sharpest) at the image's
    centre and near its four corners, and the lowest ratio in each direction is used.
    """
    ratios = []
    for fx, fy in ((0.5, 0.5), (0.1, 0.1), (0.9, 0.1), (0.1, 0.9), (0.9, 0.9)):
        k = np.asarray(psf.kernel(fx * (width - 1), fy * (height - 1)), float)
        c = k.shape[0] // 2
        peak = k[c, c]
        if k.shape[0] < 3 or not peak > 0:
            raise ValueError("the PSF's kernel must be at least 3×3 with a positive centre")
        ratios.append(((k[c, c - 1] + k[c, c + 1]) / 2 / peak,
                       (k[c - 1, c] + k[c + 1, c]) / 2 / peak,
                       (k[c - 1, c - 1] + k[c + 1, c + 1] + k[c - 1, c + 1] + k[c + 1, c - 1])
                       / 4 / peak))
    h, v, d = np.min(np.array(ratios), axis=0)
    return float(cond3_fac2 * h), float(cond3_fac2 * v), float(cond3_fac2 * d)


def median_background(exposure: Exposure) -> float:
    """Median of a regular subsample of the usable finite pixels: the level CR.cc measures
    peaks against."""
    step = max(1, int(np.sqrt(exposure.image.size / BACKGROUND_SAMPLES)))
    sub = exposure.image[::step, ::step]
    bad = exposure.planes.any(exposure.mask[::step, ::step], BACKGROUND_PLANES)
    values = sub[~bad & np.isfinite(sub)]
    return float(np.median(values)) if len(values) else 0.0


def _candidates(image: np.ndarray, variance: np.ndarray, min_sigma: float, background: float
                ) -> np.ndarray:
    """Flat indices of interior pixels passing condition 2 against their lowest pair.

    ``v ≥ min(pair means) + minSigma σ`` is necessary for condition 2 (it asks it of one
    pair); written as ``d = 2v − min(pair sums) > 0 and d² ≥ 4 minSigma² V``, no square root.
    """
    h, w = image.shape
    found = []
    k = np.float32(4.0 * min_sigma * min_sigma)
    for r0 in range(1, h - 1, BLOCK_ROWS):
        r1 = min(r0 + BLOCK_ROWS, h - 1)
        up, mid, dn = image[r0 - 1:r1 - 1], image[r0:r1], image[r0 + 1:r1 + 1]
        lowest = up[:, 1:-1] + dn[:, 1:-1]
        np.minimum(lowest, mid[:, :-2] + mid[:, 2:], out=lowest)
        np.minimum(lowest, up[:, :-2] + dn[:, 2:], out=lowest)
        np.minimum(lowest, dn[:, :-2] + up[:, 2:], out=lowest)
        centre = mid[:, 1:-1]
        d = np.subtract(centre + centre, lowest, out=lowest)
        ok = d > 0
        ok &= centre >= np.float32(background)
        np.multiply(d, d, out=d)
        ok &= d >= k * variance[r0:r1, 1:-1]
        ys, xs = np.nonzero(ok)
        found.append((ys + r0) * w + xs + 1)
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def _sharp(image: np.ndarray, variance: np.ndarray, ys: np.ndarray, xs: np.ndarray,
           min_sigma: float, cond3_fac: float, thresholds: tuple[float, float, float],
           background: float) -> np.ndarray:
    """Whether interior pixels (ys, xs) pass conditions 2 and 3."""
    def v(dy: int, dx: int) -> np.ndarray:
        return image[ys + dy, xs + dx].astype(np.float64)

    def var(dy: int, dx: int) -> np.ndarray:
        return variance[ys + dy, xs + dx].astype(np.float64)

    th, tv, td = thresholds
    pairs = (((-1, 0), (1, 0), tv), ((0, -1), (0, 1), th),
             ((-1, -1), (1, 1), td), ((1, -1), (-1, 1), td))
    centre = v(0, 0)
    cond2 = np.zeros(len(ys), bool)
    cond3 = np.zeros(len(ys), bool)
    with np.errstate(invalid="ignore"):
        sigma = np.sqrt(var(0, 0))
        peak = centre - background
        for a, b, t in pairs:
            mean = (v(*a) + v(*b)) / 2
            cond2 |= centre >= mean + min_sigma * sigma
            dmean = np.sqrt(var(*a) + var(*b)) / 2
            cond3 |= t * (peak - cond3_fac * sigma) > mean - background + cond3_fac * dmean
    return cond2 & cond3 & (centre >= background)


def _neighbours(flat: np.ndarray, shape: tuple[int, int], taken: np.ndarray) -> np.ndarray:
    """Sorted flat indices of the interior 8-neighbours of ``flat`` not in sorted ``taken``."""
    h, w = shape
    ys, xs = np.divmod(flat, w)
    out = []
    for dy, dx in NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        ok = (ny >= 1) & (ny < h - 1) & (nx >= 1) & (nx < w - 1)
        out.append(ny[ok] * w + nx[ok])
    near = sorted_unique(np.concatenate(out))
    return near[~_contains(taken, near)]


def _contains(sorted_: np.ndarray, values: np.ndarray) -> np.ndarray:
    if not len(sorted_):
        return np.zeros(len(values), bool)
    pos = np.minimum(np.searchsorted(sorted_, values), len(sorted_) - 1)
    return sorted_[pos] == values


def _components(flat: np.ndarray, width: int) -> tuple[int, np.ndarray]:
    """8-connected groups of the sorted flat pixel indices ``flat``: (count, label per pixel)."""
    n = len(flat)
    if n == 0:
        return 0, np.zeros(0, np.int64)
    xs = flat % width
    rows, cols = [], []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):
        nb = flat + dy * width + dx
        on = (xs + dx >= 0) & (xs + dx < width)
        pos = np.minimum(np.searchsorted(flat, nb), n - 1)
        hit = on & (flat[pos] == nb)
        rows.append(np.flatnonzero(hit))
        cols.append(pos[hit])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n, n))
    count, labels = connected_components(graph, directed=False)
    return int(count), labels.astype(np.int64)


class _Search:
    """The pixels found so far, with their original values, on an image repaired in place."""

    def __init__(self, exposure: Exposure, config: FindCosmicRaysConfig,
                 thresholds: tuple[float, float, float], background: float) -> None:
        self.exposure, self.config = exposure, config
        self.thresholds, self.background = thresholds, background
        self.flat = np.zeros(0, np.int64)  # sorted
        self.original = np.zeros(0, np.float32)
        self.peak = np.zeros(0, np.float32)  # brightest original value the ray grew from
        self.bad_bits = np.int32(exposure.planes.bitmask(CR_BAD_PLANES))
        self.intrp_bit = np.int32(exposure.planes.bitmask("INTRP"))
        # pixels interpolation never reads: unusable ones, and every pixel found
        self.unusable = blocked_pixels(exposure.image, exposure.mask,
                                       exposure.planes.bitmask(INTERP_BAD_PLANES))
        self.blocked = self.unusable.copy()
        self.found = np.zeros(exposure.shape, bool)

    def test(self, flat: np.ndarray, min_sigma: float, cond3_fac: float,
             first_pass: bool) -> np.ndarray:
        """The pixels of ``flat`` that are cosmic rays."""
        e = self.exposure
        ys, xs = np.divmod(flat, e.width)
        ok = _sharp(e.image, e.variance, ys, xs, min_sigma, cond3_fac, self.thresholds,
                    self.background)
        ok &= (e.mask[ys, xs] & self.bad_bits) == 0  # condition 4 (and, here, when growing)
        if first_pass:  # condition 4: no interpolated neighbour either
            for dy, dx in NEIGHBOURS:
                ok &= (e.mask[ys + dy, xs + dx] & self.intrp_bit) == 0
        else:  # growing: not brighter than the ray; sharp, or standing out from the rest
            allowed = self.not_brighter(flat, ys, xs) & ((e.mask[ys, xs] & self.bad_bits) == 0)
            ok &= allowed
            rest = allowed & ~ok
            ok[rest] = self._stands_out(flat[rest], ys[rest], xs[rest], min_sigma)
        return flat[ok]

    def _stands_out(self, flat: np.ndarray, ys: np.ndarray, xs: np.ndarray,
                    min_sigma: float) -> np.ndarray:
        """Pixels ``min_sigma`` σ above both the background and their interpolation from the
        pixels around them that are not cosmic rays (nor among ``flat``), and sharper than
        the PSF against it: the interpolation above the background is less than the
        smallest condition-3 threshold × the pixel's (condition 3 with the interpolation in
        place of a pair's mean, which cannot see past the ray's pixels)."""
        e = self.exposure
        v = e.image[ys, xs].astype(np.float64)
        with np.errstate(invalid="ignore"):
            sigma = np.sqrt(e.variance[ys, xs].astype(np.float64))
            high = v - self.background >= min_sigma * sigma
        out = np.zeros(len(flat), bool)
        if not high.any():
            return out
        flat, ys, xs, v, sigma = flat[high], ys[high], xs[high], v[high], sigma[high]
        blocked = self.blocked.reshape(-1)
        was = blocked[flat]
        blocked[flat] = True
        interp, _ = interpolate_pixels(e.image, e.variance, self.blocked, ys, xs,
                                       fallback=self.background)
        blocked[flat] = was
        sharpest = min(self.thresholds)
        out[high] = ((v - interp >= min_sigma * sigma)
                     & (interp - self.background < sharpest * (v - self.background)))
        return out

    def _around(self, flat: np.ndarray) -> np.ndarray:
        """Highest ``peak`` among the found 8-neighbours of each pixel (−inf: none)."""
        w = self.exposure.width
        out = np.full(len(flat), -np.inf)
        if not len(self.flat):
            return out
        for dy, dx in NEIGHBOURS:
            nb = flat + dy * w + dx
            pos = np.minimum(np.searchsorted(self.flat, nb), len(self.flat) - 1)
            hit = self.flat[pos] == nb
            out = np.where(hit, np.maximum(out, self.peak[pos]), out)
        return out

    def not_brighter(self, flat: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Pixels not brighter (by 2σ) than the brightest pixel of the ray next to them."""
        e = self.exposure
        with np.errstate(invalid="ignore"):
            sigma = np.sqrt(e.variance[ys, xs].astype(np.float64))
        return e.image[ys, xs] <= self._around(flat) + 2.0 * sigma

    def sweep(self, todo: np.ndarray, min_sigma: float, cond3_fac: float,
              first_pass: bool) -> np.ndarray:
        """Test ``todo``, then the neighbours of what passed with it repaired, until no more
        pass (LSST's raster scan, which repairs each pixel as it meets it, without its scan
        order); returns the pixels added."""
        added = []
        for _ in range(MAX_SEARCH_ROUNDS):
            new = self.test(todo, min_sigma, cond3_fac, first_pass)
            if not len(new):
                break
            self.add(new)
            added.append(new)
            todo = _neighbours(new, self.exposure.shape, self.flat)
        return np.concatenate(added) if added else np.zeros(0, np.int64)

    def add(self, flat: np.ndarray, fill: bool = True) -> None:
        """Record pixels found and (``fill``) replace them by their interpolation from the
        pixels around them that are not cosmic rays."""
        image = self.exposure.image.reshape(-1)
        values = image[flat]
        peak = np.maximum(values, self._around(flat)).astype(np.float32)
        merged = np.concatenate([self.flat, flat])
        order = np.argsort(merged)
        self.flat = merged[order]
        self.original = np.concatenate([self.original, values])[order]
        self.peak = np.concatenate([self.peak, peak])[order]
        self.found.reshape(-1)[flat] = True
        self.blocked.reshape(-1)[flat] = True
        if len(self.flat) > self.config.nCrPixelMax:
            self.restore()
            raise TooManyCosmicRaysError(
                f"more than {self.config.nCrPixelMax} pixels look like cosmic rays; the PSF "
                "given is probably broader than the stars (every star core is then sharper "
                "than it), or the image is not sky-like; give the measured PSF, or raise "
                "repair.cosmicray.nCrPixelMax")
        if fill:
            self.interpolate(flat)

    def restore(self, keep: np.ndarray | None = None) -> None:
        """Put back the original values of the pixels not in ``keep`` (all when None) and
        forget them."""
        back = np.ones(len(self.flat), bool) if keep is None else ~keep
        gone = self.flat[back]
        self.exposure.image.reshape(-1)[gone] = self.original[back]
        self.found.reshape(-1)[gone] = False
        self.blocked.reshape(-1)[gone] = self.unusable.reshape(-1)[gone]
        self.flat, self.original = self.flat[~back], self.original[~back]
        self.peak = self.peak[~back]

    def reinstate(self) -> None:
        """Put back the original values of all pixels found, still remembering them."""
        self.exposure.image.reshape(-1)[self.flat] = self.original

    def interpolate(self, flat: np.ndarray | None = None,
                    choose: Literal["lowest", "mean"] = "lowest") -> np.ndarray:
        """Replace the pixels ``flat`` (default: all found) by their interpolation from the
        pixels around them that are not cosmic rays; returns those whose value changed.

        While searching, the lowest best-direction estimate (a ray's unflagged edges pull
        the others up, which would hide the edges from the search); at the end, with the
        edges found, their inverse-variance mean (lower noise, unbiased on sky)."""
        e = self.exposure
        flat = self.flat if flat is None else flat
        ys, xs = np.divmod(flat, e.width)
        values, _ = interpolate_pixels(e.image, e.variance, self.blocked, ys, xs,
                                       fallback=self.background, choose=choose)
        image = e.image.reshape(-1)
        values = values.astype(np.float32)
        moved = flat[image[flat] != values]
        image[flat] = values
        return moved

    def depending_on(self, flat: np.ndarray) -> np.ndarray:
        """Pixels found whose interpolation may read one of ``flat`` (pixels that were
        usable before): those a run of found pixels along one of the 8 directions leads
        to, and those two steps away over one usable pixel (the 4-point estimate's)."""
        h, w = self.exposure.shape
        found = self.found
        out = []
        ys0, xs0 = np.divmod(flat, w)
        for dy, dx in NEIGHBOURS:
            ys, xs = ys0, xs0
            for step in range(1, MAX_GAP + 1):
                ys, xs = ys + dy, xs + dx
                on = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
                ys, xs = ys[on], xs[on]
                hit = found[ys, xs]
                if step == 1:  # over one usable pixel to the pixel beyond
                    y2, x2 = ys[~hit] + dy, xs[~hit] + dx
                    on2 = (y2 >= 0) & (y2 < h) & (x2 >= 0) & (x2 < w)
                    y2, x2 = y2[on2], x2[on2]
                    two = found[y2, x2]
                    out.append(y2[two] * w + x2[two])
                ys, xs = ys[hit], xs[hit]
                if not len(ys):
                    break
                out.append(ys * w + xs)
        return sorted_unique(np.concatenate(out)) if out else np.zeros(0, np.int64)


def find_cosmic_rays(exposure: Exposure, psf: PsfModel, config: FindCosmicRaysConfig, *,
                     background: float, keep: bool) -> RepairResult:
    """CR.cc's findCosmicRays on ``exposure`` in place: CR (| INTRP) planes set, pixels
    interpolated unless ``keep``.

    The cosmic rays are the 8-connected groups of the final pixels, so two rays that grew
    into each other count once (CR.cc counts before growing). Raises
    :class:`TooManyCosmicRaysError`, the image left as it was, when more than
    ``nCrPixelMax`` pixels qualify.
    """
    e = exposure
    thresholds = cond3_thresholds(psf, e.width, e.height, config.cond3_fac2)
    if e.height < 3 or e.width < 3:
        return RepairResult.nothing("the image is smaller than 3×3 pixels")
    search = _Search(e, config, thresholds, background)
    # conditions 2–4, repaired pixels letting their neighbours pass
    search.sweep(_candidates(e.image, e.variance, config.minSigma, background),
                 config.minSigma, config.cond3_fac, first_pass=True)
    search.reinstate()
    # condition 1: enough counts in each cosmic ray
    count, labels = _components(search.flat, e.width)
    counts = np.bincount(labels, weights=search.original - background, minlength=count)
    noise = np.sqrt(np.bincount(labels, weights=e.variance.reshape(-1)[search.flat],
                                minlength=count))
    bright = (counts >= config.min_DN) & (counts >= config.minSigma * noise)
    search.restore(keep=bright[labels])
    # interpolate, grow into the neighbours that are sharp against the repaired image, and
    # interpolate again the pixels that read the ones just found, until no more are found;
    # only neighbours of pixels whose value changed can change their answer
    stale = search.flat
    for _ in range(config.niteration):
        moved = search.interpolate(stale)
        near = _neighbours(moved, e.shape, search.flat)
        new = search.sweep(near, config.minSigma / 2, 0.0, first_pass=False)
        if not len(new):
            break
        stale = sorted_unique(np.concatenate([search.depending_on(new), new]))
    # one more ring of pixels, as bright as the ray at most: its faintest edge
    ring = _neighbours(search.flat, e.shape, search.flat)
    ys, xs = np.divmod(ring, e.width)
    ring = ring[((e.mask[ys, xs] & search.bad_bits) == 0) & search.not_brighter(ring, ys, xs)]
    search.add(ring, fill=False)
    if keep:
        search.reinstate()
        bits = e.planes.bitmask("CR")
    else:
        search.interpolate(choose="mean")
        bits = e.planes.bitmask(["CR", "INTRP"])
    e.mask.reshape(-1)[search.flat] |= np.int32(bits)
    n_rays, ids = _components(search.flat, e.width)
    ys, xs = np.divmod(search.flat, e.width)
    return RepairResult(n_rays, ys, xs, ids, not keep, background, thresholds)


def repair_cosmic_rays(exposure: Exposure, psf: PsfModel, config: RepairConfig, *,
                       keep_crs: bool | None = None, redo: bool = False) -> RepairResult:
    """RepairTask.cosmicRay: find cosmic rays in ``exposure`` and repair them in place.

    Parameters
    ----------
    exposure
        Its image is interpolated over the cosmic rays (unless kept) and its mask gets CR
        (and INTRP); the variance plane is left alone.
    psf
        The PSF the sharpness test compares against. It must not be broader than the
        stars: against a too-broad PSF every star core looks sharper than it.
    config
        ``doCosmicRay`` and the ``cosmicray`` (FindCosmicRaysConfig) options.
    keep_crs
        Mask only, leave the pixels (as LSST's characterization does before its PSF is
        measured); None: ``config.cosmicray.keepCRs``.
    redo
        Clear the CR plane and search again (RepairTask always does). Without it an
        exposure whose CR plane already marks pixels (a calexp repaired before) is left
        alone and the result says so.

    Raises
    ------
    TooManyCosmicRaysError
        More than ``nCrPixelMax`` cosmic-ray pixels; the exposure is left unchanged.
    """
    if not config.doCosmicRay:
        return RepairResult.nothing("doCosmicRay is off: cosmic rays were not searched for")
    planes = exposure.planes
    cr_bit = np.int32(planes.bitmask("CR"))
    if redo:
        exposure.mask &= ~cr_bit
    else:
        marked = int(np.count_nonzero(planes.any(exposure.mask, "CR")))
        if marked:
            return RepairResult.nothing(
                f"the CR plane already marks {marked} pixels (cosmic rays repaired before): "
                "not searched again")
    keep = config.cosmicray.keepCRs if keep_crs is None else keep_crs
    background = median_background(exposure)
    result = find_cosmic_rays(exposure, psf, config.cosmicray, background=background,
                              keep=keep)
    log.info("cosmic rays", extra={"n_cosmic_rays": result.n_cosmic_rays,
                                   "n_pixels": result.n_pixels, "interpolated": not keep,
                                   "psf_fwhm_px": psf_fwhm(psf, exposure.width / 2,
                                                           exposure.height / 2)})
    return result


def interpolate_defects(exposure: Exposure, defects: np.ndarray) -> int:
    """RepairTask.interpolate: fill the ``defects`` pixels (boolean image) in place.

    Each pixel gets the inverse-variance mean of its best-direction estimates
    (:mod:`app.engine.interpolate`; LSST's interpolateOverDefects interpolates along rows
    with edge rules of its own) and its variance the mean variance of the pixels used;
    INTRP is set. Returns the number of pixels filled.
    """
    defects = np.asarray(defects, bool)
    if defects.shape != exposure.shape:
        raise ValueError(f"defect mask shape {defects.shape} differs from the exposure's "
                         f"{exposure.shape}")
    ys, xs = np.nonzero(defects)
    if not len(ys):
        return 0
    bad = exposure.planes.bitmask(INTERP_BAD_PLANES)
    blocked = blocked_pixels(exposure.image, exposure.mask, bad) | defects
    values, local = interpolate_pixels(exposure.image, exposure.variance, blocked, ys, xs,
                                       fallback=median_background(exposure), choose="mean")
    exposure.image[ys, xs] = values.astype(np.float32)
    known = np.isfinite(local)
    exposure.variance[ys[known], xs[known]] = local[known].astype(np.float32)
    exposure.mask[ys, xs] |= np.int32(exposure.planes.bitmask("INTRP"))
    return len(ys)


def repair(exposure: Exposure, psf: PsfModel, config: RepairConfig, *,
           defects: np.ndarray | None = None, keep_crs: bool | None = None,
           redo: bool = False) -> RepairResult:
    """RepairTask.run: interpolate over ``defects`` (if given and ``doInterpolate``), then
    find and repair cosmic rays (:func:`repair_cosmic_rays`, same keywords)."""
    n_defects = 0
    if defects is not None and config.doInterpolate:
        n_defects = interpolate_defects(exposure, defects)
    result = repair_cosmic_rays(exposure, psf, config, keep_crs=keep_crs, redo=redo)
    return replace(result, n_defect_pixels=n_defects)
