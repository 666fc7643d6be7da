"""The browser front end: ``/`` is its page, ``/web/…`` its static files (app/web, no build step).

Mounted last, after every ``/v1`` router and the docs, so it never shadows the API; only ``/``
and ``/web`` are taken, so an unknown path still gets the API's JSON 404.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

WEB_ROOT = Path(__file__).resolve().parents[2] / "web"
NO_CACHE = {"Cache-Control": "no-cache"}


class RevalidatedFiles(StaticFiles):
    """Static files a browser revalidates (ETag) before each use: no build step means no
    hashed file names, so a cached module must not outlive an upgrade of the page."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(NO_CACHE)
        return response


def install(app: FastAPI) -> None:
    """Serve the page at ``/`` and its scripts and styles under ``/web``."""

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB_ROOT / "index.html", headers=NO_CACHE)

    app.mount("/web", RevalidatedFiles(directory=WEB_ROOT), name="web")
