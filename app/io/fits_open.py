"""Opening a FITS file as published, and finding its image HDUs.

A file may be plain, gzip- or bzip2-compressed as a whole (recognised by magic bytes, not by
name), tile-compressed inside (fpack's ``.fits.fz``: astropy's ``CompImageHDU``), on a path
or in a file object. A compressed or non-seekable input is decompressed once, in chunks, to
an anonymous temporary file (``TMPDIR``) and memory-mapped from there, so reading a
``.fits.gz`` costs its pixels once in memory, as a plain file does.

Image data are opened unscaled (``do_not_scale_image_data``): BZERO/BSCALE/BLANK are applied
by :mod:`app.io.fits_pixels` a block at a time, straight into float32 or int32, where
astropy would refuse to memory-map them or scale a BITPIX 32 image to a float64 copy.
Header cards that break the FITS standard are repaired (astropy's ``silentfix``) or, when
they cannot be, dropped; either way a note says which, and reading goes on.
"""

from __future__ import annotations

import bz2
import gzip
import io
import os
import tempfile
import threading
import warnings
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import BinaryIO

from astropy.io import fits

from app.io.errors import ExposureReadError
from app.io.read_options import HduSpec, Source

ImageLike = fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU

FITS_MAGIC = b"SIMPLE  ="
GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
FITS_BLOCK = 2880
SPOOL_CHUNK = 1 << 20  # bytes copied or decompressed at a time
WARNINGS_LOCK = threading.RLock()
"""``catch_warnings`` swaps the process-wide filter list and puts it back on exit; readers in
two threads (the API's thread pool) interleaving would restore each other's list. Astropy
uses it too while reading (table data, unit strings), so a whole read, from opening the
file to closing it, holds this lock: reads of FITS files take turns."""


@contextmanager
def open_fits(
    source: Source, notes: list[str], *, max_bytes: int | None = None
) -> Iterator[fits.HDUList]:
    """Open ``source`` with every header read, checked complete and repaired.

    Pixels stay on disk (memory-mapped) for a path or a decompressed copy, so header-only
    callers read no data. A caller's file object is left open. What was repaired or skipped
    is appended to ``notes``. ``max_bytes`` bounds the decompressed size of a gzip/bzip2
    file (``too_large`` beyond). Raises ExposureReadError ``not_fits``, ``truncated``,
    ``corrupt`` or ``too_large``.
    """
    with WARNINGS_LOCK, ExitStack() as files:
        stream, size, memmap = fits_stream(source, files, max_bytes)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                hdul = fits.open(stream, memmap=memmap, mode="readonly",
                                 do_not_scale_image_data=True)  # primary header only
            except Exception as exc:
                # It starts like FITS, so it is cut short or corrupt; a FITS file is always
                # a whole number of 2880-byte blocks, which tells the two apart.
                if size % FITS_BLOCK:
                    raise ExposureReadError(
                        "truncated",
                        f"the primary header cannot be parsed ({exc}) and the file is {size} "
                        f"bytes long, not a multiple of {FITS_BLOCK}: it was cut short "
                        "(interrupted upload or copy?)",
                    ) from exc
                raise ExposureReadError(
                    "not_fits",
                    f"the file starts like FITS but its primary header is corrupt: {exc}",
                ) from exc
            try:
                hdul.readall()
            except Exception as exc:
                # Not hdul.close() nor len(hdul): they would read the broken header again
                # (list.__len__ counts the HDUs read so far). A header that runs to the end
                # of the file without its END card is one cut short.
                cut = "END card" in str(exc)
                raise ExposureReadError(
                    "truncated" if cut else "corrupt",
                    f"the header of HDU #{list.__len__(hdul)} cannot be parsed ({exc}): "
                    + ("the file ends inside it, so it was cut short (interrupted upload or "
                       "copy?) or that header is corrupt" if cut else "the file is corrupt"),
                ) from exc
        try:
            with warnings.catch_warnings():
                # astropy re-verifies a card each time it is printed (fileinfo does), warning
                # again about what repair_header notes once.
                warnings.simplefilter("ignore", fits.verify.VerifyWarning)
                for index, hdu in enumerate(hdul):
                    repair_header(hdu.header, f"HDU #{index} ({hdu.name or 'PRIMARY'})", notes)
                check_complete(hdul, size, bool(caught))
            for warning in caught:
                _note(notes, f"reading the file: {str(warning.message).strip()}")
            yield hdul
        finally:
            hdul.close(closed=False)  # the file itself is closed by ``files`` if ours


