"""Read and write exposures as FITS: the LSST calexp layout and plain single-HDU images.

An LSST calexp is a header-only primary HDU followed by the image extensions ``IMAGE``,
``MASK`` and ``VARIANCE`` (``EXTNAME`` and ``EXTTYPE``), each carrying the WCS, and an
archive of binary tables (PSF, PhotoCalib, ...) pointed at by ``AR_HDU`` and ``*_ID`` keys in
the primary header. skyphot writes the same layout, plus an optional ``BACKGROUND`` extension
holding the background that was subtracted, and calibration and observation keys in the
primary header. It does not write the archive tables.

Pixels with a non-finite image or variance value are flagged ``NO_DATA`` on reading, their
image value set to 0 and their variance to a typical value, so the engine's sums stay finite
and its masks decide what to ignore.
"""

from __future__ import annotations

import gzip
import os
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar

import numpy as np
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS, FITSFixedWarning

from app.engine.apcorr import ApCorr
from app.engine.background import estimate_background_and_rms
from app.engine.config import BackgroundConfig
from app.engine.exposure import AB_NJY_ZEROPOINT, Exposure, ExposureInfo, PhotoCalib
from app.engine.masks import MAX_PLANES, MaskPlanes
from app.engine.psf import PsfModel
from app.engine.sky_frame import SkyFrame, UnsupportedSkyFrame, frame_of, pixel_to_icrs
from app.io.afw_archive import (
    ArchiveError,
    ArchiveReader,
    ArchiveWriter,
    decode_apcorr_map,
    decode_filter_label,
    decode_photocalib,
    header_card,
    is_band_name,
    put_apcorr_map,
    put_filter_label,
    put_photocalib,
)
from app.io.afw_psf import decode_psf, put_psf
from app.io.companions import read_companions
from app.io.errors import ExposureReadError
from app.io.fits_open import WARNINGS_LOCK as _WARNINGS_LOCK
from app.io.fits_open import (
    HduSpec,
    ImageLike,
    Source,
    contents,
    find_hdu,
    first_image,
    open_fits,
    plane_name,
)
from app.io.fits_open import header_shape as _header_shape
from app.io.fits_pixels import (
    PixelCensus,
    as_mask_bits,
    block_rows,
    block_rows_of,
    float_blocks,
    read_float,
    read_integers,
)
from app.io.frames import PixelFrame, celestial_header, read_pixel_frame, xy0_cards
from app.io.psf_fits import apcorr_from_hdu, psf_from_hdu, psf_to_hdu
from app.io.read_options import ReadOptions

T = TypeVar("T")

GZIP_LEVEL = 6  # zlib's default: most of the gain of 9 at a fraction of the time
SKY_SAMPLE = 1 << 18
"""Pixels sampled for the sky-noise estimate of a plain image: its sigma to 0.2 %, at a
quarter of the cost of 10⁶ (the sigma-clipped statistics are most of reading a plain image)."""
MIN_SIDE = 3
"""Smallest usable image side: the smallest with a pixel whose 8 neighbours all exist, which
detection's 8-connected footprints and peaks need."""
PLANE_BYTES = 4  # float32 image and variance, int32 mask, float32 background: per pixel

FLOAT_BITPIX = {8, 16, 32, 64, -32, -64}  # all FITS image types; integers are converted
MASK_BITPIX = {8, 16, 32, 64}  # a mask holds bit planes, so it must be an integer image

# Header keys for observation metadata, most specific first. The "LSST BUTLER DATAID" keys
# are the data ID the Rubin butler writes into every dataset's primary header; the short
# ones are the obs_* / afw VisitInfo and common observatory conventions.
VISIT_KEYS = ("LSST BUTLER DATAID VISIT", "VISIT", "EXPID")
DETECTOR_KEYS = ("LSST BUTLER DATAID DETECTOR", "DETECTOR", "CCDNUM")
BAND_KEYS = ("LSST BUTLER DATAID BAND", "BAND")
FILTER_KEYS = ("LSST BUTLER DATAID PHYSICAL_FILTER", "FILTER")
DATE_KEYS = ("DATE-AVG", "MJD-OBS", "DATE-OBS")  # the middle of the exposure first
UNSET_DATE = Time("1970-01-01T00:00:00", scale="tai")  # afw DateTime of 0 ns
EXPTIME_KEYS = ("EXPTIME",)
CALIB_KEYS = ("FLUXMAG0", "FLUXMAG0ERR", "MAGZERO")

# Primary-header cards not kept in ``info.extra["header"]``: FITS structure, WCS (written
# from ``exposure.wcs`` into each extension), and keys written from typed fields.
STRUCTURAL_KEYS = {
    "", "SIMPLE", "BITPIX", "NAXIS", "EXTEND", "PCOUNT", "GCOUNT", "XTENSION", "EXTNAME",
    "EXTTYPE", "EXTVER", "INHERIT", "BSCALE", "BZERO", "BLANK", "CHECKSUM", "DATASUM",
    "TIMESYS", *CALIB_KEYS,
}
WCS_KEY = re.compile(
    r"^(WCSAXES|CRPIX\d|CRVAL\d|CDELT\d|CTYPE\d|CUNIT\d|CROTA\d|CRDER\d|CSYER\d|CD\d_\d|"
    r"PC\d_\d|PV\d_\d+|PS\d_\d+|LONPOLE|LATPOLE|RADESYS|RADECSYS|EQUINOX|EPOCH|WCSNAME|"
    r"[AB]P?_ORDER|[AB]P?_\d+_\d+|[AB]_DMAX|LTV\d|LTM\d_\d|NAXIS\d+)[A-Z]?$"
)
# afw's archive pointers (AR_HDU, PSF_ID, PHOTOCALIB_ID, ...): meaningless once the archive
# tables are not written, and harmful if a reader followed them into the wrong HDU.
ARCHIVE_KEY = re.compile(r"^(AR_HDU|EXPINFO_V|[A-Z0-9_]+_ID|ARCHIVE_ID.*|APCORR NSTARS .*)$")
APCORR_NSTARS = "APCORR NSTARS "  # + flux name: stars an archived aperture correction used


