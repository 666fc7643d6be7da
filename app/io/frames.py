"""The pixel frame and the celestial-frame keys of a FITS image, as its headers state them.

Pixel frame. skyphot's x, y are LSST's parent frame: 0-based array index plus ``xy0``, the
parent position of array pixel [0, 0]. afw writes ``xy0`` as a trivial alternate WCS ``A``
(``CTYPE1A = 'LINEAR'``, ``CRPIX1A = 1``, ``CRVAL1A = x0``; ``geom/wcsUtils.cc``
``createTrivialWcsMetadata``) and reads it back from there only when ``CRPIX1A`` and
``CRPIX2A`` are 1 (``getImageXY0FromMetadata``), ignoring IRAF's ``LTV1``/``LTV2``, which it
also writes. IRAF's keys mean the same only by that convention: logical (1-based array) pixel
= ``LTM`` · physical pixel + ``LTV``, so in a DECam cutout with ``LTV1 = LTV2 = −1`` the
physical pixel is the logical one plus 1, a frame of the detector, not of a parent image.
So ``LTV`` gives ``xy0`` only where it is afw's convention: in an LSST calexp layout without
the ``A`` keys (departing from afw, which would take (0, 0) there, because older skyphot and
obs packages wrote ``LTV`` alone). Anywhere else x, y stay array indices and the header's
``LTV``/``LTM`` are stated, with how to convert, in `PixelFrame.note`.

Celestial frame. An extension with ``INHERIT = T`` takes the primary header's keys it does
not set itself (the FITS INHERIT convention, which afw's ``readMetadata`` follows); astropy's
WCS reads one header, so the frame keys (``RADESYS``, ``EQUINOX``, the observation date that
FK4 needs) are copied in here. ``RADESYS`` wins over the deprecated ``RADECSYS`` (wcslib
would take whichever comes last).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits

FRAME_KEYS = ("RADESYS", "RADECSYS", "EQUINOX", "EPOCH", "MJD-AVG", "DATE-AVG", "MJD-OBS",
              "DATE-OBS", "TIMESYS")
"""The keys of a primary header an INHERIT extension's celestial frame depends on."""


@dataclass(frozen=True)
class PixelFrame:
    """Where x, y = 0-based array index + ``xy0`` come from, and what was not applied."""

    xy0: tuple[int, int]
    source: str
    """E.g. "afw A WCS (CRVAL1A, CRVAL2A)", "LTV1/LTV2 of an LSST calexp layout",
    "array index (no xy0 in the header)"."""
    note: str | None = None
    """A header offset that was not applied, and how to convert to it; None when none."""

    def describe(self) -> dict[str, Any]:
        """For an exposure's metadata: ``xy0``, ``source``, ``note``."""
        return {"xy0": list(self.xy0), "source": self.source, "note": self.note}

    @property
    def provenance(self) -> str:
        """One phrase for ``ExposureInfo.provenance["pixel_frame"]``."""
        return f"parent frame, xy0 = ({self.xy0[0]}, {self.xy0[1]}) from {self.source}"


def read_pixel_frame(header: fits.Header, *, afw_layout: bool) -> PixelFrame:
    """The pixel frame of an image HDU (``afw_layout``: found as an LSST calexp's IMAGE)."""
    afw = _afw_xy0(header)
    ltv = _iraf_ltv(header)
    ltm = _iraf_ltm(header)
    plain_ltm = ltm is None or np.array_equal(ltm, np.eye(2))
    if afw is not None:
        source = "afw A WCS (CRVAL1A, CRVAL2A)"
        if ltv is None or (plain_ltm and ltv == (-afw[0], -afw[1])):
            return PixelFrame(afw, source)
        return PixelFrame(afw, source, (
            f"The header's IRAF {_iraf_text(ltv, ltm)} disagree with afw's xy0 = "
            f"({afw[0]}, {afw[1]}) (CRVAL1A, CRVAL2A); afw's keys are used, as LSST does. "
            + _iraf_conversion(ltv, ltm)))
    if ltv is None and plain_ltm:
        return PixelFrame((0, 0), "array index (no xy0 in the header)")
    ltv = ltv or (0.0, 0.0)
    whole = all(float(v).is_integer() for v in ltv)
    if afw_layout and plain_ltm and whole:
        return PixelFrame((-round(ltv[0]), -round(ltv[1])), "LTV1/LTV2 of an LSST calexp layout")
    if plain_ltm and ltv == (0.0, 0.0):
        return PixelFrame((0, 0), "array index (no xy0 in the header)")
    return PixelFrame((0, 0), "array index (the header's IRAF LTV/LTM are not applied)", (
        f"x, y are 0-based array indices (xy0 = (0, 0)); the header's IRAF "
        f"{_iraf_text(ltv, ltm)} are not applied (they are taken as xy0 only in an LSST "
        "calexp layout or beside afw's A WCS, CRVAL1A/CRVAL2A). "
        + _iraf_conversion(ltv, ltm)))


