"""Streaming multipart uploads: file parts go to staging blobs chunk by chunk.

The body is never held in memory nor spooled by the framework: each file part is written
to its own `StagedBlob` (sha256 and size computed on the way, the upload stopped at the
size limit), and only small non-file parts (a JSON document) are kept in memory, bounded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from app.services.errors import InvalidInputError, PayloadTooLargeError
from app.storage.blobs import BlobTooLargeError, StagedBlob

FIELD = "file"
MAX_FIELD_BYTES = 1024 * 1024
"""Largest small (in-memory) part, such as a job's JSON."""


@dataclass
class Multipart:
    """What a multipart body held: the client's file names, and the small parts' bytes."""

    filenames: dict[str, str | None] = field(default_factory=dict)
    fields: dict[str, bytes] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)  # names of the parts not asked for


class _FieldTooLarge(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _Parts:
    """Multipart callbacks: named file parts into staged blobs, named small parts into memory."""

    def __init__(self, files: Mapping[str, StagedBlob], fields: frozenset[str]) -> None:
        self._files = files
        self._fields = fields
        self.body = Multipart()
        self._header_field = b""
        self._header_value = b""
        self._disposition = b""
        self._current: str | None = None
        self._filename: str | None = None
        self._buffer = bytearray()

    def on_part_begin(self) -> None:
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_field.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_field = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._disposition)
        name = params.get(b"name", b"").decode("utf-8", "replace")
        seen = name in self.body.filenames or name in self.body.fields
        self._current = name if (name in self._files or name in self._fields) and not seen \
            else None
        if name not in self._files and name not in self._fields \
                and name not in self.body.ignored:
            self.body.ignored.append(name)
        filename = params.get(b"filename")
        self._filename = filename.decode("utf-8", "replace").rsplit("/", 1)[-1] if filename \
            else None
        self._buffer = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is None:
            return
        if self._current in self._files:
            self._files[self._current].write(data[start:end])
            return
        self._buffer += data[start:end]
        if len(self._buffer) > MAX_FIELD_BYTES:
            raise _FieldTooLarge(self._current)

    def on_part_end(self) -> None:
        """A part counts once complete: a body cut short leaves it out."""
        if self._current in self._files:
            self.body.filenames[self._current] = self._filename
        elif self._current is not None:
            self.body.fields[self._current] = bytes(self._buffer)
        self._current = None


async def receive_multipart(request: Request, files: Mapping[str, StagedBlob], limit: int,
                            setting: str, fields: frozenset[str] = frozenset()) -> Multipart:
    """Copy the named file parts into their staged blobs, keep the named small parts.

    ``limit`` is the size limit of the staged blobs (they enforce it), named by the
    ``setting`` that sets it; a body announced larger than the limits allow is refused before
    it is read. Other parts are ignored.
    """
    content_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidInputError(
            "send multipart/form-data with the part(s) "
            f"{', '.join(map(repr, [*files, *sorted(fields)]))}")
    length = request.headers.get("content-length")
    room = limit * len(files) + MAX_FIELD_BYTES * len(fields) + 64 * 1024
    if length is not None and length.isdigit() and int(length) > room:
        raise _too_large(limit, setting)
    parts = _Parts(files, fields)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": parts.on_part_begin,
            "on_header_field": parts.on_header_field,
            "on_header_value": parts.on_header_value,
            "on_header_end": parts.on_header_end,
            "on_headers_finished": parts.on_headers_finished,
            "on_part_data": parts.on_part_data,
            "on_part_end": parts.on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except BlobTooLargeError as error:
        raise _too_large(error.limit, setting) from error
    except _FieldTooLarge as error:
        raise PayloadTooLargeError(
            f"the multipart part {error.name!r} is larger than {MAX_FIELD_BYTES} bytes; "
            "large inputs go in a file part", code="part_too_large",
            detail={"part": error.name, "limit": MAX_FIELD_BYTES}) from error
    return parts.body


async def receive_exposure(request: Request, files: Mapping[str, StagedBlob], limit: int,
                           fields: frozenset[str]) -> Multipart:
    """Copy the exposure's file parts (``file`` and its companions, named by ``files``) into
    their staged blobs and keep the small ``fields``; the part ``file`` is required."""
    body = await receive_multipart(request, files, limit, "SKYPHOT_MAX_UPLOAD_BYTES", fields)
    if FIELD not in body.filenames:
        raise InvalidInputError(
            f"the multipart body has no complete '{FIELD}' field; send the FITS file as '{FIELD}'",
            code="missing_file",
        )
    if body.ignored:
        raise InvalidInputError(
            f"unknown part(s) {', '.join(map(repr, body.ignored))}: an exposure upload takes "
            f"the file parts {', '.join(map(repr, files))} and the fields "
            f"{', '.join(map(repr, sorted(fields)))}", code="unknown_part")
    return body


def _too_large(limit: int, setting: str) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the upload is larger than the limit of {limit} bytes ({setting})",
        detail={"limit": limit},
    )