# ---------------------------------------------------------------------------------------------
# Finding the planes


@dataclass
class _Layout:
    """Which HDUs hold what; built from headers only."""

    primary: fits.Header
    image: ImageLike
    image_name: str
    mask: ImageLike | None
    variance: ImageLike | None
    background: ImageLike | None
    calexp: bool  # True when the planes were found by EXTNAME, as LSST writes them
    image_index: int = 0
    provenance: dict[str, str] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return _header_shape(self.image.header)  # type: ignore[return-value]

    @property
    def meta_headers(self) -> tuple[fits.Header, ...]:
        """Headers to read metadata from: the primary, and for a plain image its own header.

        LSST puts all metadata in the primary header, and says so with ``INHERIT = T`` in
        the extensions; without it (old afw files, plain images in an extension) the image
        header is searched too, as afw does.
        """
        if self.image.header is self.primary or self.image.header.get("INHERIT") is True:
            return (self.primary,)
        return (self.primary, self.image.header)


def _locate(hdul: fits.HDUList, hdu: HduSpec | None = None,
            notes: list[str] | None = None) -> _Layout:
    """Find the image, mask, variance and background HDUs and check their shapes and types.

    ``hdu`` chooses the image; by default it is LSST's IMAGE (EXTNAME or, in older afw
    files, EXTTYPE), else the first 2-d image, with a note when there were others. The
    MASK, VARIANCE and BACKGROUND planes are taken beside an IMAGE only: as afw's
    MaskedImageFitsReader, an image read from another HDU comes without them. afw finds
    the planes by position (HDUs 1, 2, 3) and checks their EXTTYPE; here they are found by
    name, so a calexp with its planes in another order still reads.
    """
    named = {plane_name(h): h for h in hdul if isinstance(h, ImageLike)}
    if hdu is not None:
        index = find_hdu(hdul, hdu, "the image")
    elif "IMAGE" in named:
        index = next(i for i, h in enumerate(hdul) if h is named["IMAGE"])
    else:
        found = first_image(hdul)
        if found is None:
            raise ExposureReadError(
                "no_image",
                f"no 2-d image in the file (it holds: {contents(hdul)}); expected an LSST "
                "calexp (IMAGE, MASK and VARIANCE extensions) or a FITS image",
            )
        index = found
        others = [i for i, h in enumerate(hdul) if i != index and isinstance(h, ImageLike)
                  and len(_header_shape(h.header)) >= 2]
        if others and notes is not None:
            notes.append(
                f"the file holds {len(others) + 1} images; HDU #{index} "
                f"({plane_name(hdul[index]) or 'PRIMARY'}), the first, was read: choose "
                "another by EXTNAME or index with hdu")
    image = hdul[index]
    name = plane_name(image) or ("PRIMARY" if index == 0 else f"HDU #{index}")
    calexp = name == "IMAGE"
    mask, variance = (named.get("MASK"), named.get("VARIANCE")) if calexp else (None, None)
    shape = _header_shape(image.header)
    if len(shape) != 2:
        raise ExposureReadError(
            "no_image", f"{name} has shape {shape}; expected a 2-d image (height, width)"
        )
    if min(shape) < MIN_SIDE:
        raise ExposureReadError(
            "too_small", f"{name} is {shape[0]}×{shape[1]} pixels; nothing can be detected "
            f"or measured on an image smaller than {MIN_SIDE}×{MIN_SIDE}"
        )
    background = named.get("BACKGROUND")
    for plane, other in (("MASK", mask), ("VARIANCE", variance), ("BACKGROUND", background)):
        if other is not None and _header_shape(other.header) != shape:
            raise ExposureReadError(
                "shape_mismatch",
                f"extension {plane} has shape {_header_shape(other.header)} but {name} has "
                f"{shape}; a calexp needs IMAGE, MASK and VARIANCE of one shape",
            )
    for plane, other, allowed in (
        (name, image, FLOAT_BITPIX),
        ("MASK", mask, MASK_BITPIX),
        ("VARIANCE", variance, FLOAT_BITPIX),
        ("BACKGROUND", background, FLOAT_BITPIX),
    ):
        if other is not None and other.header.get("BITPIX") not in allowed:
            raise ExposureReadError(
                "unsupported_bitpix",
                f"{plane} has BITPIX {other.header.get('BITPIX')}; expected one of "
                f"{sorted(allowed)}" + (" (a mask holds integer bit planes)" if plane == "MASK"
                                        else ""),
            )
    return _Layout(hdul[0].header, image, name, mask, variance, background, calexp, index,
                   {"image": name if name.startswith("HDU #") else f"HDU #{index} {name}"})


@dataclass
class _Pixels:
    """The planes read for an exposure, and where the variance and mask came from."""

    image: np.ndarray
    mask: np.ndarray
    variance: np.ndarray
    background: np.ndarray | None
    provenance: dict[str, str]


def _read_pixels(hdul: fits.HDUList, layout: _Layout, options: ReadOptions,
                 planes: MaskPlanes, notes: list[str], max_bytes: int | None) -> _Pixels:
    """Image, mask, variance and background: the file's planes and the companions'.

    A companion variance or weight replaces the file's variance; a data-quality map's bits
    are added to the file's mask. Refused (`PixelCensus`) when nothing could be measured.
    """
    shape = layout.shape
    _check_memory(layout, options, max_bytes)
    provenance = dict(layout.provenance)
    image = read_float(layout.image, layout.image_name, shape)
    if layout.mask is None:
        mask = np.zeros(shape, dtype=np.int32)
        provenance["mask"] = "none in the file (a plain image)"
    else:
        values, blank = read_integers(layout.mask, "MASK", shape)
        mask = as_mask_bits(values, "MASK")
        if blank is not None:
            mask[blank] = np.int32(planes.bitmask("NO_DATA"))
        provenance["mask"] = "MASK plane"
    companions = read_companions(hdul, layout.image, shape, options, planes, notes, max_bytes)
    provenance.update(companions.provenance)
    if companions.mask is not None:
        mask |= companions.mask
        if layout.mask is not None:
            provenance["mask"] = f"MASK plane, and {companions.provenance['mask']}"
    variance = companions.variance
    if variance is None and layout.variance is not None:
        variance = read_float(layout.variance, "VARIANCE", shape)
        provenance["variance"] = "VARIANCE plane"
    finite = np.isfinite(image)
    census = PixelCensus()
    step = block_rows_of(shape)
    for y0 in range(0, shape[0], step):
        rows = slice(y0, y0 + step)
        census.add(finite[rows], None if variance is None else variance[rows])
    census.refuse(layout.image_name, shape, companions.variance_source or "VARIANCE plane",
                  options.weight is not None)
    typical = None
    if variance is None:
        variance, typical = _estimate_variance(image, finite, layout)
        provenance["variance"] = _variance_source(layout)
    background = companions.background
    if background is None and layout.background is not None:
        background = read_float(layout.background, "BACKGROUND", shape)
        provenance["background"] = "BACKGROUND plane"
    if census.usable < image.size:  # some pixel lacks a value or a variance
        _flag_no_data(image, mask, variance, finite, planes, typical)
    return _Pixels(image, mask, variance, background, provenance)