def xy0_cards(x0: int, y0: int) -> list[fits.Card]:
    """The cards stating ``xy0`` in an image header: afw's ``A`` WCS, read by afw and
    skyphot, and the IRAF ``LTV1``/``LTV2`` that agree with it, read by ds9."""
    return [
        fits.Card("LTV1", float(-x0), "-x0: parent pixel of array column 0 (ds9)"),
        fits.Card("LTV2", float(-y0), "-y0: parent pixel of array row 0 (ds9)"),
        fits.Card("CTYPE1A", "LINEAR", "afw: parent-image pixel x"),
        fits.Card("CTYPE2A", "LINEAR", "afw: parent-image pixel y"),
        fits.Card("CRPIX1A", 1.0), fits.Card("CRPIX2A", 1.0),
        fits.Card("CRVAL1A", float(x0)), fits.Card("CRVAL2A", float(y0)),
        fits.Card("CUNIT1A", "PIXEL"), fits.Card("CUNIT2A", "PIXEL"),
    ]


def celestial_header(image: fits.Header, primary: fits.Header | None) -> tuple[fits.Header,
                                                                              list[str]]:
    """The header to build the image's WCS from, and notes on its frame keys.

    ``primary`` is the primary header when the image is an extension; its `FRAME_KEYS` the
    image does not set are inherited when the image has ``INHERIT = T``. The image's own
    header is returned, not a copy, when nothing is inherited.
    """
    header = image
    if primary is not None and image.get("INHERIT") is True:
        missing = [k for k in FRAME_KEYS if k in primary and k not in image]
        if missing:
            header = image.copy()
            for key in missing:
                header[key] = primary[key]
    notes = []
    radesys, radecsys = header.get("RADESYS"), header.get("RADECSYS")
    if isinstance(radesys, str) and isinstance(radecsys, str) and (
            radesys.strip().upper() != radecsys.strip().upper()):
        notes.append(f"The header gives RADESYS = {radesys.strip()!r} and the deprecated "
                     f"RADECSYS = {radecsys.strip()!r}; RADESYS is used, as the FITS "
                     "standard says.")
        header = header.copy() if header is image else header
        del header["RADECSYS"]  # wcslib takes whichever comes last
    return header, notes


def _afw_xy0(header: fits.Header) -> tuple[int, int] | None:
    """afw's xy0 from its ``A`` WCS: CRPIX1A = CRPIX2A = 1, any LINEAR (or no) CTYPEnA."""
    try:
        if float(header["CRPIX1A"]) != 1.0 or float(header["CRPIX2A"]) != 1.0:
            return None
        x0, y0 = float(header["CRVAL1A"]), float(header["CRVAL2A"])
    except (KeyError, TypeError, ValueError):
        return None
    for key in ("CTYPE1A", "CTYPE2A"):
        if str(header.get(key, "LINEAR")).strip().upper() != "LINEAR":
            return None  # a real alternate WCS, not afw's xy0
    if not (np.isfinite(x0) and np.isfinite(y0)):
        return None
    return round(x0), round(y0)


def _number(header: fits.Header, key: str, default: float) -> float:
    value = header.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if np.isfinite(number) else default


def _iraf_ltv(header: fits.Header) -> tuple[float, float] | None:
    if "LTV1" not in header and "LTV2" not in header:
        return None
    return (_number(header, "LTV1", 0.0), _number(header, "LTV2", 0.0))


def _iraf_ltm(header: fits.Header) -> np.ndarray | None:
    keys = ("LTM1_1", "LTM1_2", "LTM2_1", "LTM2_2")
    if not any(k in header for k in keys):
        return None
    ltm = np.array([[_number(header, "LTM1_1", 1.0), _number(header, "LTM1_2", 0.0)],
                    [_number(header, "LTM2_1", 0.0), _number(header, "LTM2_2", 1.0)]])
    return ltm if abs(np.linalg.det(ltm)) > 0 else None


def _iraf_text(ltv: tuple[float, float], ltm: np.ndarray | None) -> str:
    text = f"LTV1, LTV2 = ({ltv[0]:g}, {ltv[1]:g})"
    if ltm is not None and not np.array_equal(ltm, np.eye(2)):
        text += (f" and LTM = [[{ltm[0, 0]:g}, {ltm[0, 1]:g}], [{ltm[1, 0]:g}, "
                 f"{ltm[1, 1]:g}]]")
    return text


def _iraf_conversion(ltv: tuple[float, float], ltm: np.ndarray | None) -> str:
    """How to go from skyphot's array-index x, y to IRAF's (1-based) physical pixel."""
    if ltm is not None and (ltm[0, 1] != 0 or ltm[1, 0] != 0):
        return ("IRAF's physical pixel (1-based) of array x, y is LTM⁻¹ · ((x + 1, y + 1) − "
                "LTV) with the LTM and LTV above.")
    scale = (1.0, 1.0) if ltm is None else (ltm[0, 0], ltm[1, 1])
    px, py = (_physical(n, 1.0 - shift, m)
              for n, shift, m in zip("xy", ltv, scale, strict=True))
    return f"IRAF's physical pixel (1-based) of array x, y is ({px}, {py})."


def _physical(name: str, offset: float, scale: float) -> str:
    """E.g. "x + 2", "(y - 99) / 2"."""
    text = name if offset == 0 else f"{name} {'+' if offset > 0 else '-'} {abs(offset):g}"
    return text if scale == 1 else f"({text}) / {scale:g}"
