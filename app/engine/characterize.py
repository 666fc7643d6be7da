"""Image characterization, LSST's CharacterizeImageTask: background, PSF, aperture corrections.

In LSST's order (pipe_tasks characterizeImage.py):

1. an initial background is measured and subtracted (``doSubtractBackground``, on by
   default as in LSST: a frame with its sky still in is the normal case);
2. each of ``psfIterations`` rounds installs a Gaussian of the current PSF's size
   (``useSimplePsf``), detects at 5σ keeping footprints that reach
   ``psfCandidateThreshold`` σ (LSST's ``includeThresholdMultiplier`` of 10), with the
   background re-estimated around the detections; measures centroids and adaptive moments;
   selects PSF stars (:mod:`app.engine.star_selector`), holds back ``psfReserveFraction``
   of them (``calib_psf_reserved``), and fits a :class:`~app.engine.psf_model.PixelPsf` to
   the rest (``calib_psf_used``);
3. aperture corrections are measured on the stars the PSF used, as MeasureApCorrTask does
   (:mod:`app.engine.apcorr`): every corrected flux tied to ``slot_CalibFlux``.

With too few stars for a PSF model, the exposure's own PSF is kept when it has one (an
archived PSF); otherwise a Gaussian of the measured size is installed (LSST's
installSimplePsf), and the result says so, so a shallow frame still gets a catalog.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from app.engine.apcorr import ApCorrResult, measure_ap_corr
from app.engine.background import estimate_background
from app.engine.config import CharacterizeConfig, DeblendConfig, DetectionConfig
from app.engine.deblend import deblend
from app.engine.detection import NoNoiseError, detect
from app.engine.exposure import Exposure
from app.engine.footprints import Footprint, FootprintSet
from app.engine.measure.context import MeasurementContext
from app.engine.measure.plugins.centroid import SdssCentroid
from app.engine.measure.plugins.flux import CircularApertureFlux, GaussianFlux, PsfFlux
from app.engine.measure.plugins.shape import SdssShape
from app.engine.measure.registry import run_plugins
from app.engine.psf import SIGMA_TO_FWHM, GaussianPsf, PsfModel, psf_fwhm
from app.engine.psf_fit import fit_psf_stamps
from app.engine.psf_model import one_blas_thread
from app.engine.repair import RepairResult, TooManyCosmicRaysError, repair_cosmic_rays
from app.engine.star_selector import select_stars

log = logging.getLogger(__name__)

STAR_REJECT = ["SAT", "BAD", "INTRP", "CR", "EDGE", "NO_DATA", "SUSPECT"]
MAX_CANDIDATE_FOOTPRINTS = 2000  # brightest footprints measured as PSF candidates
APCORR_MIN_ALONE = 10  # PSF stars alone in their footprints enough for aperture corrections


class CharacterizeError(ValueError):
    """The image cannot be characterized as configured; the message says what to try."""


@dataclass
class PsfStars:
    """The characterization's PSF candidates (array frame) and what became of them."""

    x: np.ndarray
    y: np.ndarray
    used: np.ndarray  # calib_psf_used
    reserved: np.ndarray  # calib_psf_reserved
    footprints: list[Footprint] = field(default_factory=list)  # heavy: a blend's, deblended
    blended: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # a blend's child

    @classmethod
    def empty(cls) -> PsfStars:
        nothing = np.zeros(0)
        return cls(nothing, nothing, nothing.astype(bool), nothing.astype(bool))


@dataclass
class CharacterizeResult:
    """What characterization found and decided, for the catalog and the job summary."""

    psf: PsfModel
    psf_source: str  # "measured", "simple" (installSimplePsf fallback), "exposure", or
    # "none" (no star at all: the caller uses the exposure's own PSF or refuses)
    stars: PsfStars
    background: np.ndarray | None
    ap_corr: ApCorrResult | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def n_psf_stars(self) -> int:
        return int(self.stars.used.sum())


