"""Configuration of the detection pipeline, with the names LSST's tasks use.

``CharacterizeImageTask`` → ``characterize``, ``SourceDetectionTask`` → ``detection``,
``SourceDeblendTask`` → ``deblend``, ``SingleFrameMeasurementTask`` → ``measurement``.
Unknown keys are refused (``extra="forbid"``) so a typo never silently runs the defaults.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

MAX_APERTURES = 12
MIN_APERTURE_RADIUS = 0.5  # pixels: smaller names no column (0.04 → "0_0") nor a pixel
MAX_APERTURE_RADIUS = 100.0


def radius_name(r: float) -> str:
    """LSST's column stem for an aperture radius: 4.5 → '4_5'."""
    return f"{r:.1f}".replace(".", "_")


def _check_radii(radii: list[float]) -> list[float]:
    """Aperture radii that can each name their columns (``4.5`` → ``…_4_5_instFlux``)."""
    if not radii:
        raise ValueError("give at least one aperture radius")
    if len(radii) > MAX_APERTURES:
        raise ValueError(f"{len(radii)} aperture radii are more than {MAX_APERTURES}")
    bad = [r for r in radii if not MIN_APERTURE_RADIUS <= r <= MAX_APERTURE_RADIUS]
    if bad:
        raise ValueError(f"aperture radii must be between {MIN_APERTURE_RADIUS:g} and "
                         f"{MAX_APERTURE_RADIUS:g} pixels; got {bad}")
    tenths = [round(r, 1) for r in radii]
    same = sorted({r for r, t in zip(radii, tenths, strict=True) if tenths.count(t) > 1})
    if same:
        raise ValueError(f"aperture radii {same} are the same to 0.1 pixel, the precision "
                         "their column names carry; give distinct radii")
    return radii


ApertureRadii = Annotated[list[float], AfterValidator(_check_radii)]
"""base_CircularApertureFlux radii in pixels: 1 to 12 of them, distinct to 0.1 px."""


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


ConfigT = TypeVar("ConfigT", bound=_Config)


class BackgroundConfig(_Config):
    """SubtractBackgroundTask: mesh statistics, interpolated."""

    binSize: int = Field(128, ge=8, description="Mesh cell size in pixels.")
    statisticsProperty: Literal["MEANCLIP", "MEDIAN", "MEAN"] = Field(
        "MEANCLIP", description="Statistic of each mesh cell."
    )
    nSigmaClip: float = Field(3.0, gt=0, description="Clipping threshold for MEANCLIP.")
    nIterClip: int = Field(3, ge=1, description="Clipping iterations for MEANCLIP.")
    ignoredPixelMask: list[str] = Field(
        default_factory=lambda: ["BAD", "EDGE", "DETECTED", "DETECTED_NEGATIVE", "NO_DATA", "SAT"],
        description="Mask planes whose pixels are left out of the statistics.",
    )
    useApprox: bool = Field(
        True, description="Approximate the cell values with a Chebyshev series (LSST's "
        "default) rather than interpolating through them.")
    approxOrderX: int = Field(6, ge=0, description="Chebyshev order of the approximation in x.")
    approxOrderY: int = Field(-1, ge=-1, description="Order in y; -1: the same as in x.")
    weighting: bool = Field(
        True, description="Weight each cell by the inverse variance of its mean in the "
        "approximation.")
    algorithm: Literal["AKIMA_SPLINE", "NATURAL_SPLINE", "LINEAR", "CONSTANT"] = Field(
        "AKIMA_SPLINE", description="Interpolation through the cell centres when useApprox "
        "is false.")
    undersampleStyle: Literal["REDUCE_INTERP_ORDER", "THROW_EXCEPTION"] = Field(
        "REDUCE_INTERP_ORDER", description="With too few cells for the order or algorithm: "
        "lower it (any image of one cell or more works), or refuse.")


