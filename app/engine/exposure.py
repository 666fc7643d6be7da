"""The in-memory exposure: image, mask, variance, WCS, PSF, calibration and metadata.

This is what LSST calls an ExposureF (a calexp once processed). Arrays are indexed
``[y, x]``; pixel coordinates are 0-based with integer values at pixel centres, as in the
LSST pipelines and astropy. ``xy0`` is the position of pixel ``[0, 0]`` in the parent image
(non-zero for a cutout), and catalog positions are reported in that parent frame. Sky
positions are ICRS whatever the WCS's own frame (`pixel_to_sky`, `sky_to_pixel`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from app.engine.masks import MaskPlanes
from app.engine.sky_frame import SkyFrame, frame_of, icrs_to_pixel, pixel_to_icrs

if TYPE_CHECKING:
    from app.engine.apcorr import ApCorr
    from app.engine.psf import PsfModel

AB_NJY_ZEROPOINT = 31.4  # AB magnitude of 1 nJy


@dataclass(frozen=True)
class PhotoCalib:
    """Photometric calibration: how many nJy one instrumental count is.

    LSST's PhotoCalib "calibrationMean" is exactly this number.
    """

    njy_per_count: float
    njy_per_count_err: float = 0.0

    @classmethod
    def from_magzero(cls, magzero: float) -> PhotoCalib:
        """From the AB magnitude of a source giving one count (``MAGZERO``)."""
        return cls(10.0 ** (-0.4 * (magzero - AB_NJY_ZEROPOINT)))

    @classmethod
    def from_fluxmag0(cls, fluxmag0: float, fluxmag0_err: float = 0.0) -> PhotoCalib:
        """From the counts of a 0th-magnitude AB source (``FLUXMAG0``), 3631 Jy."""
        njy = 3631e9 / fluxmag0
        return cls(njy, njy * fluxmag0_err / fluxmag0 if fluxmag0_err else 0.0)

    @property
    def magzero(self) -> float:
        """AB magnitude of one count."""
        return AB_NJY_ZEROPOINT - 2.5 * np.log10(self.njy_per_count)


@dataclass
class ExposureInfo:
    """Observation metadata, as LSST's VisitInfo and dataId carry it."""

    visit: int | None = None
    detector: int | None = None
    band: str | None = None
    physical_filter: str | None = None
    mjd: float | None = None
    exptime: float | None = None
    extra: dict[str, object] = field(default_factory=dict)
    provenance: dict[str, str] = field(default_factory=dict)
    """Where each part came from, for the user: ``psf``, ``photo_calib``, ``ap_corr``,
    ``variance``, ``mask``, ``background``, ``pixel_frame``, ... → a short phrase such as
    "archive GaussianPsf", "header FLUXMAG0", "measured", "weight map oow.fits"."""
    notes: list[str] = field(default_factory=list)
    """What the reader fixed, skipped or could not decode, each a sentence a user can act on
    (a non-standard header card repaired, an archived PiffPsf not decoded, ...)."""


@dataclass
class Exposure:
    """A calibrated exposure: the unit every engine step works on."""

    image: np.ndarray
    mask: np.ndarray
    variance: np.ndarray
    planes: MaskPlanes = field(default_factory=MaskPlanes)
    wcs: WCS | None = None
    psf: PsfModel | None = None
    photo_calib: PhotoCalib | None = None
    info: ExposureInfo = field(default_factory=ExposureInfo)
    background: np.ndarray | None = None
    xy0: tuple[int, int] = (0, 0)
    ap_corr: dict[str, ApCorr] = field(default_factory=dict)  # flux name → correction field
    _sky_frame: tuple[WCS, SkyFrame] | None = field(
        default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, dtype=np.float32)
        self.mask = np.asarray(self.mask, dtype=np.int32)
        self.variance = np.asarray(self.variance, dtype=np.float32)
        if self.image.ndim != 2:
            raise ValueError(f"image must be 2-d, got shape {self.image.shape}")
        for name in ("mask", "variance"):
            if getattr(self, name).shape != self.image.shape:
                raise ValueError(
                    f"{name} shape {getattr(self, name).shape} differs from image "
                    f"shape {self.image.shape}"
                )
        if self.background is not None and self.background.shape != self.image.shape:
            raise ValueError("background shape differs from image shape")

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.image.shape  # type: ignore[return-value]

    @property
    def width(self) -> int:
        return self.image.shape[1]

    @property
    def height(self) -> int:
        return self.image.shape[0]

    def on_pixels(self, ax: np.ndarray, ay: np.ndarray) -> np.ndarray:
        """Whether each array-frame position (not parent-frame: subtract ``xy0``) lies on a
        pixel; NaN positions do not."""
        h, w = self.shape
        return (ax >= -0.5) & (ax < w - 0.5) & (ay >= -0.5) & (ay < h - 0.5)

    def pixel_scale_arcsec(self) -> float | None:
        """Mean pixel scale in arcseconds, from the WCS (None without one)."""
        if self.wcs is None or not self.wcs.has_celestial:
            return None
        scales = proj_plane_pixel_scales(self.wcs.celestial)
        return float(np.sqrt(scales[0] * scales[1]) * 3600.0)

    def copy(self, *, share_variance: bool = False) -> Exposure:
        """A deep copy of the pixel planes; WCS, PSF and calibration are shared (immutable).

        ``share_variance`` gives the copy a read-only view of the variance instead, for work
        that never writes it (a 4k × 4k plane is 64 MB not to allocate and fill).
        """
        variance = self.variance.copy() if not share_variance else self.variance.view()
        variance.flags.writeable = not share_variance
        return replace(
            self,
            image=self.image.copy(),
            mask=self.mask.copy(),
            variance=variance,
            planes=MaskPlanes(self.planes.as_dict()),
            background=None if self.background is None else self.background.copy(),
            ap_corr=dict(self.ap_corr),
        )

    def with_background_added(self) -> Exposure:
        """A copy with the subtracted background added back (the tutorial's section 2.2)."""
        if self.background is None:
            raise ValueError("this exposure carries no subtracted background to add back")
        out = self.copy()
        out.image += self.background
        out.background = None
        return out

    @property
    def sky_frame(self) -> SkyFrame:
        """The celestial frame of the WCS and its conversion to ICRS (found once per WCS)."""
        if self.wcs is None:
            raise ValueError("this exposure has no WCS")
        if self._sky_frame is None or self._sky_frame[0] is not self.wcs:
            self._sky_frame = (self.wcs, frame_of(self.wcs))
        return self._sky_frame[1]

    def pixel_to_sky(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ICRS RA, Dec in degrees of parent-frame pixel positions."""
        frame = self.sky_frame
        return pixel_to_icrs(self.wcs, frame, np.asarray(x, float) - self.xy0[0],
                             np.asarray(y, float) - self.xy0[1])

    def sky_to_pixel(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Parent-frame pixel positions of ICRS RA, Dec in degrees."""
        x, y = icrs_to_pixel(self.wcs, self.sky_frame, ra, dec)
        return x + self.xy0[0], y + self.xy0[1]
