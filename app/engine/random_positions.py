"""Random blank-sky positions: far from every detection, inside the good part of the image.

As in the tutorial's section 5.2.2, for checking that forced fluxes on empty sky centre on
zero. Candidate pixels are those at least ``min_distance_px`` from any detected pixel (a
Euclidean distance transform of the detection mask) and clear of unusable pixels by the PSF
fit radius; the positions are drawn from them uniformly, with a seeded generator.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from app.engine.exposure import Exposure
from app.engine.psf import SIGMA_TO_FWHM

UNUSABLE = ["EDGE", "NO_DATA", "BAD", "SAT"]


class NotEnoughBlankSky(ValueError):
    """Fewer usable positions than were asked for."""


def random_positions(
    exposure: Exposure, n: int, *, min_distance_px: float = 40.0, seed: int = 0,
    avoid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` positions (parent-frame x, y) on blank sky.

    ``avoid`` is a boolean image of pixels to keep away from; by default the exposure's
    DETECTED and DETECTED_NEGATIVE planes.
    """
    if n < 0:
        raise ValueError("n must be ≥ 0")
    planes = exposure.planes
    if avoid is None:
        avoid = planes.any(exposure.mask, ["DETECTED", "DETECTED_NEGATIVE"])
    margin = 8.0
    if exposure.psf is not None:
        sigma = exposure.psf.sigma(exposure.width / 2, exposure.height / 2)
        margin = max(margin, 2.5 * sigma * SIGMA_TO_FWHM)
    unusable = planes.any(exposure.mask, UNUSABLE)
    # distances to the nearest avoided / unusable pixel; the image border counts as unusable
    far = (ndimage.distance_transform_edt(~avoid) >= min_distance_px + 0.71 if avoid.any()
           else np.ones(exposure.shape, bool))
    framed = np.pad(~unusable, 1, constant_values=False)
    clear = ndimage.distance_transform_edt(framed)[1:-1, 1:-1] >= margin + 0.71
    ys, xs = np.nonzero(far & clear)
    if len(ys) < n:
        raise NotEnoughBlankSky(
            f"only {len(ys)} pixels are at least {min_distance_px:g} px from every detection "
            f"and {margin:.0f} px inside the usable image; asked for {n} positions. Ask for "
            "fewer, or a smaller min_distance_px")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(ys), size=n, replace=False)
    jitter = rng.uniform(-0.5, 0.5, size=(2, n))
    ox, oy = exposure.xy0
    return xs[pick] + jitter[0] + ox, ys[pick] + jitter[1] + oy