class ApCorrConfig(_Config):
    """MeasureApCorrTask: the fit of each flux's ratio to slot_CalibFlux."""

    calibFluxRadius: float = Field(
        12.0, gt=0, le=100.0,
        description="Radius (pixels) of slot_CalibFlux, the circular aperture every corrected "
        "flux is tied to (LSST: base_CircularApertureFlux_12_0).")
    order: int = Field(2, ge=0, le=6, description="Chebyshev order of the correction field.")
    minDegreesOfFreedom: int = Field(
        1, ge=1, description="Fewest stars beyond the field's terms; the order is lowered "
        "until this holds.")
    numIter: int = Field(4, ge=1, description="Rounds of robust clipping.")
    numSigmaClip: float = Field(4.0, gt=0, description="Clip at this many robust sigmas.")
    doFinalMedianShift: bool = Field(True, description="Shift the field so the stars' "
                                     "median residual is zero.")
    minSignalToNoise: float = Field(200.0, gt=0, description="PSF S/N a star needs.")
    fallbackSignalToNoise: float = Field(
        50.0, gt=0, description="When fewer than two stars reach minSignalToNoise, the stars "
        "down to this S/N are used (not an LSST option).")
    validRange: tuple[float, float] = Field(
        (0.5, 2.0), description="A field outside this range anywhere on the image is refused "
        "(not applied, flagged).")


class FindCosmicRaysConfig(_Config):
    """meas_algorithms' FindCosmicRaysConfig (the CR.cc conditions), LSST's defaults."""

    nCrPixelMax: int = Field(
        1_000_000, ge=1,
        description="Most cosmic-ray pixels; more is an error (usually a PSF broader than the "
        "stars, which makes every star core look sharper than the PSF).",
    )
    minSigma: float = Field(
        6.0, gt=0,
        description="A cosmic-ray pixel stands this many of its own noise sigmas above the "
        "mean of an opposite pair of its neighbours (halved when growing a cosmic ray).",
    )
    min_DN: float = Field(
        150.0, ge=0,
        description="A cosmic ray holds at least this many counts above the background.",
    )
    cond3_fac: float = Field(
        2.0, ge=0,
        description="Noise sigmas the peak is lowered and the neighbours raised by before "
        "the sharpness test (0 when growing).",
    )
    cond3_fac2: float = Field(
        0.35, gt=0,
        description="The neighbours / peak ratio must fall below this × the PSF's own ratio "
        "(next pixel along rows, columns and diagonals) for a pixel to be a cosmic ray.",
    )
    niteration: int = Field(
        6, ge=0, description="Rounds of growing each cosmic ray into its neighbours."
    )
    keepCRs: bool = Field(
        False, description="Set the CR plane but leave the pixels as they are (no "
        "interpolation)."
    )


class RepairConfig(_Config):
    """pipe_tasks' RepairTask: defects interpolated, cosmic rays found and interpolated."""

    doInterpolate: bool = Field(
        True, description="Interpolate over defects (only when a defect list is given)."
    )
    doCosmicRay: bool = Field(True, description="Find, mask and interpolate cosmic rays.")
    cosmicray: FindCosmicRaysConfig = Field(default_factory=FindCosmicRaysConfig)


