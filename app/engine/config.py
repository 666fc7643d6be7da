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
    """CharacterizeImageTask: background and PSF."""

    psfIterations: int = Field(1, ge=1, le=10, description="Rounds of PSF determination.")
    doMeasurePsf: bool = Field(
        True, description="Measure the PSF; if False, use the exposure's own PSF model."
    )
    doSubtractBackground: bool = Field(
        False, description="Subtract a background first (a calexp has had its own subtracted)."
    )
    background: BackgroundConfig = Field(default_factory=BackgroundConfig)
    initialPsfFwhm: float = Field(
        1.5 * 2.3548, gt=0, description="FWHM in pixels of the Gaussian first-guess PSF."
    )
    psfCandidateThreshold: float = Field(
        20.0, gt=0,
        description="PSF star candidates must peak this many stdevs above the background "
        "(LSST uses 50; stars are weighted by their S/N, so fainter ones add information).",
    )
    psfMaxCandidates: int = Field(300, ge=5, description="Most PSF stars used.")
    psfStampSize: int = Field(41, ge=11, description="Side of the PSF model stamp (odd).")
    psfSpatialOrder: int = Field(2, ge=0, le=4, description="Polynomial order of PSF variation.")
    apCorrRadius: float = Field(
        35.0, gt=0,
        description="Aperture radius (pixels) that PSF and Gaussian fluxes are tied to; large, "
        "so that a point source's corrected flux is its total flux.",
    )


class DetectionConfig(_Config):
    """SourceDetectionTask."""

    thresholdValue: float = Field(5.0, gt=0, description="Threshold in units of thresholdType.")
    thresholdType: Literal["stdev", "pixel_stdev", "variance", "value"] = Field(
        "stdev", description="How thresholdValue is turned into a pixel threshold."
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
    doApCorr: bool = Field(True, description="Measure and apply aperture corrections.")
    apCorrRadius: float = Field(
        35.0, gt=0,
        description="Aperture radius for aperture corrections measured here, when the "
        "exposure carries none from characterization.",
    )
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