def characterize(exposure: Exposure, config: CharacterizeConfig) -> CharacterizeResult:
    """Characterize ``exposure`` in place: background subtracted, ``psf`` and ``ap_corr`` set,
    and ``info.provenance`` saying where each came from."""
    background = None
    if config.doSubtractBackground:
        background = estimate_background(exposure.image, exposure.mask, exposure.planes,
                                         config.background)
        _subtract(exposure, background)
    prior, prior_ap_corr = exposure.psf, dict(exposure.ap_corr)
    with one_blas_thread():  # every matrix here is small: extra threads only spin
        if not config.doMeasurePsf:
            # LSST: the exposure's own PSF, else the initial Gaussian (installSimplePsf)
            if prior is None:
                exposure.psf = GaussianPsf(config.initialPsfFwhm / SIGMA_TO_FWHM)
                result = CharacterizeResult(exposure.psf, "simple", PsfStars.empty(),
                                            background)
                exposure.info.provenance["psf"] = (
                    f"the initial Gaussian of FWHM {config.initialPsfFwhm:.2f} px "
                    "(characterize.initialPsfFwhm; doMeasurePsf is false)")
            else:
                result = CharacterizeResult(prior, "exposure", PsfStars.empty(), background)
                exposure.info.provenance.setdefault("psf", "the exposure's own (not measured)")
            if prior_ap_corr or not config.doApCorr:
                return result
            # no archived corrections: measured on the stars with the exposure's PSF (LSST's
            # characterization would have none, its stars being those the PSF fit used)
            work, every, stdev = _detect_candidates(exposure, exposure.psf, config)
            result.stars, _ = _candidates(work, every, stdev, config)
            result.stars.used[:] = ~result.stars.reserved
        else:
            psf: PsfModel = GaussianPsf(config.initialPsfFwhm / SIGMA_TO_FWHM)
            rounds, done, repaired, owed = config.psfIterations, 0, None, False
            while True:
                work, every, stdev = _detect_candidates(exposure, psf, config)
                result = _determine_psf(work, every, stdev, config, psf)
                psf = result.psf
                done += 1
                log.info("psf iteration", extra={
                    "iteration": done, "stars": result.n_psf_stars,
                    "source": result.psf_source,
                    "fwhm_px": psf_fwhm(psf, exposure.width / 2, exposure.height / 2)})
                if repaired is None:  # after the first round: see _repair
                    repaired = _repair(exposure, psf if result.psf_source != "none" else prior,
                                       config)
                    owed = bool(repaired.n_cosmic_rays) and result.psf_source != "none"
                    rounds += owed  # one more round, on the repaired image
                else:
                    owed = False
                if done >= rounds or (result.psf_source != "measured" and not owed):
                    break
            result.background = background
            result.notes.extend(_repair_notes(repaired))
            if result.psf_source == "none" and prior is None:
                raise CharacterizeError(
                    f"{result.notes[-1]}, so the PSF cannot be measured nor its size guessed; "
                    "lower characterize.psfCandidateThreshold (e.g. 10) for fainter stars, or "
                    "give an exposure that carries its PSF with characterize.doMeasurePsf=false")
            if result.psf_source in ("simple", "none") and prior is not None:
                # the exposure's own (archived) PSF is better than a Gaussian guess, and its
                # aperture corrections belong with it
                result = replace(result, psf=prior, psf_source="exposure")
                result.notes.append("too few stars to measure the PSF: the exposure's own "
                                    "PSF is used")
                exposure.psf = prior
                exposure.ap_corr = prior_ap_corr
                exposure.info.provenance["psf"] = (
                    exposure.info.provenance.get("psf", "the exposure's own")
                    + " (too few stars to measure one)")
                return result
            exposure.psf = psf
            exposure.info.provenance["psf"] = (
                f"measured from {result.n_psf_stars} stars "
                f"({int(result.stars.reserved.sum())} more reserved)"
                if result.psf_source == "measured" else result.notes[-1])
        if config.doApCorr:
            work.psf = exposure.psf
            result.ap_corr = measure_aperture_corrections(work, every, result.stars, config)
            exposure.ap_corr = result.ap_corr.fields
            exposure.info.provenance["ap_corr"] = result.ap_corr.describe()
    return result