def _check_memory(layout: _Layout, options: ReadOptions, max_bytes: int | None) -> None:
    """Refuse (``too_large``) an exposure whose planes would take more than ``max_bytes``."""
    if max_bytes is None:
        return
    height, width = layout.shape
    count = 3 + (layout.background is not None or options.background is not None)
    need = height * width * PLANE_BYTES * count
    if need > max_bytes:
        raise ExposureReadError(
            "too_large",
            f"the exposure needs {need} bytes in memory ({height}×{width} pixels × {count} "
            f"planes of {PLANE_BYTES} bytes), more than the limit of {max_bytes}; send a "
            "cutout",
        )


def _scan_pixels(layout: _Layout) -> None:
    """The refusals of `_read_pixels` for the file's own planes, a block at a time, so a
    file can be checked at upload in the memory of one block."""
    shape = layout.shape
    census = PixelCensus()
    if layout.variance is None:
        for _, block in float_blocks(layout.image, layout.image_name, shape):
            census.add(np.isfinite(block), None)
    else:
        step = block_rows(layout.image, shape)  # both planes in the same rows
        for (_, block), (_, var_block) in zip(
                float_blocks(layout.image, layout.image_name, shape, step=step),
                float_blocks(layout.variance, "VARIANCE", shape, step=step), strict=True):
            census.add(np.isfinite(block), var_block)
    census.refuse(layout.image_name, shape, "VARIANCE plane", False)


# ---------------------------------------------------------------------------------------------
# Header parsing (shared by read_exposure and read_exposure_metadata)


@dataclass
class _Frames:
    """The image's WCS, its celestial frame and its pixel frame, with what reading them
    fixed or left out (sentences for ``ExposureInfo.notes``)."""

    wcs: WCS | None
    sky: SkyFrame | None
    pixel: PixelFrame
    notes: list[str]

    def noted(self, info: ExposureInfo) -> ExposureInfo:
        """``info`` with the frames in its provenance and the notes added."""
        if self.sky is not None:
            info.provenance["sky_frame"] = _sky_provenance(self.sky)
        info.provenance["pixel_frame"] = self.pixel.provenance
        info.notes.extend(self.notes)
        if self.pixel.note:
            info.notes.append(self.pixel.note)
        return info

    def corners(self, height: int, width: int) -> list[tuple[float, float]] | None:
        """ICRS (RA, Dec) in degrees of the outer corners of the pixel grid,
        counter-clockwise from pixel (0, 0); None without a WCS."""
        if self.wcs is None or self.sky is None:
            return None
        ra, dec = pixel_to_icrs(self.wcs, self.sky, [-0.5, width - 0.5, width - 0.5, -0.5],
                                [-0.5, -0.5, height - 0.5, height - 0.5])
        return [(float(a), float(d)) for a, d in zip(ra, dec, strict=True)]

    def sky_metadata(self) -> dict[str, Any] | None:
        """``frame``, ``equinox``, ``obstime``, ``conversion`` and ``notes``; None when the
        file has no WCS at all."""
        if self.sky is None and not self.notes:
            return None
        described = self.sky.describe() if self.sky is not None else dict.fromkeys(
            ("frame", "equinox", "obstime", "conversion"))
        return described | {"notes": list(self.notes)}


def _sky_provenance(sky: SkyFrame) -> str:
    """E.g. "WCS in fk5 J2000.000, rotated to ICRS", "WCS in icrs"."""
    text = f"WCS in {sky.name}" + (f" {sky.equinox}" if sky.equinox else "")
    if sky.obstime and sky.obstime != sky.equinox:
        text += f" at epoch {sky.obstime}"
    how = {"none": "", "rotation": ", rotated to ICRS",
           "astropy": ", converted to ICRS by astropy"}[sky.conversion]
    return text + how


def _read_frames(layout: _Layout) -> _Frames:
    wcs, notes = _read_wcs(layout)
    sky = None
    if wcs is not None:
        try:
            sky = frame_of(wcs)
        except UnsupportedSkyFrame as exc:
            notes.append(f"The WCS is not used: {exc}. Catalogs have no sky coordinates; "
                         "give positions as x, y.")
            wcs = None
    return _Frames(wcs, sky, _read_xy0(layout), notes)


def _read_wcs(layout: _Layout) -> tuple[WCS | None, list[str]]:
    """The image's celestial WCS (None when it has none, ``bad_wcs`` when it is broken),
    its frame keys inherited from the primary header as `celestial_header` says, and
    notes on those keys."""
    plane = layout.image_name
    header, notes = celestial_header(
        layout.image.header, None if layout.image.header is layout.primary else layout.primary)
    if "CTYPE1" not in header and "CTYPE2" not in header:
        return None, []
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            # astropy reports each header fix it applies (e.g. MJD-OBS from DATE-OBS); the
            # fixed WCS is what we want, so the notes are noise here.
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header)
        if not wcs.has_celestial:
            return None, []
        celestial = wcs.celestial
        ny, nx = _header_shape(header)[-2:]
        world = celestial.all_pix2world([[nx / 2.0, ny / 2.0]], 0)
        if not np.all(np.isfinite(world)):
            raise ValueError("the image centre does not map to a finite sky position")
    except Exception as exc:
        raise ExposureReadError(
            "bad_wcs",
            f"the WCS in the {plane} header cannot be used ({exc}); expected a celestial FITS "
            "WCS such as RA---TAN/DEC--TAN, optionally with SIP distortion (-SIP)",
        ) from exc
    return celestial, notes


