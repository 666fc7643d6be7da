"""Image characterization, LSST's CharacterizeImageTask: background and PSF.

Starting from a Gaussian guess, each of ``psfIterations`` rounds:

1. detects at 5σ, keeping footprints that reach ``psfCandidateThreshold`` σ (LSST's
   ``includeThresholdMultiplier`` of 10), on a copy so the exposure's mask is untouched;
2. measures their centroids and adaptive moments;
3. selects PSF stars: single-peak, no saturated, bad, interpolated, edge or cosmic-ray pixel,
   in the cluster of smallest sizes (objectSize star selector), brightest first;
4. fits a :class:`~app.engine.psf_model.PixelPsf` to their stamps, with other detections'
   pixels given no weight, re-normalizing each star by its PSF flux and rejecting stars that
   fit badly.

Then, as LSST's MeasureApCorrTask in CharacterizeImageTask, it measures the aperture
corrections of PSF and Gaussian fluxes on the clean point sources and stores them on the
exposure (``ap_corr``), so every later measurement on it, forced ones included, is tied to
the same large aperture.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from app.engine.apcorr import APCORR_MIN_SNR, ApCorr, measure_ap_corr
from app.engine.background import estimate_background
from app.engine.config import CharacterizeConfig, DetectionConfig
from app.engine.detection import detect
from app.engine.exposure import Exposure
from app.engine.footprints import Footprint, FootprintSet
from app.engine.measure.context import MeasurementContext, shift_cube
from app.engine.measure.plugins.centroid import SdssCentroid
from app.engine.measure.plugins.flux import GaussianFlux, PsfFlux
from app.engine.measure.plugins.shape import SdssShape
from app.engine.measure.registry import run_plugins
from app.engine.psf import GaussianPsf, PsfModel, psf_fwhm
from app.engine.psf_model import PixelPsf, fit_pixel_psf, one_blas_thread

log = logging.getLogger(__name__)

APCORR_MAX_STARS = 400  # the brightest candidates used for the aperture corrections

STAR_REJECT = ["SAT", "BAD", "INTRP", "CR", "EDGE", "NO_DATA", "SUSPECT"]


class CharacterizeError(ValueError):
    """The image cannot be characterized (e.g. too few stars for a PSF)."""


@dataclass
class CharacterizeResult:
    psf: PsfModel
    n_candidates: int
    n_psf_stars: int
    psf_x: np.ndarray  # positions of the stars used (array frame)
    psf_y: np.ndarray
    background: np.ndarray | None


def characterize(exposure: Exposure, config: CharacterizeConfig) -> CharacterizeResult:
    """Measure the PSF of ``exposure`` (set as ``exposure.psf``), subtracting a background first
    if configured."""
    background = None
    if config.doSubtractBackground:
        background = estimate_background(exposure.image, exposure.mask, exposure.planes,
                                         config.background)
        exposure.image -= background
        exposure.background = background if exposure.background is None else (
            exposure.background + background)
    psf: PsfModel = GaussianPsf(config.initialPsfFwhm / 2.3548)
    result = None
    with one_blas_thread():  # every matrix here is small: extra threads only spin
        for it in range(config.psfIterations):
            work, every, stdev = _detect_candidates(exposure, psf)
            result = _determine_psf(work, every, stdev, config)
            psf = result.psf
            log.info("psf iteration", extra={"iteration": it + 1, "stars": result.n_psf_stars,
                                             "fwhm_px": psf_fwhm(psf, exposure.width / 2,
                                                                 exposure.height / 2)})
        assert result is not None
        exposure.psf = work.psf = psf
        exposure.ap_corr = measure_aperture_corrections(work, every, stdev, config.apCorrRadius)
    result.background = background
    return result


def _detect_candidates(exposure: Exposure, psf: PsfModel) -> tuple[Exposure, FootprintSet,
                                                                    float]:
    """5σ footprints found with the current PSF's sigma, on a view of the exposure whose
    mask is a copy (detection writes DETECTED and EDGE there, not on the caller's mask)."""
    work = replace(exposure, mask=exposure.mask.copy(), psf=psf)
    sigma = psf.sigma(work.width / 2, work.height / 2)
    found = detect(work, sigma, DetectionConfig(thresholdValue=5.0, thresholdType="stdev",
                                                reEstimateBackground=False))
    assert found.positive is not None
    return work, found.positive, found.threshold / 5.0


def _context(work: Exposure, fps: list[Footprint], replace_with_noise: bool,
             covered: np.ndarray | None = None) -> MeasurementContext:
    heavy = [fp.make_heavy(work.image, work.mask, work.variance) for fp in fps]
    return MeasurementContext(
        exposure=work, ids=np.arange(1, len(fps) + 1), parents=np.zeros(len(fps), np.int64),
        footprints=heavy, peak_x=np.array([fp.peaks[0]["x"] for fp in fps], dtype=np.int64),
        peak_y=np.array([fp.peaks[0]["y"] for fp in fps], dtype=np.int64),
        replace_with_noise=replace_with_noise, covered=covered,
    )


def _determine_psf(work: Exposure, every: FootprintSet, stdev: float,
                   config: CharacterizeConfig) -> CharacterizeResult:
    # candidates: single-peak footprints whose peak reaches psfCandidateThreshold σ (LSST's
    # includeThresholdMultiplier); all 5σ footprints are kept to leave their pixels out
    fps = [fp for fp in every if len(fp.peaks) == 1
           and fp.peaks[0]["value"] >= config.psfCandidateThreshold * stdev]
    if not fps:
        raise CharacterizeError("no bright isolated source to measure the PSF from")
    ctx = _context(work, fps, replace_with_noise=False)
    out: dict[str, np.ndarray] = {}
    run_plugins([SdssCentroid(), SdssShape()], ctx, out, {})
    flux = out["base_SdssShape_instFlux"]
    snr = flux / out["base_SdssShape_instFluxErr"]
    radius = (ctx.shape_xx * ctx.shape_yy - ctx.shape_xy**2) ** 0.25
    clean = ~ctx.mask_in_footprints(work.planes.bitmask(STAR_REJECT))
    ok = (clean & np.isfinite(radius) & ~out["base_SdssShape_flag"]
          & ~out["base_SdssCentroid_flag"] & (snr > config.psfCandidateThreshold / 2))
    stars = select_stars(radius, ok)
    order = np.argsort(-flux[stars])[: config.psfMaxCandidates]
    stars = stars[order]
    if len(stars) < 5:
        raise CharacterizeError(
            f"only {len(stars)} usable PSF stars found (need at least 5); the image may be "
            "too shallow, too crowded or mostly saturated")
    model, used = fit_psf_stamps(work, every.to_labels(), ctx.x[stars], ctx.y[stars], config)
    return CharacterizeResult(model, int(ok.sum()), int(used.sum()), ctx.x[stars][used],
                              ctx.y[stars][used], None)


def measure_aperture_corrections(work: Exposure, every: FootprintSet, stdev: float,
                                 radius: float) -> dict[str, ApCorr]:
    """LSST's MeasureApCorrTask: PSF and Gaussian fluxes against a large aperture, on the
    single-peak detections bright enough to count, all detections replaced by noise."""
    threshold = APCORR_MIN_SNR * stdev
    fps = [fp for fp in every if len(fp.peaks) == 1 and fp.peaks[0]["value"] >= threshold]
    # the brightest few hundred pin the correction down to a few 1e-4
    fps = sorted(fps, key=lambda fp: -fp.peaks[0]["value"])[:APCORR_MAX_STARS]
    if not fps:
        return {}
    ctx = _context(work, fps, replace_with_noise=True, covered=every.to_labels() > 0)
    out: dict[str, np.ndarray] = {}
    run_plugins([SdssCentroid(), SdssShape(), PsfFlux(), GaussianFlux()], ctx, out, {})
    return measure_ap_corr(ctx, out, np.ones(len(fps), dtype=bool), radius)


def select_stars(radius: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Indices of sources in the densest cluster of sizes at the small end (the stars).

    Point sources all share the PSF's size while galaxies spread above it: the size with
    the most neighbours within ±4 % marks the stellar locus, and sources within 3 robust
    sigmas (at least 3 %) of that locus are kept.
    """
    idx = np.nonzero(ok)[0]
    if len(idx) == 0:
        return idx
    r = radius[idx]
    logr = np.log(r)
    counts = (np.abs(logr[:, None] - logr[None, :]) < 0.04).sum(axis=1)
    # ties broken towards smaller sizes: stars are the smallest objects
    best = np.lexsort((r, -counts))[0]
    centre = r[best]
    near = np.abs(r - centre) < 0.04 * centre
    spread = max(1.4826 * np.median(np.abs(r[near] - np.median(r[near]))), 0.01 * centre)
    locus = np.median(r[near])
    return idx[np.abs(r - locus) < max(3 * spread, 0.03 * locus)]


def fit_psf_stamps(exposure: Exposure, labels: np.ndarray, x: np.ndarray, y: np.ndarray,
                   config: CharacterizeConfig) -> tuple[PixelPsf, np.ndarray]:
    """Fit the pixel PSF to stars at (x, y); returns the model and which stars were kept."""
    k = config.psfStampSize | 1
    half = k // 2
    h, w = exposure.shape
    ix, iy = np.round(x).astype(int), np.round(y).astype(int)
    off = np.arange(k)
    yy = iy[:, None, None] - half + off[None, :, None]
    xx = ix[:, None, None] - half + off[None, None, :]
    on = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    yc, xc = np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)
    own = labels[iy, ix]
    lab = labels[yc, xc]
    bad = exposure.planes.any(exposure.mask[yc, xc], ["SAT", "BAD", "NO_DATA", "CR"])
    usable = on & ~bad & ((lab == 0) | (lab == own[:, None, None]))
    data = np.where(usable, exposure.image[yc, xc], 0.0)
    var = np.where(usable, exposure.variance[yc, xc], np.inf)
    # centre every star on its middle pixel; the shifted usable mask keeps interpolated
    # pixels only where all their Lanczos inputs were usable
    dx, dy = x - ix, y - iy
    data = shift_cube(data, -dx, -dy)
    usable_s = shift_cube(usable.astype(float), -dx, -dy) > 0.999
    var = np.where(usable_s, np.where(usable, var, np.inf), np.inf)
    r2 = (off[None, :, None] - half) ** 2 + (off[None, None, :] - half) ** 2
    flux = np.where(usable_s & (r2 <= (half * 0.6) ** 2), data, 0).sum(axis=(1, 2))
    keep = flux > 0
    model = None
    for _ in range(4):
        norm = data / flux[:, None, None]
        weights = np.where(usable_s & keep[:, None, None],
                           flux[:, None, None] ** 2 / var, 0.0)
        model = fit_pixel_psf(norm, weights, x, y, config.psfSpatialOrder, w, h)
        p = model.kernels(x, y)
        pw = np.where(usable_s, p / np.where(np.isfinite(var), var, np.inf), 0)
        flux = (pw * data).sum(axis=(1, 2)) / (pw * p).sum(axis=(1, 2))
        resid = np.where(usable_s, (data - flux[:, None, None] * p) ** 2 / var, 0)
        core = usable_s & (r2 <= (3 * half / 4) ** 2)
        chi2 = np.where(core, resid, 0).sum(axis=(1, 2)) / np.maximum(core.sum(axis=(1, 2)), 1)
        med = np.median(chi2[keep])
        mad = 1.4826 * np.median(np.abs(chi2[keep] - med))
        keep = keep & (flux > 0) & (chi2 < med + 4 * max(mad, 0.05 * med))
    assert model is not None
    return model, keep
