"""Taking in an exposure the service receives (an upload or a fetched URL), one way for both.

A file read as it is is checked a block of pixels at a time and stored as it came. A file
that needs options (an HDU other than the default, companion planes) is read with them and
stored as the exposure they assemble, in skyphot's calexp layout, so every later job reads
it without the options; its metadata keep the original file names and options under
``source``. Either way a file that cannot be used at all is refused here, with its reason,
before anything is stored.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from app.io.fits_exposure import read_exposure, read_exposure_metadata, write_exposure
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


class Sink(Protocol):
    """Where an assembled exposure is written: a staged blob (write, then close, then path)."""

    path: Path

    def write(self, chunk: bytes) -> None: ...

    def close(self) -> None: ...


def check_exposure(path: Path, *, max_bytes: int | None) -> dict[str, Any]:
    """Metadata of a file read as it is, its pixels checked usable a block at a time."""
    return read_exposure_metadata(path, check_pixels=True, max_bytes=max_bytes)


def assemble_exposure(path: Path, options: ReadOptions, sink: Sink, image_name: str | None,
                      *, max_bytes: int | None) -> dict[str, Any]:
    """Read ``path`` with ``options``, write the exposure to ``sink``; its metadata.

    The metadata are those of the written calexp, plus ``source`` (the image's file name
    and the options, companions by their client file names), ``provenance`` and the
    ``notes`` of reading the originals. The in-memory exposure is bounded by ``max_bytes``.
    """
    exposure = read_exposure(path, options, max_bytes=max_bytes)
    write_exposure(exposure, _SinkWriter(sink))
    sink.close()
    metadata = read_exposure_metadata(sink.path)
    metadata["source"] = {"image": image_name, **options.summary()}
    metadata["provenance"] = dict(exposure.info.provenance)
    metadata["notes"] = list(exposure.info.notes)
    return metadata


class _SinkWriter(io.RawIOBase):
    """A write-only file for astropy over a `Sink` (astropy asks where it is: ``tell``)."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # noqa: ANN001 - bytes or an array's buffer
        chunk = memoryview(data).cast("B")
        self._sink.write(chunk)
        self._written += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._written
