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
from pathlib import Path
from typing import Any, Protocol

from app.io.fits_exposure import read_exposure, read_exposure_metadata, write_exposure
from app.io.read_options import ReadOptions


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