class CharacterizeConfig(_Config):
    """CharacterizeImageTask: background, PSF and aperture corrections."""

    psfIterations: int = Field(1, ge=1, le=10, description="Rounds of PSF determination.")
    doMeasurePsf: bool = Field(
        True, description="Measure the PSF; if False, use the exposure's own PSF model.")
    doSubtractBackground: bool = Field(
        True, description="Subtract an initial background first, as LSST always does (a no-op "
        "in effect on a calexp whose background was subtracted already).")
    background: BackgroundConfig = Field(default_factory=BackgroundConfig)
    initialPsfFwhm: float = Field(
        1.5 * 2.3548, gt=0, description="FWHM in pixels of the Gaussian first-guess PSF.")
    psfCandidateThreshold: float = Field(
        20.0, gt=0,
        description="PSF star candidates must peak this many stdevs above the background "
        "(LSST uses 50; stars are weighted by their S/N, so fainter ones add information).",
    )
    psfMaxCandidates: int = Field(300, ge=5, description="Most PSF stars used.")
    psfMinStars: int = Field(
        5, ge=1, description="Fewest stars for a measured PSF; with fewer, a Gaussian of their "
        "size is used (LSST's installSimplePsf), or the exposure's own PSF if it has one.")
    psfReserveFraction: float = Field(
        0.2, ge=0, lt=1, description="Share of the PSF stars held back from the fit "
        "(calib_psf_reserved), to check the model on stars it did not use.")
    psfReserveSeed: int = Field(0, description="Seed of the choice of reserved stars.")
    psfStampSize: int = Field(41, ge=11, description="Side of the PSF model stamp (odd).")
    psfSpatialOrder: int = Field(2, ge=0, le=4, description="Polynomial order of PSF variation.")
    repair: RepairConfig = Field(
        default_factory=RepairConfig, description="Cosmic rays (RepairTask), found with the "
        "PSF first measured and skipped on an exposure whose CR plane marks pixels already.")
    psfSamplingSize: float = Field(
        1.0, ge=0, le=1, description="Sampling step (pixels) of the PSF model of an "
        "undersampled image, LSST's samplingSize; 0 is PSFEx's automatic step, half the "
        "stars' sigma (LSST's 0.5 leaves a 1.5-px-FWHM model wrong by ~1 % at some sub-pixel "
        "phases). As PSFEx's PIXEL_AUTO, only a PSF under 3 px FWHM is oversampled. The "
        "default, 1, does not oversample yet: on simulated fields the oversampled fit is not "
        "yet within 0.5 % at every phase in the pipeline (see app.engine.psf_oversampled).")
    doApCorr: bool = Field(True, description="Measure aperture corrections.")
    apCorr: ApCorrConfig = Field(default_factory=ApCorrConfig)


class DetectionConfig(_Config):
    """SourceDetectionTask."""

    thresholdValue: float = Field(5.0, gt=0, description="Threshold in units of thresholdType.")
    thresholdType: Literal["stdev", "pixel_stdev", "variance", "value"] = Field(
        "pixel_stdev", description="How thresholdValue is turned into a pixel threshold "
        "(LSST's default: per pixel, from the variance plane)."
    )
    doRescaleToSkyNoise: bool = Field(
        True, description="pixel_stdev: scale the variance plane's noise to the blank sky's "
        "real spread when they differ by more than 10 % (LSST's DynamicDetection; correlated "
        "noise)."
    )
    thresholdPolarity: Literal["positive", "negative", "both"] = Field(
        "positive", description="Detect positive sources, negative ones, or both."
    )
    includeThresholdMultiplier: float = Field(
        1.0, gt=0, description="Multiplier applied to the threshold for inclusion."
    )
    minPixels: int = Field(1, ge=1, description="Smallest footprint kept, in pixels.")
    nSigmaToGrow: float = Field(2.4, ge=0, description="Grow footprints by this × PSF sigma.")
    isotropicGrow: bool = Field(True, description="Grow with a disk rather than a cross.")
    reEstimateBackground: bool = Field(
        True, description="Fit and subtract a background with detections masked, once."
    )
    backgroundMaskGrowFwhm: float = Field(
        2.0, ge=0, description="For the background re-estimate, the detections are masked "
        "grown by this many PSF FWHM more, so their wings do not raise the background (not "
        "an LSST option; 0: LSST's footprints as they are)."
    )
    background: BackgroundConfig = Field(default_factory=BackgroundConfig)
    doTempLocalBackground: bool = Field(
        True,
        description="Find peaks on the smoothed image less a fine-binned background "
        "(tempLocalBackground), fitted to the image with its sources and subtracted only for "
        "the peak search: noise bumps in the wings of bright and extended objects then fall "
        "below threshold and make no peaks (LSST's default).",
    )
    tempLocalBackground: BackgroundConfig = Field(
        default_factory=lambda: BackgroundConfig(binSize=64, useApprox=False,
                                                 algorithm="AKIMA_SPLINE"),
        description="The temporary local background of doTempLocalBackground: LSST's 64-px "
        "cells, Akima-interpolated as LSST's (an approximation or a bicubic spline through "
        "cells this small rings at a bright object's cell over the whole image). 32-px cells "
        "left fewer noise peaks in galaxies' wings but lost a third of the S/N 7–10 stars of "
        "a field where galaxies are half the bright detections.",
    )
    nPeaksMaxSimple: int = Field(
        1, ge=0,
        description="Footprints with at most this many peaks keep them; only footprints with "
        "more have their peaks found again above the local background.",
    )
    minPeakContrast: float = Field(
        0.0, ge=0,
        description="A secondary peak is kept only if it rises this many stdevs of the smoothed "
        "image above the lowest point on the line to a higher peak of its footprint "
        "(0: keep every local maximum, the default). Not an LSST option: "
        "doTempLocalBackground is LSST's way to stop noise peaks on extended sources.",
    )
    excludeMaskPlanes: list[str] = Field(
        default_factory=lambda: ["BAD", "SAT", "EDGE", "NO_DATA"],
        description="Planes left out of the stdev estimate.",
    )