def fits_stream(
    source: Source, files: ExitStack, max_bytes: int | None = None
) -> tuple[BinaryIO, int, bool]:
    """The uncompressed FITS stream for astropy, its length, and whether to memory-map it.

    A path is memory-mapped. A gzip/bzip2 file (by its magic bytes) or a non-seekable
    stream is copied, decompressing, to a temporary file that is memory-mapped. A seekable
    uncompressed file object at its start is read as it is; any other file object is read
    from where it stands. Files opened here are closed by ``files``.
    """
    if isinstance(source, str | os.PathLike):
        f = files.enter_context(open(source, "rb"))
        head = _head(f)
        f.seek(0)
        if _compressed(head):
            return (*_spool(f, head, b"", files, max_bytes), True)
        _check_magic(head)
        return f, os.fstat(f.fileno()).st_size, True
    if source.seekable() and source.tell() == 0:
        head = _head(source)
        source.seek(0)
        if not _compressed(head):
            _check_magic(head)
            size = source.seek(0, io.SEEK_END)
            source.seek(0)
            return source, size, False
        return (*_spool(source, head, b"", files, max_bytes), True)
    head = _head(source)
    return (*_spool(source, head, head, files, max_bytes), True)


def _head(f: BinaryIO) -> bytes:
    """The first bytes, enough for the magic numbers (a pipe may give fewer per read)."""
    head = b""
    while len(head) < len(FITS_MAGIC) and (more := f.read(len(FITS_MAGIC) - len(head))):
        head += more
    return head


def _compressed(head: bytes) -> bool:
    return head.startswith(GZIP_MAGIC) or head.startswith(BZIP2_MAGIC)


def _spool(
    f: BinaryIO, head: bytes, consumed: bytes, files: ExitStack, max_bytes: int | None
) -> tuple[BinaryIO, int]:
    """Copy ``f`` (``consumed``: its bytes already read), decompressing it if ``head`` says
    gzip or bzip2, to a temporary file; a read-only handle on that file and its size.

    Only decompression errors are the file's (``truncated``, ``not_fits``); a failure to
    write the temporary file (a full disk) is raised as it is.
    """
    spool = files.enter_context(tempfile.TemporaryFile(prefix="skyphot-"))
    kind = "gzip" if head.startswith(GZIP_MAGIC) else "bzip2" if head.startswith(
        BZIP2_MAGIC) else None
    rest: BinaryIO = _Prefixed(consumed, f) if consumed else f
    if kind == "gzip":
        stream: BinaryIO = files.enter_context(gzip.GzipFile(fileobj=rest, mode="rb"))
    elif kind == "bzip2":
        stream = files.enter_context(bz2.BZ2File(rest, mode="rb"))
    else:
        stream = rest
    size = 0
    while True:
        try:
            chunk = stream.read(SPOOL_CHUNK)
        except EOFError as exc:
            raise ExposureReadError(
                "truncated",
                f"the {kind} stream ends before its end marker: the file was cut short "
                "(interrupted upload or copy?)",
            ) from exc
        except (OSError, zlib.error) as exc:
            if kind is None:
                raise
            raise ExposureReadError("not_fits", f"the {kind} stream is corrupt: {exc}") from exc
        if not chunk:
            break
        if size == 0:
            _check_magic(chunk[: len(FITS_MAGIC)], kind)
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise ExposureReadError(
                "too_large",
                f"the {kind or 'FITS'} stream holds more than {max_bytes} bytes of FITS, "
                "the limit for one exposure; send a smaller file or a cutout",
            )
        spool.write(chunk)
    if size == 0:
        _check_magic(b"", kind)
    spool.flush()
    # astropy opens a read-write handle in update mode; a read-only one on the same file
    # keeps it to reading (and lets it memory-map the pixels).
    reader = files.enter_context(open(os.dup(spool.fileno()), "rb"))
    return reader, size


