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
    detail = [
        {"loc": [str(part) for part in e["loc"]], "message": e["msg"], "type": e["type"]}
        for e in error.errors()
    ]
    return error_response(422, "invalid_request", describe_validation(detail), detail)


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