def _read_xy0(layout: _Layout) -> PixelFrame:
    """The parent frame of the image's pixels: afw's ``A`` WCS, else ``LTV1/LTV2`` in an LSST
    calexp layout, else the array index (see `app.io.frames`)."""
    return read_pixel_frame(layout.image.header, afw_layout=layout.calexp)


def _read_planes(header: fits.Header | None) -> MaskPlanes:
    """Mask planes from the ``MP_<NAME> = bit`` keys afw writes; the LSST default otherwise."""
    if header is None:
        return MaskPlanes()
    bits = {key[3:]: value for key, value in header.items() if key.startswith("MP_")}
    if not bits:
        return MaskPlanes()
    try:
        return MaskPlanes({name: int(bit) for name, bit in bits.items()})
    except (TypeError, ValueError) as exc:
        raise ExposureReadError(
            "unsupported_bitpix",
            f"the MASK header's plane definitions {bits} are unusable ({exc}); expected "
            f"MP_<NAME> = distinct bit numbers 0..{MAX_PLANES - 1}",
        ) from exc


def _first(
    headers: Iterable[fits.Header], keys: Iterable[str], parse: Callable[[Any], T]
) -> tuple[T | None, str | None]:
    """The first of ``keys`` in ``headers`` whose value ``parse`` accepts, and that key."""
    for header in headers:
        for key in keys:
            if key in header:
                try:
                    return parse(header[key]), key
                except (TypeError, ValueError, OverflowError):
                    continue
    return None, None


def _as_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, bool) or float(value) != int(value):
        raise ValueError(f"{value!r} is not an integer")
    return int(value)


def _as_str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a name")
    return value.strip()


def _as_positive(value: Any) -> float:
    number = float(value)
    if not number > 0 or not np.isfinite(number):
        raise ValueError(f"{value!r} is not a positive number")
    return number


def _as_finite(value: Any) -> float:
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(f"{value!r} is not finite")
    return number


def _time_parser(headers: tuple[fits.Header, ...]) -> Callable[[Any], float]:
    """Parse an MJD number or ISO date to an MJD in UTC, honouring ``TIMESYS``.

    afw writes ``DATE-AVG`` in TAI with ``TIMESYS = 'TAI'``; FITS defaults to UTC.
    """
    timesys, _ = _first(headers, ("TIMESYS",), _as_str)
    scale = (timesys or "utc").lower()
    if scale not in Time.SCALES:
        scale = "utc"

    def parse(value: Any) -> float:
        if isinstance(value, str):
            time = Time(value.strip().rstrip("Z"), scale=scale)  # ISO/FITS, date-only too
        else:
            time = Time(_as_finite(value), format="mjd", scale=scale)
        return float(time.utc.mjd if scale != "utc" else time.mjd)

    return parse


# Physical filter names whose band is the letter they carry: HSC-I, HSC-R2 (obs_subaru),
# "g DECam SDSS c0001 ..." (obs_decam), r.MP9601 (MegaCam), i_sim_1.4 (LSST simulations).
BAND_IN_FILTER = re.compile(
    r"^(?:[A-Za-z]+-(?P<a>[ugrizyUGRIZY])\d?|(?P<b>[ugrizy])(?:[_ .].*)?)$"
)
UNKNOWN_FILTER = "_unknown_"  # afw's name for "no filter"


def _band_from_filter(physical_filter: str | None) -> str | None:
    """An LSST band from a physical filter name: ``i``, ``i_sim_1.4``, ``HSC-I``, ``HSC-R2``,
    ``g DECam SDSS c0001 4720.0 1520.0``, ``r.MP9601``. Which band a physical filter belongs
    to is the camera's definition (obs packages), so this covers the common naming only."""
    match = BAND_IN_FILTER.match(physical_filter or "")
    if match is None:
        return None
    return (match["a"] or match["b"]).lower()


@dataclass
class _Components:
    """What a file holds besides pixels and header metadata (PSF, calibration, aperture
    corrections, filter label), where each came from, and what could not be used."""

    psf: PsfModel | None = None
    photo_calib: PhotoCalib | None = None
    ap_corr: dict[str, ApCorr] = field(default_factory=dict)
    band: str | None = None
    physical_filter: str | None = None
    provenance: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _read_components(hdul: fits.HDUList, layout: _Layout) -> _Components:
    """The PSF, calibration, aperture corrections and filter of a file: skyphot's own
    extensions first (exact float64 copies of what it measured), then afw's archive, then
    the header keys; a part that cannot be decoded is named in ``notes`` and left out."""
    found = _Components()
    archive = None
    try:
        archive = ArchiveReader.of(hdul, layout.primary)
    except ArchiveError as exc:
        found.notes.append(f"the afw archive cannot be read ({exc}); its PSF, calibration and "
                           "aperture corrections are not used")
    xy0 = _read_xy0(layout).xy0
    found.psf = _read_psf(hdul, archive, layout.shape, xy0, found)
    found.photo_calib = _read_calib(layout, archive, found)
    found.ap_corr = _read_apcorr(hdul, archive, xy0, layout.primary, found)
    if archive is not None and "FILTER" in archive.ids:
        try:
            band, physical = decode_filter_label(archive, archive.ids["FILTER"])
        except ArchiveError as exc:
            found.notes.append(f"the archived FilterLabel cannot be read ({exc})")
        else:
            found.provenance["filter"] = "archive FilterLabel"
            found.physical_filter = physical
            if band is not None and not is_band_name(band):
                derived = _band_from_filter(physical)
                found.notes.append(
                    f"the archived FilterLabel's band {band!r} is not a band name; "
                    + (f"band {derived!r} is taken from physical filter {physical!r}"
                       if derived else "the band is left unknown"))
                band = derived
            found.band = band
    return found