class DeblendConfig(_Config):
    """SourceDeblendTask, meas_deblender's baseline (SDSS) deblender."""

    maxFootprintArea: int = Field(
        1_000_000, ge=0,
        description="Parents larger than this (pixels) are not deblended; 0: no limit. "
        "meas_deblender's default until 2023 (it is 10 000 since, to bound memory); 10 000 "
        "leaves the cores of clusters undeblended, and here a parent's cost grows with its "
        "peaks' templates, not with its area.",
    )
    maxFootprintSize: int = Field(
        0, ge=0, description="Parents wider or taller than this (pixels) are not deblended; "
        "0: no limit.",
    )
    minFootprintAxisRatio: float = Field(
        0.0, ge=0, le=1,
        description="Parents whose pixels' second moments have a smaller axis ratio b/a are "
        "not deblended (streaks); 0: no limit.",
    )
    maskLimits: dict[str, float] = Field(
        default_factory=lambda: {"NO_DATA": 0.25},
        description="Parents with more than this fraction of their pixels in a plane are not "
        "deblended (deblend_masked).",
    )
    maskPlanes: list[str] = Field(
        default_factory=lambda: ["SAT", "INTRP", "NO_DATA"],
        description="Pixels left out of the image noise (median variance) the deblender uses.",
    )
    notDeblendedMask: str | None = Field(
        "NOT_DEBLENDED", description="Mask plane set on parents that were not deblended; "
        "None: none.",
    )
    maxNumberOfPeaks: int = Field(0, ge=0, description="Most children per parent; 0: no limit.")
    tinyFootprintSize: int = Field(
        2, ge=2, description="Peaks whose PSF-fit region is this narrow or narrower are "
        "skipped (no child).",
    )
    psfChisq1: float = Field(
        1.5, gt=0, description="χ²/dof below which a peak is a point source (unshifted PSF)."
    )
    psfChisq2: float = Field(
        1.5, gt=0, description="χ²/dof below which a peak is a point source (PSF and its "
        "shift derivatives).",
    )
    psfChisq2b: float = Field(
        1.5, gt=0, description="χ²/dof below which a peak is a point source (PSF moved to the "
        "fitted shift).",
    )
    psfModelError: float = Field(
        0.02, ge=0, lt=1,
        description="Fractional PSF-model error allowed for in the point-source χ² (each "
        "pixel's variance widened by (this × its value)²). Not in LSST (0 is its test): "
        "without it bright stars fail the test on the model's small errors alone.",
    )
    edgeHandling: Literal["clip", "ramp", "noclip"] = Field(
        "ramp",
        description="Templates with flux at their footprint's edge: 'ramp' extends them by the "
        "PSF (deblend_rampedTemplate), 'noclip' keeps the pixels whose mirror is off the "
        "footprint next to an EDGE (deblend_patchedTemplate), 'clip' cuts them.",
    )
    medianSmoothTemplate: bool = Field(True, description="Median-filter the symmetric templates.")
    medianFilterHalfsize: int = Field(
        2, ge=1, description="Half-size of the median filter's box (2: 5×5 pixels); a box "
        "wider than 1.5 PSF FWHM is narrowed to that (not in LSST: it flattens the templates "
        "of stars on undersampled images).",
    )
    monotonicTemplate: bool = Field(
        True, description="Clip templates so they never rise away from their peak."
    )
    assignStrayFlux: bool = Field(
        True, description="Give flux no template claims to the children (not under 'trim')."
    )
    strayFluxRule: Literal["trim", "r-to-peak", "r-to-footprint", "nearest-footprint"] = Field(
        "trim",
        description="Flux no template claims: 'trim' drops it and shrinks the parent to the "
        "pixels the children share; else shared ∝ 1/(1+r²) to the peaks ('r-to-peak') or to "
        "the templates ('r-to-footprint'), or all to the nearest template "
        "('nearest-footprint').",
    )
    strayFluxToPointSources: Literal["never", "necessary", "always"] = Field(
        "necessary",
        description="Whether point-source children share stray flux: 'necessary' only where "
        "the parent has no extended child, 'always', or 'never'.",
    )
    clipStrayFluxFraction: float = Field(
        0.001, ge=0, lt=1, description="Stray-flux shares below this fraction are dropped."
    )


