"""The reading options of a service request, as text: an upload's fields, a URL's JSON.

Kept apart from :mod:`app.io.intake` (which reads FITS), so that the fetch job's
parameters and the API's schemas can use it without importing astropy.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from app.io.read_options import MaskMap, OptionError, PlaneRef, ReadOptions, parse_hdu

COMPANIONS = ("variance", "weight", "mask", "background")
"""Companion planes a request can carry, as files (upload parts, URLs)."""
HDU_HELP = "HDU index (0 = primary) or EXTNAME[,EXTVER]"


class ReadRequest(BaseModel):
    """The reading options of a request, as text: the upload form's fields, a URL's JSON."""

    model_config = ConfigDict(extra="forbid")

    hdu: str | int | None = Field(
        None, description=f"The image: {HDU_HELP}; default LSST's IMAGE, else the first "
                          "2-d image.")
    variance_hdu: str | int | None = Field(
        None, description=f"{HDU_HELP} of the variance map (in its file, or without one, in "
                          "the image's file).")
    weight_hdu: str | int | None = Field(
        None, description=f"{HDU_HELP} of the inverse-variance map, likewise.")
    mask_hdu: str | int | None = Field(
        None, description=f"{HDU_HELP} of the data-quality map, likewise.")
    mask_bits: str | None = Field(
        None, max_length=1000,
        description="Bit values of the data-quality map to mask planes, e.g. "
                    "1=BAD,2=SAT,4=INTRP,16=CR (other bits set BAD; without a map nonzero = "
                    "BAD).")
    mask_codes: str | None = Field(
        None, max_length=1000,
        description="Values (codes, not bits) of the data-quality map to planes, e.g. "
                    "1=BAD,3=SAT,5=CR, or 'decam' for the DECam Community Pipeline's codes.")

    def options(self, files: Mapping[str, tuple[Path, str | None]]) -> ReadOptions:
        """`ReadOptions` for companion ``files`` (name → path and client file name).

        A ``*_hdu`` without a file of that name is an HDU of the image's own file. Raises
        OptionError for options that do not fit together.
        """
        if self.mask_bits and self.mask_codes:
            raise OptionError("give mask_bits or mask_codes, not both")
        mask_map = (MaskMap.parse("bits", self.mask_bits) if self.mask_bits
                    else MaskMap.parse("codes", self.mask_codes) if self.mask_codes else None)
        refs: dict[str, PlaneRef | None] = {}
        for name in COMPANIONS:
            hdu = parse_hdu(getattr(self, f"{name}_hdu", None))
            if name in files:
                path, label = files[name]
                refs[name] = PlaneRef(path, hdu, label or name)
            else:
                refs[name] = None if hdu is None else PlaneRef(None, hdu)
        return ReadOptions(hdu=parse_hdu(self.hdu), mask_map=mask_map, **refs)
