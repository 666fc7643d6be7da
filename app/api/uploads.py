"""Streaming multipart upload: the ``file`` field goes to a staging blob chunk by chunk.

The body is never held in memory nor spooled by the framework; its sha256 and size are
computed on the way, and the upload stops at the size limit.
"""

from __future__ import annotations

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from app.services.errors import InvalidInputError, PayloadTooLargeError
from app.storage.blobs import BlobTooLargeError, StagedBlob

FIELD = "file"


class _FilePart:
    """Multipart callbacks that copy one named field into a staged blob."""

    def __init__(self, staged: StagedBlob) -> None:
        self.staged = staged
        self.filename: str | None = None
        self.found = False
        self._header_field = b""
        self._header_value = b""
        self._disposition = b""
        self._copying = False

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
        self._copying = params.get(b"name") == FIELD.encode() and not self.found
        if self._copying:
            name = params.get(b"filename")
            self.filename = name.decode("utf-8", "replace").rsplit("/", 1)[-1] if name else None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._copying:
            self.staged.write(data[start:end])

    def on_part_end(self) -> None:
        if self._copying:
            self.found = True
            self._copying = False


async def receive_file(request: Request, staged: StagedBlob, limit: int) -> str | None:
    """Copy the multipart field ``file`` into ``staged``; returns the client's file name."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidInputError("send the exposure as multipart/form-data with a 'file' field")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit + 64 * 1024:
        raise _too_large(limit)
    part = _FilePart(staged)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": part.on_part_begin,
            "on_header_field": part.on_header_field,
            "on_header_value": part.on_header_value,
            "on_header_end": part.on_header_end,
            "on_headers_finished": part.on_headers_finished,
            "on_part_data": part.on_part_data,
            "on_part_end": part.on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except BlobTooLargeError as error:
        raise _too_large(error.limit) from error
    if not part.found:
        raise InvalidInputError(
            f"the multipart body has no complete '{FIELD}' field; send the FITS file as '{FIELD}'",
            code="missing_file",
        )
    return part.filename


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the upload is larger than the limit of {limit} bytes (SKYPHOT_MAX_UPLOAD_BYTES)",
        detail={"limit": limit},
    )