class _Prefixed(io.RawIOBase):
    """A non-seekable stream with bytes already read from it put back in front."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable buffer
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _check_magic(head: bytes, inside: str | None = None) -> None:
    where = f"the {inside} stream" if inside else "the file"
    if not head:
        raise ExposureReadError("not_fits", f"{where} is empty; expected a FITS file")
    if not head.startswith(FITS_MAGIC):
        raise ExposureReadError(
            "not_fits",
            f"{where} starts with {head[: len(FITS_MAGIC)]!r}, not {FITS_MAGIC!r}: it is not "
            "a FITS file (expected .fits, .fits.fz, .fits.gz or .fits.bz2)",
        )


def check_complete(hdul: fits.HDUList, size: int, warned: bool) -> None:
    """Raise ``truncated`` when an HDU's data or a later header runs past the end of the file.

    Astropy only warns about either; checking sizes here turns them into one clear error.
    A tile-compressed HDU is checked by the size of the table that holds its tiles. Missing
    padding after the last HDU's data is tolerated: no pixel is lost.
    """
    for index, hdu in enumerate(hdul):
        info = hdul.fileinfo(index)
        end = info["datLoc"] + _stored_size(hdu)
        if end > size:
            raise ExposureReadError(
                "truncated",
                f"HDU #{index} ({describe(hdu)}) needs data up to byte {end} but the file "
                f"ends at byte {size}: it was cut short (interrupted upload or copy?)",
            )
    last = hdul.fileinfo(len(hdul) - 1)
    end = last["datLoc"] + last["datSpan"]
    if warned and size > end:
        raise ExposureReadError(
            "truncated",
            f"after HDU #{len(hdul) - 1} the file holds {size - end} more bytes that are not a "
            "complete FITS header: it was cut short or is corrupt",
        )


def _stored_size(hdu: fits.hdu.base._BaseHDU) -> int:
    """Bytes of data the HDU occupies in the file, padding excluded."""
    if isinstance(hdu, fits.CompImageHDU):
        # astropy's ``size`` is the decompressed image's; the file holds the binary table
        # of tiles (rows, then the heap), which the table header sizes.
        table = getattr(hdu, "_bintable", None)
        if table is None:
            return 0  # not in this astropy: the tiles are checked as they are decompressed
        header = table.header
        return int(header.get("NAXIS1", 0)) * int(header.get("NAXIS2", 0)) + int(
            header.get("PCOUNT", 0))
    return hdu.size


def repair_header(header: fits.Header, where: str, notes: list[str]) -> None:
    """Fix the cards of ``header`` that break the FITS standard, or drop those that cannot be.

    astropy's ``silentfix`` repairs most (a lower-case keyword, an unquoted string, a
    malformed number kept as text); a card whose value still cannot be parsed is removed so
    that no later reader trips on it. Each repair or removal is a note.
    """
    broken = []
    for index, card in enumerate(header.cards):
        try:
            card.verify("exception")
        except Exception as exc:  # astropy's VerifyError, or a parse error from the value
            broken.append((index, card, _first_line(exc)))
    found = []
    for index, card, problem in reversed(broken):  # from the end, so deleting keeps indices
        try:
            card.verify("silentfix")
            found.append(f"{where}: {problem}; repaired, read as {card.value!r}")
        except Exception:
            del header[index]
            found.append(f"{where}: {problem}; the card cannot be repaired and was skipped")
    for note in reversed(found):
        _note(notes, note)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Verification", "Note:"))]
    return (useful or lines or [type(exc).__name__])[0].rstrip(".")


def _note(notes: list[str], note: str) -> None:
    if note not in notes:
        notes.append(note)


# ---------------------------------------------------------------------------------------------
# Image HDUs


def header_shape(header: fits.Header) -> tuple[int, ...]:
    """Array shape from NAXISn, leading length-1 axes dropped (a 1×H×W cube is an image).

    A tile-compressed HDU's header is the image's (astropy maps ZNAXISn to NAXISn).
    """
    shape = [int(header.get(f"NAXIS{i}", 0)) for i in range(int(header.get("NAXIS", 0)), 0, -1)]
    while len(shape) > 2 and shape[0] == 1:
        shape.pop(0)
    return tuple(shape)


def require_shape(hdu: fits.hdu.base._BaseHDU, shape: tuple[int, ...], what: str,
                  why: str) -> None:
    """Refuse (``shape_mismatch``) a plane of another shape than the image's: "``what`` has
    shape … but the image has …; ``why``"."""
    found = header_shape(hdu.header)
    if found != tuple(shape):
        raise ExposureReadError(
            "shape_mismatch",
            f"{what} has shape {found} but the image has {tuple(shape)}; {why}")