def _repair(exposure: Exposure, psf: PsfModel | None, config: CharacterizeConfig
            ) -> RepairResult:
    """RepairTask.cosmicRay with the PSF first measured.

    Departure from LSST, which searches with the initial Gaussian before measuring the PSF:
    against a PSF broader than the stars (LSST's guess is 3.5 px FWHM; an undersampled
    image's stars may be 1.5 px) every star core looks sharper than a star can be. So the
    PSF is measured first, cosmic rays are then found against it and interpolated, and the
    PSF is measured again on the repaired image when any were found. An exposure whose CR
    plane already marks pixels (a calexp) is left as it is; too many cosmic-ray pixels
    leave the image unrepaired, with a note, where LSST would stop.
    """
    if psf is None:
        return RepairResult.nothing("no PSF to compare the pixels with")
    try:
        result = repair_cosmic_rays(exposure, psf, config.repair, keep_crs=False)
    except TooManyCosmicRaysError as exc:
        return RepairResult.nothing(f"{exc}: the image is not repaired")
    if result.n_cosmic_rays:
        exposure.info.provenance["cosmic_rays"] = (
            f"{result.n_cosmic_rays} found and interpolated ({result.n_pixels} pixels)")
    elif result.skipped:
        exposure.info.provenance["cosmic_rays"] = result.skipped
    return result


def _repair_notes(result: RepairResult | None) -> list[str]:
    if result is None or not result.skipped or "too many" not in result.skipped.lower():
        return []
    return [f"cosmic rays: {result.skipped}"]


def _subtract(exposure: Exposure, background: np.ndarray) -> None:
    exposure.image -= background
    exposure.background = background if exposure.background is None else (
        exposure.background + background)


def _detect_candidates(exposure: Exposure, psf: PsfModel, config: CharacterizeConfig
                       ) -> tuple[Exposure, FootprintSet, float]:
    """5σ footprints found with the current PSF's sigma, the background re-estimated around
    them (subtracted from the exposure, as LSST's characterization detection does), on a
    view whose mask is a copy (DETECTED and EDGE are written there, not on the caller's
    mask)."""
    work = replace(exposure, mask=exposure.mask.copy(), psf=psf, background=None)
    sigma = psf.sigma(work.width / 2, work.height / 2)
    try:
        found = detect(work, sigma, DetectionConfig(
            thresholdValue=5.0, thresholdType="stdev", reEstimateBackground=True,
            background=config.background, minPeakContrast=0.0))
    except NoNoiseError:  # a noiseless image has no 5σ: no candidates to measure anything on
        return work, FootprintSet([], work.shape, labels=np.zeros(work.shape, np.int32)), 1.0
    if found.background is not None:
        exposure.background = found.background if exposure.background is None else (
            exposure.background + found.background)
    assert found.positive is not None
    return work, found.positive, found.threshold / 5.0


def _star_context(work: Exposure, every: FootprintSet, footprints: list[Footprint],
                  radii: list[float] | None = None) -> MeasurementContext:
    """A measurement of these (heavy) footprints with every detection replaced by noise."""
    return MeasurementContext(
        exposure=work, ids=np.arange(1, len(footprints) + 1),
        parents=np.zeros(len(footprints), np.int64), footprints=footprints,
        peak_x=np.array([fp.peaks[0]["x"] for fp in footprints], dtype=np.int64),
        peak_y=np.array([fp.peaks[0]["y"] for fp in footprints], dtype=np.int64),
        replace_with_noise=True, covered=every.to_labels() > 0, aperture_radii=radii or [])


