"""How to read an exposure file: which HDU, and the companion planes given beside it.

One `ReadOptions` serves every door (``skyphot detect``/``forced``, the upload form, the URL
reference), so a file reads the same way whichever way it arrives. This module imports no
FITS library, so the job kinds that carry options stay light to import.

Companion planes follow what survey pipelines publish beside a plain image: a variance map,
an inverse-variance ("weight") map, a data-quality (bad-pixel) map, and the subtracted
background. Each is a `PlaneRef`: a file, an HDU of a file, or an HDU of the image's own
file, written on the command line as cfitsio does (``weight.fits``, ``weight.fits[N2]``,
``[WHT]``).

A data-quality map is turned into mask planes by a `MaskMap`:

- none given: every nonzero pixel is BAD (what a plain bad-pixel map means);
- ``bits``: each listed bit value (a power of two) sets a plane, e.g. ``1=BAD,2=SAT,4=INTRP,
  16=CR,64=SAT`` for the DECam Community Pipeline's resampled products and DES
  (bleed trails as SAT, as LSST's obs_decam maps them);
- ``codes``: each listed value (not a bit) sets a plane, e.g. the DECam Community
  Pipeline's InstCal ``ood`` files, whose pixels hold one code each: 1 bad pixel, 2 no data,
  3 saturated, 4 bleed trail, 5 cosmic ray, 6 low weight, 7 transient in the multi-exposure
  difference, 8 satellite trail; ``decam`` names that map.

Flags or codes a map does not list set BAD, so nothing flagged is measured by mistake; map a
value to a plane of its own name (``128=TRANSIENT``) to keep it without excluding pixels.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

Source = str | os.PathLike[str] | BinaryIO
"""A FITS file: a path or a binary file object."""
HduSpec = str | int
"""An HDU chosen by index (0 is the primary, as astropy and cfitsio count), by EXTNAME
(or afw's EXTTYPE, case-insensitive), or by ``"EXTNAME,EXTVER"``."""
MaskKind = Literal["bits", "codes"]

PRESETS: dict[str, tuple[MaskKind, str]] = {
    # legacypipe's remap_dq_cp_codes documents these codes; bleed trails are saturation as
    # obs_decam maps them, a trail is LSST's STREAK, and a difference-image transient is
    # SUSPECT (LSST has no plane for it; its pixels are measured but flagged).
    "decam": ("codes", "1=BAD,2=NO_DATA,3=SAT,4=SAT,5=CR,6=BAD,7=SUSPECT,8=STREAK"),
}
PLANE_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


class OptionError(ValueError):
    """A read option that cannot be used, with what is expected."""


@dataclass(frozen=True)
class PlaneRef:
    """Where a companion plane is: a file (None: the image's own file) and an HDU in it.

    ``label`` names it in provenance and messages (the client's file name for an upload).
    Without ``hdu``, a separate file's HDU of the image's EXTNAME is used if it has one,
    else its first 2-d image.
    """

    source: Source | None = None
    hdu: HduSpec | None = None
    label: str | None = None

    @property
    def name(self) -> str:
        """The file's name for people: the label, else the path's last part."""
        if self.label:
            return self.label
        if isinstance(self.source, str | os.PathLike):
            return Path(os.fspath(self.source)).name
        return "the image file" if self.source is None else "a file"

    def describe(self) -> str:
        """E.g. ``oow.fits``, ``oow.fits[N2]``, ``the image file[WHT]``."""
        return self.name + (f"[{self.hdu}]" if self.hdu is not None else "")

    @classmethod
    def parse(cls, text: str) -> PlaneRef:
        """``file``, ``file[HDU]`` or ``[HDU]`` (an HDU of the image's own file).

        A name ending in ``]`` that exists as a file is taken whole.
        """
        text = text.strip()
        match = re.fullmatch(r"(.*)\[([^\[\]]+)\]", text)
        if match is None or Path(text).exists():
            if not text:
                raise OptionError("a companion plane needs a file name or [HDU]")
            return cls(text, None)
        path, hdu = match.group(1).strip(), parse_hdu(match.group(2))
        return cls(path or None, hdu)


def parse_hdu(text: str | int | None) -> HduSpec | None:
    """An HDU index (digits) or EXTNAME[,EXTVER]; None for an empty value."""
    if text is None or isinstance(text, int):
        return text
    text = text.strip()
    if not text:
        return None
    return int(text) if text.isdigit() else text


@dataclass(frozen=True)
class MaskMap:
    """Data-quality values → mask plane names; ``kind`` says whether values are bits."""

    kind: MaskKind
    planes: tuple[tuple[int, str], ...]

    @classmethod
    def parse(cls, kind: MaskKind, text: str) -> MaskMap:
        """From ``"1=BAD,2=SAT,4=CR"`` (or a preset name such as ``decam`` for codes)."""
        text = text.strip()
        if text.lower() in PRESETS:
            preset_kind, text = PRESETS[text.lower()]
            if preset_kind != kind:
                raise OptionError(f"{text!r} is a map of {preset_kind}, not of {kind}")
        planes: list[tuple[int, str]] = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            value, sep, name = item.partition("=")
            name = name.strip().upper()
            try:
                number = int(value.strip(), 0)  # 16, 0x10 and 0b10000 alike
            except ValueError:
                number = -1
            if not sep or number < 1 or not PLANE_NAME.match(name):
                raise OptionError(
                    f"mask {kind} entry {item!r}: expected VALUE=PLANE with VALUE a positive "
                    "integer and PLANE a mask plane name such as BAD, SAT, CR, NO_DATA"
                )
            if kind == "bits" and number & (number - 1):
                raise OptionError(
                    f"mask bits entry {item!r}: {number} is not a single bit (1, 2, 4, 8, "
                    "…); for values that are codes rather than bits, give a codes map"
                )
            if number in (v for v, _ in planes):
                raise OptionError(f"mask {kind} value {number} is mapped twice")
            planes.append((number, name))
        if not planes:
            raise OptionError(f"the mask {kind} map is empty; expected e.g. 1=BAD,2=SAT")
        return cls(kind, tuple(planes))

    def describe(self) -> str:
        return f"{self.kind} " + ",".join(f"{v}={n}" for v, n in self.planes)


@dataclass(frozen=True)
class ReadOptions:
    """How to read one exposure; the defaults read a file as it is.

    ``hdu`` picks the image HDU (default: LSST's IMAGE, else the first 2-d image).
    ``variance`` or ``weight`` (inverse variance; 0 = no data) replaces the variance,
    ``mask`` adds a data-quality map (through ``mask_map``; nonzero = BAD without one), and
    ``background`` gives the full-resolution background that was subtracted.
    """

    hdu: HduSpec | None = None
    variance: PlaneRef | None = None
    weight: PlaneRef | None = None
    mask: PlaneRef | None = None
    mask_map: MaskMap | None = None
    background: PlaneRef | None = None

    def __post_init__(self) -> None:
        if self.variance is not None and self.weight is not None:
            raise OptionError("give a variance map or a weight map, not both")
        if self.mask_map is not None and self.mask is None:
            raise OptionError("a mask bit or code map needs a data-quality map (mask) to apply to")

    @property
    def companions(self) -> dict[str, PlaneRef]:
        """The companion planes given, by name."""
        named = {"variance": self.variance, "weight": self.weight, "mask": self.mask,
                 "background": self.background}
        return {name: ref for name, ref in named.items() if ref is not None}

    @property
    def is_default(self) -> bool:
        """True when the file is read as it is (no HDU chosen, no companion)."""
        return self.hdu is None and not self.companions

    def summary(self) -> dict[str, object]:
        """The options as plain values, for an exposure's metadata."""
        out: dict[str, object] = {}
        if self.hdu is not None:
            out["hdu"] = self.hdu
        for name, ref in self.companions.items():
            out[name] = ref.describe()
        if self.mask_map is not None:
            out["mask_map"] = self.mask_map.describe()
        return out