def plane_name(hdu: fits.hdu.base._BaseHDU) -> str:
    """EXTNAME, else afw's EXTTYPE (old afw files have only that), upper-case."""
    return str(hdu.header.get("EXTNAME") or hdu.header.get("EXTTYPE") or "").strip().upper()


def describe(hdu: fits.hdu.base._BaseHDU) -> str:
    """E.g. "image IMAGE of shape (4072, 4000)", "table SOURCES", "image PRIMARY without data"."""
    name = hdu.name or "PRIMARY"
    if isinstance(hdu, fits.BinTableHDU | fits.TableHDU):
        return f"table {name}"
    shape = header_shape(hdu.header)
    return f"image {name}" + (f" of shape {shape}" if shape else " without data")


def contents(hdul: fits.HDUList) -> str:
    """Every HDU, for messages: "#0 image PRIMARY without data, #1 image N2 of shape …"."""
    return ", ".join(f"#{i} {describe(h)}" for i, h in enumerate(hdul))


def is_image(hdu: fits.hdu.base._BaseHDU) -> bool:
    return isinstance(hdu, ImageLike)


def first_image(hdul: fits.HDUList) -> int | None:
    """Index of the first HDU holding a 2-d image (or a 1×…×H×W cube), None if none."""
    return next((i for i, h in enumerate(hdul)
                 if is_image(h) and len(header_shape(h.header)) >= 2), None)


def find_hdu(hdul: fits.HDUList, spec: HduSpec, what: str) -> int:
    """Index of the image HDU ``spec`` names; ``bad_hdu`` naming what the file holds if none.

    ``what`` names the plane in messages ("the image", "the weight map").
    """
    index: int | None
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        index = int(spec)
        if not 0 <= index < len(hdul):
            raise ExposureReadError(
                "bad_hdu",
                f"{what}: there is no HDU #{index}; the file has {len(hdul)} "
                f"(#0..#{len(hdul) - 1}: {contents(hdul)})",
            )
    else:
        name, _, version = str(spec).strip().partition(",")
        name = name.strip().upper()
        index = next(
            (i for i, h in enumerate(hdul) if plane_name(h) == name and (
                not version.strip() or str(h.header.get("EXTVER", 1)) == version.strip())),
            None,
        )
        if index is None:
            raise ExposureReadError(
                "bad_hdu",
                f"{what}: no HDU is named {str(spec).strip()!r} (EXTNAME or EXTTYPE); the "
                f"file holds {contents(hdul)}",
            )
    if not is_image(hdul[index]):
        raise ExposureReadError(
            "bad_hdu", f"{what}: HDU #{index} is a {describe(hdul[index])}, not an image")
    return index