def _candidates(work: Exposure, every: FootprintSet, stdev: float, config: CharacterizeConfig
                ) -> tuple[PsfStars, np.ndarray]:
    """The PSF star candidates among the bright footprints (brightest first,
    ``psfReserveFraction`` of them reserved), and their sizes.

    Departure from LSST, whose characterization does not deblend ("it makes a mess") and so
    takes stars only from single-peak footprints: a blend's brightest peak is a candidate
    too, measured on its deblended child with every other detection replaced by noise, so
    a star with a faint neighbour (or a crowded field's stars) can serve. For the PSF fit
    the blend's pixels are then that child's (`candidate_planes`).
    """
    bright = [fp for fp in every if fp.peaks[0]["value"] >= config.psfCandidateThreshold * stdev]
    bright = sorted(bright, key=lambda fp: -fp.peaks[0]["value"])[:MAX_CANDIDATE_FOOTPRINTS]
    if not bright:
        return PsfStars.empty(), np.zeros(0)
    heavy = [_brightest_child(fp, work) if len(fp.peaks) > 1 else
             fp.make_heavy(work.image, work.mask, work.variance) for fp in bright]
    ctx = _star_context(work, every, heavy)
    out: dict[str, np.ndarray] = {}
    run_plugins([SdssCentroid(), SdssShape()], ctx, out, {})
    flux = out["base_SdssShape_instFlux"]
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = flux / out["base_SdssShape_instFluxErr"]
        radius = (ctx.shape_xx * ctx.shape_yy - ctx.shape_xy**2) ** 0.25
    clean = ~ctx.mask_in_footprints(work.planes.bitmask(STAR_REJECT))
    ok = (clean & np.isfinite(radius) & ~out["base_SdssShape_flag"]
          & ~out["base_SdssCentroid_flag"] & (snr > config.psfCandidateThreshold / 2))
    chosen = select_stars(radius, ctx.x, ctx.y, snr, ok, work.width, work.height)
    chosen = chosen[np.argsort(-flux[chosen])][: config.psfMaxCandidates]
    blended = np.array([len(fp.peaks) > 1 for fp in bright], bool)
    stars = PsfStars(ctx.x[chosen], ctx.y[chosen], np.zeros(len(chosen), bool),
                     _reserved(len(chosen), config), [heavy[i] for i in chosen],
                     blended[chosen])
    return stars, radius[chosen]


def _brightest_child(fp: Footprint, work: Exposure) -> Footprint:
    """The deblended child of a blend's brightest peak (heavy), or the blend itself (heavy)
    when it cannot be deblended."""
    blend = FootprintSet([fp], work.shape)
    records = deblend(blend, work, DeblendConfig(maxFootprintArea=0), do_deblend=True)
    top = fp.peaks[0]
    for rec in records[1:]:
        if rec.peak_x == top["x"] and rec.peak_y == top["y"]:
            return rec.footprint
    return records[0].footprint


