"""``POST /v1/forced`` answered beside FastAPI's routing when it is a quick JSON request.

The busiest route is a few positions on a calexp already in memory, whose measurement
costs ~0.2 ms; FastAPI's routing, dependency solving and body parsing cost as much again.
This middleware answers the request itself when everything about it is ordinary: a JSON
body that validates as `ForcedRequest`, a JSON answer, a query `ForcedService.quick`
accepts, and a calexp in memory; those requests are measured together
(`ForcedBatcher`). Anything else (another format, a bad body, a 4xx of any kind, a calexp
still to be read) goes on to the route in `app.api.routers.forced` with the body already
read, so the route alone decides every other answer and every error.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.dependencies import forced_service, owner_of
from app.api.formats import CATALOG_MEDIA_TYPES, negotiate
from app.api.schemas_forced import ForcedRequest
from app.io.catalogs import json_document
from app.services.errors import ServiceError
from app.storage.exposure_cache import NotInMemory

PATH = "/v1/forced"
JSON_HEADERS = [(b"content-type", CATALOG_MEDIA_TYPES["json"].encode("latin-1"))]


class ForcedFastPath:
    """Pure ASGI, inside the request-id middleware (every request is logged the same)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = await _body(receive)
        if body is None:
            return  # the client went away: nobody to answer
        content = await self._answer(scope, body)
        if content is None:
            await self.app(scope, _replay(body, receive), send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*JSON_HEADERS, (b"content-length", b"%d" % len(content))]})
        await send({"type": "http.response.body", "body": content})

    async def _answer(self, scope: Scope, body: bytes) -> bytes | None:
        """The JSON rows, or None to leave the request to the route."""
        app: Any = scope["app"]
        request = Request(scope)
        if app.dependency_overrides or _content_type(request) != "application/json":
            return None  # overrides (tests) act on routes; other bodies are the route's to refuse
        try:
            if negotiate(request, request.query_params.get("format")) != "json":
                return None
            query = ForcedRequest.model_validate_json(body).to_query()
        except (ServiceError, ValidationError):
            return None
        runtime = app.state.runtime
        service = forced_service(runtime, owner_of(runtime))
        if not service.quick(query):
            return None
        try:
            return json_document(await app.state.forced_batcher.measure(service, query))
        except (ServiceError, NotInMemory):
            return None  # the route answers the error, or reads the calexp off the loop


async def _body(receive: Receive) -> bytes | None:
    """The whole request body; None when the client went away before sending it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the route: the body read here, then whatever the client sends next
    (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()