def _read_psf(hdul: fits.HDUList, archive: ArchiveReader | None, shape: tuple[int, int],
              xy0: tuple[int, int], found: _Components) -> PsfModel | None:
    """skyphot's PSF extension (marked by PSFTYPE; other HDUs named PSF are not ours), else
    the archived PSF decoded (:mod:`app.io.afw_psf`)."""
    hdu = next((h for h in hdul[1:] if "PSFTYPE" in h.header), None)
    if hdu is not None:
        found.provenance["psf"] = f"skyphot PSF extension ({hdu.header['PSFTYPE']})"
        return psf_from_hdu(hdu)
    if archive is None or "PSF" not in archive.ids:
        return None
    try:
        psf = decode_psf(archive, archive.ids["PSF"], shape, xy0)
    except ArchiveError as exc:
        found.notes.append(f"{exc}; the PSF is measured")
        return None
    found.provenance["psf"] = f"archive {archive.name_of(archive.ids['PSF'])}"
    return psf


def _read_calib(layout: _Layout, archive: ArchiveReader | None,
                found: _Components) -> PhotoCalib | None:
    """Calibration from afw's archived PhotoCalib, else ``FLUXMAG0``, else ``MAGZERO``."""
    if archive is not None and "PHOTOCALIB" in archive.ids:
        try:
            calib, note = decode_photocalib(archive, archive.ids["PHOTOCALIB"])
        except ArchiveError as exc:
            found.notes.append(f"the archived PhotoCalib is not used ({exc})")
        else:
            found.provenance["photo_calib"] = "archive PhotoCalib"
            if note:
                found.notes.append(note)
            return calib
    headers = layout.meta_headers
    fluxmag0, key = _first(headers, ("FLUXMAG0",), _as_finite)
    if fluxmag0 is not None and fluxmag0 > 0:
        err, _ = _first(headers, ("FLUXMAG0ERR",), _as_finite)
        found.provenance["photo_calib"] = "header FLUXMAG0"
        return PhotoCalib.from_fluxmag0(fluxmag0, abs(err or 0.0))
    magzero, _ = _first(headers, ("MAGZERO",), _as_finite)
    if magzero is not None:
        found.provenance["photo_calib"] = "header MAGZERO"
        return PhotoCalib.from_magzero(magzero)
    if key is not None:  # afw's Calib wrote FLUXMAG0 = 0 for "not calibrated"
        found.notes.append(f"FLUXMAG0 = {fluxmag0:g} in the header: the exposure is not "
                           "calibrated, so fluxes are given in counts only")
    found.provenance["photo_calib"] = "none"
    return None


def _read_apcorr(hdul: fits.HDUList, archive: ArchiveReader | None, xy0: tuple[int, int],
                 primary: fits.Header, found: _Components) -> dict[str, ApCorr]:
    """afw's archived ApCorrMap (moved to the array frame), else skyphot's APCORR table of
    files written before the archive was."""
    if archive is not None and "AP_CORR_MAP" in archive.ids:
        try:
            ap_corr, notes = decode_apcorr_map(archive, archive.ids["AP_CORR_MAP"], xy0)
        except ArchiveError as exc:
            found.notes.append(f"the archived ApCorrMap is not used ({exc})")
        else:
            found.notes.extend(notes)
            found.provenance["ap_corr"] = "archive ApCorrMap"
            for stem, corr in ap_corr.items():
                n_stars, _ = _first((primary,), (f"{APCORR_NSTARS}{stem}",), _as_int)
                corr.n_stars = n_stars or 0
            return ap_corr
    if "APCORR" in hdul:
        found.provenance["ap_corr"] = "skyphot APCORR table"
        return apcorr_from_hdu(hdul["APCORR"])
    return {}


def _read_date(headers: tuple[fits.Header, ...], found: _Components
               ) -> tuple[float | None, str | None]:
    """MJD (UTC) of the middle of the exposure: ``DATE-AVG`` (afw's VisitInfo, TAI with
    ``TIMESYS``), ``MJD-OBS``, ``DATE-OBS``, else old afw's ``TIME-MID`` (UTC whatever
    TIMESYS says, as afw reads it). afw's unset date (0 ns TAI, the Unix epoch) is no date."""
    mjd, key = _first(headers, DATE_KEYS, _time_parser(headers))
    if mjd is None:
        value, _ = _first(headers, ("TIME-MID",), _as_str)
        if value is not None:
            try:
                time = Time(value.rstrip("Z"), scale="utc")
            except ValueError:
                return None, None
            if abs((time.tai - UNSET_DATE).sec) < 1e-3:
                found.notes.append(f"TIME-MID = {value!r} is afw's unset date (0 ns TAI): the "
                                   "observation date is unknown")
                return None, None
            mjd, key = float(time.mjd), "TIME-MID"
    if key is not None:
        found.provenance["mjd"] = f"header {key}"
    return mjd, key


def _read_info(layout: _Layout, found: _Components) -> ExposureInfo:
    """Observation metadata (the archived FilterLabel over the header's filter keys), plus
    the primary-header cards not otherwise interpreted, with ``found``'s provenance and
    notes."""
    headers = layout.meta_headers
    visit, visit_key = _first(headers, VISIT_KEYS, _as_int)
    detector, detector_key = _first(headers, DETECTOR_KEYS, _as_int)
    band, band_key = _first(headers, BAND_KEYS, _as_str)
    physical_filter, filter_key = _first(headers, FILTER_KEYS, _as_str)
    if physical_filter == UNKNOWN_FILTER:
        physical_filter = None
    mjd, date_key = _read_date(headers, found)
    exptime, exptime_key = _first(headers, EXPTIME_KEYS, _as_finite)
    used = {visit_key, detector_key, band_key, filter_key, date_key, exptime_key}
    has_archive = "AR_HDU" in layout.primary
    extra = [
        (card.keyword, card.value, card.comment)
        for card in layout.primary.cards
        if card.keyword not in used
        and card.keyword not in STRUCTURAL_KEYS
        and not WCS_KEY.match(card.keyword)
        and not (has_archive and ARCHIVE_KEY.match(card.keyword))
    ]
    physical_filter = found.physical_filter or physical_filter
    return ExposureInfo(
        visit=visit,
        detector=detector,
        band=found.band or band or _band_from_filter(physical_filter),
        physical_filter=physical_filter,
        mjd=mjd,
        exptime=exptime,
        extra={"header": extra},
        provenance=dict(found.provenance),
        notes=list(found.notes),
    )