def candidate_planes(work: Exposure, every: FootprintSet, stars: PsfStars
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The image and footprint labels the PSF is fitted on: the exposure's, with each star's
    footprint holding its own (deblended) pixels, and the rest of a blend labelled apart, so
    a blend's neighbours do not enter its stamp."""
    image = work.image.copy()
    labels = every.to_labels()
    apart = np.int32(labels.max(initial=0) + 1)
    for fp in stars.footprints:
        y, x = fp.indices()
        own = labels[y[0], x[0]] if len(y) else 0
        if own > 0:
            labels = labels if labels is not every.labels else labels.copy()
            labels[labels == own] = apart  # the whole blend, then its child's pixels back
            labels[y, x] = own
        image[y, x] = fp.image
    return image, labels


def _determine_psf(work: Exposure, every: FootprintSet, stdev: float,
                   config: CharacterizeConfig, current: PsfModel) -> CharacterizeResult:
    """Fit the PSF to the selected stars, or fall back to a Gaussian of their size when
    there are too few."""
    stars, radius = _candidates(work, every, stdev, config)
    fit = ~stars.reserved
    if fit.sum() < config.psfMinStars:
        why = (f"only {int(fit.sum())} usable PSF stars (need {config.psfMinStars})"
               if len(stars.x) else "no bright isolated star")
        return _simple_psf(work, current, stars, radius, why)
    image, labels = candidate_planes(work, every, stars)
    model, kept = fit_psf_stamps(replace(work, image=image), labels, stars.x[fit],
                                 stars.y[fit], config)
    stars.used[np.flatnonzero(fit)[kept]] = True
    return CharacterizeResult(model, "measured", stars, None)


def _reserved(n: int, config: CharacterizeConfig) -> np.ndarray:
    """Which of ``n`` stars (brightest first) are held back from the PSF fit: a seeded,
    evenly spread fraction (LSST's ReserveSourcesTask), none when stars are scarce."""
    reserved = np.zeros(n, bool)
    k = int(config.psfReserveFraction * n)
    if k == 0 or n - k < config.psfMinStars:
        return reserved
    rng = np.random.default_rng(config.psfReserveSeed)
    reserved[rng.choice(n, size=k, replace=False)] = True
    return reserved


def _simple_psf(work: Exposure, current: PsfModel, stars: PsfStars, radius: np.ndarray,
                why: str) -> CharacterizeResult:
    """LSST's installSimplePsf: a Gaussian of the stars' median size; the stars found are
    all flagged used, for the aperture corrections."""
    if not (len(radius) and np.isfinite(radius).any()):
        # nothing to size a Gaussian on: "none", for the caller to use the exposure's own
        # PSF or refuse
        return CharacterizeResult(current, "none", stars, None, notes=[why])
    sigma = float(np.nanmedian(radius))
    psf = GaussianPsf(sigma)
    stars.used[:] = True
    stars.reserved[:] = False
    note = (f"{why}: a Gaussian PSF of FWHM {sigma * SIGMA_TO_FWHM:.2f} px (the stars' "
            "measured size) is used; PSF fluxes are approximate (lower "
            "characterize.psfCandidateThreshold, or give a deeper image, for a measured PSF)")
    return CharacterizeResult(psf, "simple", stars, None, notes=[note])


def measure_aperture_corrections(work: Exposure, every: FootprintSet, stars: PsfStars,
                                 config: CharacterizeConfig) -> ApCorrResult:
    """MeasureApCorrTask in characterization: PSF and Gaussian fluxes against slot_CalibFlux
    on the stars the PSF model used (``calib_psf_used``), each on its own pixels with every
    other detection replaced by noise.

    Only the stars alone in their footprints are used when there are ``APCORR_MIN_ALONE``
    of them (LSST's characterization, which does not deblend, has no others): a deblended
    child's 12-px aperture holds the deblender's share of its wings, which on simulated
    fields left the correction 0.7 % low; a PSF can be measured on such a child, an
    aperture correction not as well. With fewer, every PSF star is used.
    """
    use = np.flatnonzero(stars.used)
    alone = use[~stars.blended[use]]
    if len(alone) >= APCORR_MIN_ALONE:
        use = alone
    if not len(use):
        return measure_ap_corr(None, {}, config.apCorr, work.shape)
    ctx = _star_context(work, every, [stars.footprints[i] for i in use],
                        [config.apCorr.calibFluxRadius])
    out: dict[str, np.ndarray] = {}
    run_plugins([SdssCentroid(), SdssShape(), PsfFlux(), GaussianFlux(),
                 CircularApertureFlux()], ctx, out, {})
    return measure_ap_corr(ctx, out, config.apCorr, work.shape)


def psf_star_flags(x: np.ndarray, y: np.ndarray, stars: PsfStars, radius: float = 3.0
                   ) -> dict[str, np.ndarray]:
    """``calib_psf_candidate``/``_used``/``_reserved`` for catalog positions (array frame):
    each characterization star marks the nearest catalog source within ``radius`` pixels,
    as LSST copies icSrc flags to src by a position match."""
    n = len(x)
    flags = {name: np.zeros(n, bool) for name in
             ("calib_psf_candidate", "calib_psf_used", "calib_psf_reserved")}
    if n == 0 or len(stars.x) == 0:
        return flags
    from scipy.spatial import cKDTree

    finite = np.isfinite(x) & np.isfinite(y)
    index = np.flatnonzero(finite)
    if len(index) == 0:
        return flags
    dist, nearest = cKDTree(np.column_stack([x[index], y[index]])).query(
        np.column_stack([stars.x, stars.y]), distance_upper_bound=radius)
    hit = np.isfinite(dist)
    target = index[nearest[hit]]
    flags["calib_psf_candidate"][target] = True
    flags["calib_psf_used"][target[stars.used[hit]]] = True
    flags["calib_psf_reserved"][target[stars.reserved[hit]]] = True
    return flags
