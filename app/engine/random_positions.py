"""Random blank-sky positions: far from every detection, inside the good part of the image.

As in the tutorial's section 5.2.2, for checking that forced fluxes on empty sky centre on
zero. Candidate pixels are those at least ``min_distance_px`` (Euclidean) from any detected
pixel and clear of unusable pixels by the PSF fit radius (`within`); the positions are drawn
from them uniformly, with a seeded generator.

Mapping the candidates takes about a second on a 4k × 4k calexp, while a draw takes
milliseconds; so the candidates are a `BlankSkyMap` of packed bits (2 MB there) that a
service can keep beside the exposure and draw from again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from app.engine.exposure import Exposure
from app.engine.psf import SIGMA_TO_FWHM

UNUSABLE = ["EDGE", "NO_DATA", "BAD", "SAT"]
AVOIDED = ["DETECTED", "DETECTED_NEGATIVE"]


class NotEnoughBlankSky(ValueError):
    """Fewer usable positions than were asked for."""


@dataclass(frozen=True, eq=False)
class BlankSkyMap:
    """The pixels a random position may fall on, one bit each, row by row."""

    bits: np.ndarray
    """(height, ⌈width / 8⌉) uint8: `numpy.packbits` of each row of candidates."""
    width: int
    xy0: tuple[int, int]
    min_distance_px: float
    margin_px: float
    before_row: np.ndarray
    """(height + 1,) int64: how many candidates lie in the rows above each row."""

    @property
    def count(self) -> int:
        """How many pixels are candidates."""
        return int(self.before_row[-1])

    def require(self, n: int) -> None:
        """`NotEnoughBlankSky` unless ``n`` positions can be drawn."""
        if n < 0:
            raise ValueError("n must be ≥ 0")
        if n > self.count:
            raise NotEnoughBlankSky(
                f"only {self.count} pixels are at least {self.min_distance_px:g} px from "
                f"every detection and {self.margin_px:.0f} px inside the usable image; asked "
                f"for {n} positions. Ask for fewer, or a smaller min_distance_px")

    def draw(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``n`` distinct candidate pixels, uniformly, each jittered within its pixel:
        parent-frame x and y. Only the rows drawn from are unpacked."""
        self.require(n)
        rng = np.random.default_rng(seed)
        pick = rng.choice(self.count, size=n, replace=False)
        jitter = rng.uniform(-0.5, 0.5, size=(2, n))
        rows = np.searchsorted(self.before_row, pick, side="right") - 1
        used, which = np.unique(rows, return_inverse=True)
        _, columns = np.nonzero(np.unpackbits(self.bits[used], axis=1, count=self.width))
        counts = np.diff(self.before_row)[used]
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])  # each used row's first entry
        x = columns[first[which] + pick - self.before_row[rows]]
        ox, oy = self.xy0
        return x + jitter[0] + ox, rows + jitter[1] + oy


def blank_sky_map(exposure: Exposure, min_distance_px: float = 40.0) -> BlankSkyMap:
    """The pixels at least ``min_distance_px`` from the DETECTED and DETECTED_NEGATIVE
    planes and clear of EDGE, NO_DATA, BAD and SAT pixels (and of the image's border) by
    2.5 PSF FWHM (at least 8 px)."""
    planes = exposure.planes
    avoid = planes.any(exposure.mask, AVOIDED)
    margin = 8.0
    if exposure.psf is not None:
        sigma = exposure.psf.sigma(exposure.width / 2, exposure.height / 2)
        margin = max(margin, 2.5 * sigma * SIGMA_TO_FWHM)
    unusable = planes.any(exposure.mask, UNUSABLE)
    # the image border counts as unusable; + 0.71: a pixel's centre to its far corner
    framed = np.pad(unusable, 1, constant_values=True)
    candidates = ~within(avoid, min_distance_px + 0.71)
    candidates &= ~within(framed, margin + 0.71)[1:-1, 1:-1]
    before_row = np.concatenate([[0], np.cumsum(np.count_nonzero(candidates, axis=1))])
    return BlankSkyMap(np.packbits(candidates, axis=1), exposure.width, exposure.xy0,
                       min_distance_px, margin, before_row.astype(np.int64))



SEPARABLE_MAX_RADIUS = 128.0
"""Above this radius, one distance transform costs less than `within`'s pass per row."""
STRIP_ROWS = 512  # rows whose distances along the row are worked out at once


def within(mask: np.ndarray, radius: float) -> np.ndarray:
    """The pixels closer than ``radius`` (Euclidean, centre to centre) to a True pixel.

    A disk is separable: a pixel is that close exactly when for some row offset dy,
    h(y + dy)² + dy² < radius², h being the distance along a row to its nearest True
    pixel. A pass per dy over h, as 8-bit integers, is ~5× faster than scipy's
    distance transform (which works out every pixel's nearest True pixel) for the radii of
    blank-sky requests; beyond `SEPARABLE_MAX_RADIUS` the transform is used.
    """
    if not mask.any():
        return np.zeros(mask.shape, bool)
    if radius > SEPARABLE_MAX_RADIUS:
        return ndimage.distance_transform_edt(~mask) < radius
    cap = int(np.ceil(radius))
    along = np.empty(mask.shape, np.uint8)
    for start in range(0, mask.shape[0], STRIP_ROWS):
        along[start:start + STRIP_ROWS] = _row_distance(mask[start:start + STRIP_ROWS], cap)
    out = np.zeros(mask.shape, bool)
    height = mask.shape[0]
    for dy in range(-cap, cap + 1):
        if dy * dy >= radius * radius:
            continue
        closer = int(np.ceil(np.sqrt(radius * radius - dy * dy)))  # h < this is within
        if dy >= 0:
            out[:height - dy] |= along[dy:] < closer
        else:
            out[-dy:] |= along[:height + dy] < closer
    return out


def _row_distance(mask: np.ndarray, cap: int) -> np.ndarray:
    """Each pixel's distance along its row to the row's nearest True pixel, at most
    ``cap`` (< 256)."""
    columns = np.arange(mask.shape[1], dtype=np.int32)
    far = np.int32(1 << 30)
    left = np.maximum.accumulate(np.where(mask, columns, -far), axis=1)
    right = np.minimum.accumulate(np.where(mask, columns, far)[:, ::-1], axis=1)[:, ::-1]
    return np.minimum(np.minimum(columns - left, right - columns), cap).astype(np.uint8)