# ---------------------------------------------------------------------------------------------
# Reading


def read_exposure(source: Source, options: ReadOptions | None = None, *,
                  max_bytes: int | None = None) -> Exposure:
    """Read an exposure from a FITS file: an LSST calexp or a plain image, with companions.

    Parameters
    ----------
    source
        Path or binary file object of a FITS file, plain, gzip/bzip2-compressed or
        tile-compressed (``.fits``, ``.fits.gz``, ``.fits.fz``; recognised by content).
    options
        Which HDU is the image, and companion variance/weight/data-quality/background planes
        (`ReadOptions`); the default reads the file as it is.
    max_bytes
        Refuse (``too_large``) a file whose planes would need more memory than this, or whose
        gzip stream holds more; None for no limit.

    Returns
    -------
    Exposure
        Image, mask and variance as float32/int32/float32 (stored integers scaled by
        BZERO/BSCALE; BLANK pixels NO_DATA); WCS, calibration, ``xy0``, mask planes, metadata
        and background from the file. A plain image gets an empty mask and a variance
        estimated from its sky noise (plus ``max(image - sky, 0) / GAIN`` when the header
        gives a positive ``GAIN``), unless companions give them. Pixels without a finite
        value or a positive variance are flagged ``NO_DATA``. ``exposure.psf`` is read from
        skyphot's PSF extension when present, else from an LSST archive (GaussianPsf,
        DoubleGaussianPsf, PsfexPsf; other kinds such as PiffPsf are named in ``info.notes``
        and left for characterization to measure), with the archived PhotoCalib, ApCorrMap
        and FilterLabel. ``info.provenance`` says which HDU was the image and where each
        part came from; ``info.notes`` what reading repaired, skipped or could not decode.

    Raises
    ------
    ExposureReadError
        With the cause as its ``code`` (see `ExposureErrorCode`).
    """
    options = options or ReadOptions()
    notes: list[str] = []
    with open_fits(source, notes, max_bytes=max_bytes) as hdul:
        layout = _locate(hdul, options.hdu, notes)
        frames = _read_frames(layout)
        planes = _read_planes(None if layout.mask is None else layout.mask.header)
        pixels = _read_pixels(hdul, layout, options, planes, notes, max_bytes)
        found = _read_components(hdul, layout)
        info = frames.noted(_read_info(layout, found))
        info.provenance.update(pixels.provenance)
        info.notes.extend(notes)
        return Exposure(
            image=pixels.image,
            mask=pixels.mask,
            variance=pixels.variance,
            planes=planes,
            wcs=frames.wcs,
            photo_calib=found.photo_calib,
            info=info,
            background=pixels.background,
            xy0=frames.pixel.xy0,
            psf=found.psf,
            ap_corr=found.ap_corr,
        )


def _estimate_variance(
    image: np.ndarray, finite: np.ndarray, layout: _Layout
) -> tuple[np.ndarray, float]:
    """Per-pixel variance for an image that has none, and a typical sky variance.

    SExtractor's noise model: the background's rms map (each mesh cell's clipped standard
    deviation, smoothed over the image as the background is), squared, so the noise follows
    the image into every corner, whatever a large galaxy does to the global spread. With a
    positive ``GAIN`` (e-/count) each pixel adds the Poisson variance of its signal above the
    background, ``max(image - background, 0) / GAIN`` in counts²; the sky's own shot noise
    is in the measured rms already.
    """
    background, rms = estimate_background_and_rms(
        image, np.zeros(image.shape, np.int32), MaskPlanes(), BackgroundConfig())
    good = np.isfinite(rms) & (rms > 0)
    typical = float(np.median(rms[good])) if good.any() else 0.0
    if not typical > 0:
        # A flat image has no noise to measure: unit variance keeps S/N finite and the
        # caller can see the estimate is nominal.
        sample = image[finite]
        typical = float(np.std(sample)) if sample.size else 1.0
        typical = typical or 1.0
    # an approximation's wiggle may dip below zero where the rms is poorly measured: never
    # below a tenth of the typical noise
    np.maximum(rms, np.float32(0.1 * typical), out=rms, where=np.isfinite(rms))
    rms[~np.isfinite(rms)] = typical
    variance = np.square(rms, out=rms)
    gain, _ = _first(layout.meta_headers, ("GAIN",), _as_positive)
    if gain is not None:
        signal = np.where(finite, image - background, np.float32(0))
        variance += np.maximum(signal, 0) / np.float32(gain)
    return variance, typical**2


def _variance_source(layout: _Layout) -> str:
    """Where the variance plane comes from, in words (the exposure's provenance)."""
    if layout.variance is not None:
        return "VARIANCE plane"
    gain, _ = _first(layout.meta_headers, ("GAIN",), _as_positive)
    how = "estimated: the background's rms map squared"
    if gain is None:
        return how + " (no GAIN in the header: the sources' own Poisson noise is not included)"
    return how + f", plus the sources' Poisson noise (GAIN {gain:g} e-/count)"