DEFAULT_PLUGINS = [
    "base_SdssCentroid",
    "base_SdssShape",
    "base_PsfFlux",
    "base_GaussianFlux",
    "base_CircularApertureFlux",
    "base_PixelFlags",
    "base_LocalBackground",
    "base_Blendedness",
    "base_SkyCoord",
    "base_Variance",
    "base_ClassificationExtendedness",
]


class SourceSlotConfig(_Config):
    """SourceSlotConfig: the measurement each ``slot_*`` alias names, LSST's defaults.

    A slot names a catalog's centroid, shape or flux of a kind whatever algorithm gave it:
    ``slot_PsfFlux_instFlux`` is ``base_PsfFlux_instFlux``. Null leaves a slot undefined.
    skyphot has one centroider and one shape algorithm, so those slots name them or none.
    """

    centroid: Literal["base_SdssCentroid"] | None = Field(
        "base_SdssCentroid", description="The centroid (slot_Centroid).")
    shape: Literal["base_SdssShape"] | None = Field(
        "base_SdssShape", description="The shape (slot_Shape).")
    psfShape: Literal["base_SdssShape_psf"] | None = Field(
        "base_SdssShape_psf", description="The PSF model's shape at the source (slot_PsfShape).")
    apFlux: str | None = Field(
        "base_CircularApertureFlux_12_0", description="The aperture flux (slot_ApFlux).")
    modelFlux: str | None = Field(
        "base_GaussianFlux",
        description="The model flux (slot_ModelFlux), which extendedness compares the PSF flux "
        "with. LSST's data-release pipeline sets modelfit_CModel, which skyphot lacks; "
        "base_GaussianFlux is SingleFrameMeasurementTask's own default.")
    psfFlux: str | None = Field("base_PsfFlux", description="The PSF flux (slot_PsfFlux).")
    gaussianFlux: str | None = Field(
        "base_GaussianFlux", description="The Gaussian flux (slot_GaussianFlux).")
    calibFlux: str | None = Field(
        "base_CircularApertureFlux_12_0",
        description="The flux for calibration (slot_CalibFlux): what aperture corrections "
        "and photometric calibration take as total.")


class ClassificationConfig(_Config):
    """base_ClassificationExtendedness (meas_base classification.py): extended when
    fluxRatio·model + modelErrFactor·σ_model ≥ psf + psfErrFactor·σ_psf."""

    fluxRatio: float = Field(0.95, gt=0, description="Critical ratio of PSF to model flux.")
    modelErrFactor: float = Field(0.0, description="Correction factor for the model flux error.")
    psfErrFactor: float = Field(0.0, description="Correction factor for the PSF flux error.")


