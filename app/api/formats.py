"""Which catalog format a client wants: ``?format=`` first, then the Accept header."""

from __future__ import annotations

from typing import cast

from fastapi import Request, Response

from app.io.catalogs import FORMATS, CatalogFormat
from app.services.errors import InvalidInputError

CATALOG_MEDIA_TYPES = {name: media_type for name, (media_type, _) in FORMATS.items()}
ACCEPT_ALIASES = {
    "application/x-fits": "fits",
    "image/fits": "fits",
    "text/xml": "votable",
    "application/xml": "votable",
    "application/x-parquet": "parquet",
}


def negotiate(
    request: Request, format: str | None, *, default: CatalogFormat = "json"
) -> CatalogFormat:
    """The format name; 422 naming the choices for an unknown ``format``."""
    if format is not None:
        if format not in CATALOG_MEDIA_TYPES:
            raise InvalidInputError(
                f"unknown format {format!r}; choose one of {', '.join(CATALOG_MEDIA_TYPES)}",
                code="unknown_format",
            )
        return cast(CatalogFormat, format)
    by_type = {v: k for k, v in CATALOG_MEDIA_TYPES.items()} | ACCEPT_ALIASES
    for item in request.headers.get("accept", "").split(","):
        media_type = item.split(";")[0].strip().lower()
        if media_type in by_type:
            return cast(CatalogFormat, by_type[media_type])
    return default


def attachment(content: bytes, format: str, filename: str) -> Response:
    """A catalog file as a download named ``filename`` plus the format's extension."""
    return Response(
        content,
        media_type=CATALOG_MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{filename}{FORMATS[format][1]}"'},
    )
