"""Pairs of stars 2 FWHM apart on PSFs other than the simulator's: Moffat (β 2.5 and 4.5)
and Gaussian, FWHM 2–5 px, with the exposure's PSF model the true one.

The issue's pair numbers on each: two children in ≥ 90 % of the pairs, and in ≥ 90 % of
those both children's base_PsfFlux within 10 % of the true flux. The PSF model is exact
here, so what is measured is the deblender (and its detection), not the PSF model.

The flux ratios reach 5 for the Gaussian, but only 2 (β 2.5) and 3 (β 4.5) for the Moffats:
LSST finds peaks on the image smoothed by a Gaussian of the PSF's adaptive-moment sigma,
which for a Moffat is wider than its core (σ 1.52 px for FWHM 3, β 2.5), and on that image
a pair 2 FWHM apart with a flux ratio of 3 (β 2.5) or 4 (β 4.5) has a single peak even
without noise; no peak-based deblender can split it. Below FWHM 3 px the same holds on the
pixel grid for part of the pairs (Moffat 2.5 px: 89 % split, 2 px: 73 %; Gaussian 2 px: 73 %
at ratios up to 5), so the cases here start at 3 px (2.5 px for the Gaussian).
"""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.config import DeblendConfig, DetectionConfig, MeasurementConfig
from app.engine.deblend import deblend
from app.engine.detection import detect
from app.engine.exposure import Exposure
from app.engine.measure.task import measure_sources
from app.engine.psf import SIGMA_TO_FWHM
from app.engine.psf_kolmogorov import adaptive_sigma
from app.engine.truth import leaf_rows, match_positions

STAMP = 41
OVERSAMPLE = 5
NOISE = 10.0
GRID, SPACING = 8, 64


def _profile(kind: str, fwhm: float, beta: float, dx: float, dy: float) -> np.ndarray:
    """A STAMP² pixel-integrated profile centred (dx, dy) off its middle pixel (unnormalized)."""
    half = STAMP // 2
    sub = (np.arange(STAMP * OVERSAMPLE) + 0.5) / OVERSAMPLE - half - 0.5
    x, y = sub[None, :] - dx, sub[:, None] - dy
    r2 = x * x + y * y
    if kind == "moffat":
        alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
        img = (1 + r2 / alpha**2) ** -beta
    else:
        img = np.exp(-0.5 * r2 / (fwhm / SIGMA_TO_FWHM) ** 2)
    return img.reshape(STAMP, OVERSAMPLE, STAMP, OVERSAMPLE).sum(axis=(1, 3))


class ProfilePsf:
    """The true PSF as the engine's PsfModel: the same everywhere, normalized on its stamp."""

    def __init__(self, kind: str, fwhm: float, beta: float = 0.0) -> None:
        self.kind, self.fwhm, self.beta = kind, fwhm, beta
        centred = _profile(kind, fwhm, beta, 0.0, 0.0)
        self.norm = centred.sum()
        self._kernel = centred / self.norm
        self._sigma = adaptive_sigma(self._kernel)  # as LSST's computeShape: adaptive moments

    def kernel(self, x: float, y: float) -> np.ndarray:
        return self._kernel

    def sigma(self, x: float, y: float) -> float:
        return self._sigma

    def star(self, dx: float, dy: float) -> np.ndarray:
        return _profile(self.kind, self.fwhm, self.beta, dx, dy) / self.norm


def _pairs(psf: ProfilePsf, seed: int, max_ratio: float) -> tuple[Exposure, np.ndarray]:
    """GRID² pairs 2 FWHM apart at random angles, brighter member 2e4–1e5 counts, flux
    ratio 1–``max_ratio``; returns the exposure and the truth rows (x, y, flux, pair)."""
    rng = np.random.default_rng(seed)
    size = GRID * SPACING
    image = np.zeros((size + STAMP, size + STAMP))
    truth = []
    for k in range(GRID * GRID):
        cx = SPACING * (k % GRID) + SPACING / 2 + rng.uniform(-2, 2)
        cy = SPACING * (k // GRID) + SPACING / 2 + rng.uniform(-2, 2)
        angle = rng.uniform(0, np.pi)
        bright = rng.uniform(2e4, 1e5)
        for sign, flux in ((1, bright), (-1, bright / rng.uniform(1, max_ratio))):
            x = cx + sign * psf.fwhm * np.cos(angle)
            y = cy + sign * psf.fwhm * np.sin(angle)
            ix, iy = int(round(x)), int(round(y))
            image[iy: iy + STAMP, ix: ix + STAMP] += flux * psf.star(x - ix, y - iy)
            truth.append((x, y, flux, k))
    half = STAMP // 2
    image = image[half: half + size, half: half + size] + rng.normal(0, NOISE, (size, size))
    ex = Exposure(image.astype(np.float32), np.zeros((size, size), np.int32),
                  np.full((size, size), NOISE**2, np.float32), psf=psf)
    return ex, np.array(truth)


@pytest.mark.parametrize("kind, fwhm, beta, max_ratio", [
    ("moffat", 3.0, 2.5, 2.0), ("moffat", 5.0, 2.5, 2.0), ("moffat", 3.0, 4.5, 3.0),
    ("moffat", 5.0, 4.5, 3.0), ("gaussian", 2.5, 0.0, 5.0), ("gaussian", 3.0, 0.0, 5.0),
])
def test_pairs_two_fwhm_apart_are_split_with_their_fluxes(kind, fwhm, beta, max_ratio):
    psf = ProfilePsf(kind, fwhm, beta)
    ex, truth = _pairs(psf, int(10 * fwhm + beta), max_ratio)
    found = detect(ex, psf.sigma(0, 0), DetectionConfig(reEstimateBackground=False))
    records = deblend(found.positive, ex, DeblendConfig())
    cat, _ = measure_sources(ex, records, MeasurementConfig.model_validate({
        "plugins": ["base_SdssCentroid", "base_PsfFlux"], "doApCorr": False,
        "slots": {"shape": None, "psfShape": None, "apFlux": None, "modelFlux": None,
                  "gaussianFlux": None, "calibFlux": None}}))
    leaf = cat[leaf_rows(cat)]
    m = match_positions(np.asarray(leaf["base_SdssCentroid_x"]),
                        np.asarray(leaf["base_SdssCentroid_y"]), truth[:, 0], truth[:, 1],
                        0.5 * fwhm)
    two = good = 0
    for k in range(GRID * GRID):
        d = m.det_index[2 * k: 2 * k + 2]
        if (d >= 0).all() and (np.asarray(leaf["parent"])[d] > 0).all():
            two += 1
            ratio = np.asarray(leaf["base_PsfFlux_instFlux"])[d] / truth[2 * k: 2 * k + 2, 2]
            good += bool(np.all(np.abs(ratio - 1) < 0.10))
    assert two >= 0.9 * GRID * GRID, (two, good)
    assert good >= 0.9 * two, (two, good)
