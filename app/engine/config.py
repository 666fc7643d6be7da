"""Configuration of the detection pipeline, with the names LSST's tasks use.

``CharacterizeImageTask`` → ``characterize``, ``SourceDetectionTask`` → ``detection``,
``SourceDeblendTask`` → ``deblend``, ``SingleFrameMeasurementTask`` → ``measurement``.
Unknown keys are refused (``extra="forbid"``) so a typo never silently runs the defaults.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_APERTURES = 12
MIN_APERTURE_RADIUS = 0.5  # pixels: smaller names no column (0.04 → "0_0") nor a pixel
MAX_APERTURE_RADIUS = 100.0


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
    background: BackgroundConfig = Field(default_factory=BackgroundConfig)
    minPeakContrast: float = Field(
        3.0, ge=0,
        description="A secondary peak is kept only if it rises this many stdevs of the smoothed "
        "image above the lowest point on the line to a higher peak of its footprint "
        "(0: keep every local maximum). Not an LSST option: it stops noise peaks on extended "
        "sources and bright wings from becoming children.",
    )
    excludeMaskPlanes: list[str] = Field(
        default_factory=lambda: ["BAD", "SAT", "EDGE", "NO_DATA"],
        description="Planes left out of the stdev estimate.",
    )


class DeblendConfig(_Config):
    """SourceDeblendTask."""

    maxFootprintArea: int = Field(
        10000, ge=0, description="Parents larger than this (pixels) are not deblended; 0: no limit."
    )
    maxNumberOfPeaks: int = Field(0, ge=0, description="Most children per parent; 0: no limit.")
    psfChisq1: float = Field(
        1.5, gt=0, description="Reduced χ² below which a peak is deblended as a point source."
    )
    strayFluxToPointSources: Literal["never", "necessary", "always"] = Field(
        "necessary", description="Where flux no template claims is assigned."
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
