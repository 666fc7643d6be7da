"""One error shape for every 4xx and 5xx: ``{"error": {"code", "message", "detail"}}``."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from app.services.errors import ServiceError
from app.services.jobs import describe_validation
from app.settings import request_id_var

logger = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, detail: Any = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "detail": detail}}, status_code=status
    )


async def _service_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ServiceError)
    return error_response(error.status_code, error.code, error.message, error.detail)


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    detail = [_detail(e, request) for e in error.errors()]
    return error_response(422, "invalid_request", describe_validation(detail), detail)


def _detail(error: Any, request: Request) -> dict[str, Any]:
    """Where and what, as pydantic says it; said for a person where the body itself is the
    problem: JSON that does not parse (why, and where), or a body that is not a JSON object
    (and the content type that would make it one)."""
    loc = [str(part) for part in error["loc"]]
    message = str(error["msg"])
    if error["type"] == "json_invalid" and len(loc) == 2 and loc[0] == "body":
        reason = (error.get("ctx") or {}).get("error")
        message = (f"not valid JSON{f': {reason}' if reason else ''} at character {loc[1]}")
        loc = ["body"]
    elif error["type"] == "model_attributes_type" and loc == ["body"]:
        content_type = request.headers.get("content-type")
        if content_type is None or "json" not in content_type.lower():
            message = ("must be a JSON object sent with Content-Type: application/json (it "
                       f"came as {content_type or 'no content type'})")
        else:
            message = f"must be a JSON object, not {type(error['input']).__name__}"
    return {"loc": loc, "message": message, "type": error["type"]}


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    status = HTTPStatus(error.status_code)
    message = error.detail if isinstance(error.detail, str) else status.phrase
    if status == HTTPStatus.NOT_FOUND and message == status.phrase:
        message = f"no such resource: {request.method} {request.url.path}"
    code = status.phrase.lower().replace(" ", "_").replace("-", "_")
    response = error_response(error.status_code, code, message)
    if error.headers:
        response.headers.update(error.headers)
    return response


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error in %s %s", request.method, request.url.path)
    return error_response(
        500,
        "internal_error",
        "internal server error; quote the request id when reporting it",
        {"request_id": request_id_var.get()},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