def _flag_no_data(
    image: np.ndarray,
    mask: np.ndarray,
    variance: np.ndarray,
    finite: np.ndarray,
    planes: MaskPlanes,
    typical: float | None,
) -> None:
    """Set NO_DATA where the image is not finite or the variance not a finite positive
    number (a weight of 0); zero the image there and give the variance a typical value (the
    sky variance, or the median of the good variances), so sums stay finite.

    ``finite`` is overwritten (with where the pixels are bad), a block at a time: no
    full-size temporaries beside it.
    """
    bad = finite
    step = block_rows_of(image.shape)
    for y0 in range(0, image.shape[0], step):
        rows = slice(y0, y0 + step)
        if typical is None:  # a variance from the file: it may be bad where the image is not
            good = np.isfinite(variance[rows])
            good &= variance[rows] > 0
            good &= finite[rows]
        else:  # the estimate, positive everywhere
            good = finite[rows]
        np.logical_not(good, out=bad[rows])
    where = np.nonzero(bad)  # index arrays: fast for the few bad pixels there usually are
    if not where[0].size:
        return
    mask[where] |= np.int32(planes.bitmask("NO_DATA"))
    image[where] = 0.0
    if typical is None:
        sample = variance.ravel()[:: max(1, variance.size // SKY_SAMPLE)]
        sample = sample[np.isfinite(sample) & (sample > 0)]
        typical = float(np.median(sample)) if sample.size else 1.0
    variance[where] = typical


def read_exposure_metadata(source: Source, options: ReadOptions | None = None, *,
                           check_pixels: bool = False,
                           max_bytes: int | None = None) -> dict[str, Any]:
    """Summarise an exposure file from its headers, without reading pixels.

    Parameters
    ----------
    source
        As for `read_exposure`.
    options
        Only ``options.hdu`` is used here: which HDU is the image.
    check_pixels
        Also read the image (and VARIANCE) a block at a time and raise what `read_exposure`
        would for pixels that cannot be used (``all_nan``, ``bad_variance``, ``no_data``),
        in the memory of one block.
    max_bytes
        As for `read_exposure`, for a gzip stream.

    Returns
    -------
    dict
        ``layout`` ("calexp" or "image"), ``hdu`` (the image HDU's index), ``shape``
        (height, width), ``xy0``, ``pixel_frame`` (``xy0``, its ``source`` and a ``note`` on
        header offsets not applied, see `app.io.frames`), ``sky_frame`` (the WCS's
        ``frame``, ``equinox``, ``obstime``, ``conversion`` to ICRS and ``notes``; None
        without a WCS), ``visit``, ``detector``, ``band``, ``physical_filter``, ``mjd``,
        ``exptime``, ``wcs`` (the WCS header as a dict, or None), ``corners`` (ICRS RA, Dec
        in degrees of the outer corners of the pixel grid, counter-clockwise from pixel
        (0, 0), or None), ``njy_per_count`` and ``njy_per_count_err`` (None when
        uncalibrated), ``mask_planes`` (name → bit), ``has_background``, ``provenance``
        (where the PSF, calibration, aperture corrections, filter, date and frames come
        from, e.g. ``{"psf": "archive GaussianPsf"}``) and ``notes`` (what reading repaired,
        skipped or could not decode).

    Raises
    ------
    ExposureReadError
        As `read_exposure`, except the pixel refusals without ``check_pixels``.
    """
    notes: list[str] = []
    with open_fits(source, notes, max_bytes=max_bytes) as hdul:
        layout = _locate(hdul, (options or ReadOptions()).hdu, notes)
        if check_pixels:
            _scan_pixels(layout)
        frames = _read_frames(layout)
        found = _read_components(hdul, layout)
        found.provenance["variance"] = _variance_source(layout)
        info = frames.noted(_read_info(layout, found))
        info.provenance.update(layout.provenance)
        info.notes.extend(notes)
        calib = found.photo_calib
        height, width = layout.shape
        wcs = frames.wcs
        return {
            "layout": "calexp" if layout.calexp else "image",
            "shape": (height, width),
            "xy0": frames.pixel.xy0,
            "pixel_frame": frames.pixel.describe(),
            "sky_frame": frames.sky_metadata(),
            "visit": info.visit,
            "detector": info.detector,
            "band": info.band,
            "physical_filter": info.physical_filter,
            "mjd": info.mjd,
            "exptime": info.exptime,
            "wcs": None if wcs is None else dict(wcs.to_header(relax=True)),
            "corners": frames.corners(height, width),
            "njy_per_count": None if calib is None else calib.njy_per_count,
            "njy_per_count_err": None if calib is None else calib.njy_per_count_err,
            "mask_planes": _read_planes(
                None if layout.mask is None else layout.mask.header
            ).as_dict(),
            "has_background": layout.background is not None,
            "hdu": layout.image_index,
            "provenance": info.provenance,
            "notes": info.notes,
        }


# ---------------------------------------------------------------------------------------------
# Writing


def write_exposure(
    exposure: Exposure, target: Source, *, compress: bool | None = None
) -> None:
    """Write an exposure in the LSST calexp layout.

    Parameters
    ----------
    exposure
        The exposure. Its PSF model is written when it is a measured pixel PSF or a Gaussian;
        other models (a simulation's exact PSF) are not.
    target
        Path or writable binary file. An existing path is overwritten.
    compress
        Gzip the whole file. Default: when ``target`` is a path ending in ``.gz``.

    Notes
    -----
    Primary HDU: ``VISIT``, ``DETECTOR``, ``BAND``, ``FILTER`` (physical filter),
    ``DATE-AVG`` (TAI, with ``TIMESYS = 'TAI'``, as afw's VisitInfo), ``EXPTIME``,
    ``MAGZERO``/``FLUXMAG0``/``FLUXMAG0ERR`` when calibrated, afw's archive pointers, then the
    kept cards of ``info.extra["header"]``. Extensions IMAGE (float32), MASK (int32,
    ``MP_<NAME>`` for every plane), VARIANCE (float32), each with ``EXTTYPE``, ``INHERIT``,
    the WCS (SIP kept) and ``xy0`` as ``LTV1/LTV2`` and as afw's ``A`` WCS; then afw's archive
    (:mod:`app.io.afw_archive`: PSF in afw form, PhotoCalib, ApCorrMap, FilterLabel) from HDU
    5, so LSST's readers find them; then BACKGROUND (float32) when ``exposure.background`` is
    set, and skyphot's PSF extension for a measured or integrated-Gaussian PSF (see
    :mod:`app.io.psf_fits`). The output is byte-for-byte reproducible (gzip without
    timestamp or name), so content hashes are stable.
    """
    hdul = _to_hdulist(exposure)
    if compress is None:
        compress = isinstance(target, str | os.PathLike) and os.fspath(target).endswith(".gz")
    if isinstance(target, str | os.PathLike):
        with open(target, "wb") as f:
            _write(hdul, f, compress)
    else:
        _write(hdul, target, compress)


def _write(hdul: fits.HDUList, f: BinaryIO, compress: bool) -> None:
    if compress:
        with gzip.GzipFile(filename="", fileobj=f, mode="wb", compresslevel=GZIP_LEVEL,
                           mtime=0) as gz:
            hdul.writeto(gz)
    else:
        hdul.writeto(f)


def _to_hdulist(exposure: Exposure) -> fits.HDUList:
    info = exposure.info
    primary = fits.PrimaryHDU()
    written = set()
    # afw's VisitInfo: the middle of the exposure as TAI (DATE-AVG with TIMESYS = 'TAI')
    date = (None if info.mjd is None
            else Time(info.mjd, format="mjd", scale="utc", precision=9).tai.isot)
    for key, value, comment in (
        ("VISIT", info.visit, "visit id"),
        ("DETECTOR", info.detector, "detector id"),
        ("BAND", info.band, "abstract filter (band)"),
        ("FILTER", info.physical_filter, "physical filter"),
        ("DATE-AVG", date, "TAI date at middle of observation"),
        ("TIMESYS", None if date is None else "TAI", "time scale of DATE-AVG"),
        ("EXPTIME", info.exptime, "exposure time (s)"),
    ):
        if value is not None:
            primary.header.append(header_card(key, value, comment))
            written.add(key)
    calib = exposure.photo_calib
    if calib is not None:
        fluxmag0 = 3631e9 / calib.njy_per_count
        # MAGZERO = 31.4 - 2.5 log10(nJy per count), the inverse of PhotoCalib.from_magzero.
        magzero = AB_NJY_ZEROPOINT - 2.5 * np.log10(calib.njy_per_count)
        primary.header.append(header_card("MAGZERO", magzero, "AB magnitude of 1 count"))
        primary.header.append(header_card("FLUXMAG0", fluxmag0, "counts of a 0-mag AB source"))
        primary.header.append(header_card(
            "FLUXMAG0ERR", fluxmag0 * calib.njy_per_count_err / calib.njy_per_count,
            "1-sigma error on FLUXMAG0",
        ))
    archive = _archive_of(exposure, primary.header, written)
    for key, value, comment in info.extra.get("header", []):  # type: ignore[union-attr]
        if key in written or key in STRUCTURAL_KEYS:
            continue
        try:
            primary.header.append(header_card(key, value, comment))
        except ValueError:
            continue  # a value FITS cannot hold (NaN, non-ASCII text): the card is dropped

    def plane(name: str, data: np.ndarray, extra: Iterable[fits.Card] = ()) -> fits.ImageHDU:
        header = fits.Header([fits.Card("EXTTYPE", name), fits.Card("INHERIT", True)])
        if exposure.wcs is not None:
            header.extend(exposure.wcs.to_header(relax=True).cards)
        header.extend(xy0_cards(*exposure.xy0))
        header.extend(extra)
        return fits.ImageHDU(data=data, header=header, name=name)

    mask_keys = [header_card(f"MP_{name}", bit, "mask plane bit") for name, bit in
                 exposure.planes.as_dict().items()]
    hdus: list[fits.hdu.base._BaseHDU] = [
        primary,
        plane("IMAGE", exposure.image.astype(np.float32, copy=False)),
        plane("MASK", exposure.mask.astype(np.int32, copy=False), mask_keys),
        plane("VARIANCE", exposure.variance.astype(np.float32, copy=False)),
        *archive,  # HDU 5, where afw's AR_HDU says it is
    ]
    if exposure.background is not None:
        hdus.append(fits.ImageHDU(
            data=exposure.background.astype(np.float32, copy=False), name="BACKGROUND"
        ))
    psf_hdu = psf_to_hdu(exposure.psf)
    if psf_hdu is not None:
        hdus.append(psf_hdu)
    return fits.HDUList(hdus)


def _archive_of(exposure: Exposure, primary: fits.Header, written: set[str]
                ) -> list[fits.BinTableHDU]:
    """afw's archive of what the exposure holds (PSF in afw form, PhotoCalib, ApCorrMap,
    FilterLabel), its pointers added to ``primary`` as afw's ExposureInfo writes them
    (``EXPINFO_V = 2``, ``AR_HDU = 5``, ``<NAME>_ID`` and ``ARCHIVE_ID_<NAME>``).

    ApCorrMap holds no star counts, so those go in ``APCORR NSTARS <flux>`` cards.
    """
    writer = ArchiveWriter()
    ids = {}
    if exposure.psf is not None:
        psf_id = put_psf(writer, exposure.psf, exposure.xy0)
        if psf_id is not None:
            ids["PSF"] = psf_id
    if exposure.photo_calib is not None:
        ids["PHOTOCALIB"] = put_photocalib(writer, exposure.photo_calib)
    if exposure.ap_corr:
        ids["AP_CORR_MAP"] = put_apcorr_map(writer, exposure.ap_corr, exposure.xy0)
    if exposure.info.band is not None or exposure.info.physical_filter is not None:
        ids["FILTER"] = put_filter_label(writer, exposure.info.band,
                                         exposure.info.physical_filter)
    if not ids:
        return []
    cards = [("EXPINFO_V", 2, "ExposureInfo FITS serialization version"),
             ("AR_HDU", 5, "HDU (1-indexed) containing the archive used to store ancillary "
              "objects")]
    for name, archive_id in ids.items():
        comment = f"archive ID for generic component '{name}'"
        cards += [(f"{name}_ID", archive_id, comment), (f"ARCHIVE_ID_{name}", archive_id, comment)]
    cards += [(f"{APCORR_NSTARS}{stem}", corr.n_stars, "stars the aperture correction is "
               "fitted to") for stem, corr in sorted(exposure.ap_corr.items())]
    for key, value, comment in cards:
        primary.append(header_card(key, value, comment))
        written.add(key)
    return writer.hdus()