class MeasurementConfig(_Config):
    """SingleFrameMeasurementTask."""

    plugins: list[str] = Field(default_factory=lambda: list(DEFAULT_PLUGINS))
    doReplaceWithNoise: bool = Field(
        True, description="Replace other sources' footprints with noise while measuring one."
    )
    apertureRadii: ApertureRadii = Field(
        default_factory=lambda: [3.0, 4.5, 6.0, 9.0, 12.0, 17.0, 25.0, 35.0, 50.0, 70.0],
        description="base_CircularApertureFlux radii in pixels.",
    )
    doApCorr: bool = Field(True, description="Apply the exposure's aperture corrections.")
    noiseSeed: int = Field(0, description="Seed of the noise replacing other sources.")
    slots: SourceSlotConfig = Field(default_factory=SourceSlotConfig)
    classification: ClassificationConfig = Field(default_factory=ClassificationConfig)


FORCED_DEFAULT_PLUGINS = [
    "base_TransformedCentroid",
    "base_PsfFlux",
    "base_TransformedShape",
    "base_PixelFlags",
]
APERTURE_PLUGIN = "base_CircularApertureFlux"
FORCED_PLUGINS = FORCED_DEFAULT_PLUGINS + [APERTURE_PLUGIN, "base_LocalBackground"]
FORCED_APERTURE_RADII = (3.0, 4.5, 6.0, 9.0, 12.0)


class ForcedConfig(_Config):
    """ForcedMeasurementTask: measurements at positions the caller gives."""

    plugins: list[Literal[
        "base_TransformedCentroid", "base_PsfFlux", "base_TransformedShape", "base_PixelFlags",
        "base_CircularApertureFlux", "base_LocalBackground",
    ]] = Field(default_factory=lambda: list(FORCED_DEFAULT_PLUGINS))
    apertureRadii: ApertureRadii = Field(
        default_factory=lambda: list(FORCED_APERTURE_RADII),
        description="base_CircularApertureFlux radii in pixels.",
    )
    badMaskPlanes: list[str] = Field(
        default_factory=lambda: ["BAD", "SAT", "NO_DATA"],
        description="Pixels with these planes are left out of the PSF fit (and flagged).",
    )


class DetectConfig(_Config):
    """Everything a ``detect`` job takes."""

    characterize: CharacterizeConfig = Field(default_factory=CharacterizeConfig)
    detection: DetectionConfig = Field(default_factory=DetectionConfig)
    deblend: DeblendConfig = Field(default_factory=DeblendConfig)
    doDeblend: bool = Field(True, description="Run the deblender.")
    measurement: MeasurementConfig = Field(default_factory=MeasurementConfig)

    @model_validator(mode="after")
    def _one_calib_flux(self) -> DetectConfig:
        """The aperture corrections are tied to slot_CalibFlux: one aperture for both."""
        radius = self.characterize.apCorr.calibFluxRadius
        reference = f"base_CircularApertureFlux_{radius_name(radius)}"
        slot = self.measurement.slots.calibFlux
        if self.characterize.doApCorr and slot is not None and slot != reference:
            raise ValueError(
                f"measurement.slots.calibFlux is {slot} but the aperture corrections are "
                f"measured against {reference} (characterize.apCorr.calibFluxRadius = "
                f"{radius:g}); set both to the same aperture")
        return self


def apply_overrides(config: ConfigT, overrides: list[str]) -> ConfigT:
    """Apply ``section.key=value`` strings (the CLI's ``--set``) and validate the result."""
    data = config.model_dump()
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"unknown config section {part!r} in {key!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ValueError(f"unknown config key {key!r}")
        node[parts[-1]] = _parse_value(value.strip())
    return type(config).model_validate(data)


def _parse_value(text: str) -> object:
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text
