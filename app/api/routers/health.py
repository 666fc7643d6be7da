"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.dependencies import QueueDep, RuntimeDep
from app.api.errors import error_response
from app.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="The process is alive")
def health() -> Health:
    return Health(status="ok")


@router.get(
    "/ready",
    response_model=Health,
    summary="The database and the broker are reachable",
    responses={503: {"description": "A dependency is unreachable"}},
)
async def ready(runtime: RuntimeDep, queue: QueueDep) -> Health | JSONResponse:
    checks: dict[str, str] = {}

    def check_database() -> None:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    for name, check in (("database", check_database), ("broker", queue.ping)):
        try:
            await run_in_threadpool(check)
            checks[name] = "ok"
        except Exception as error:  # any failure means not ready; say which and why
            checks[name] = f"unreachable: {type(error).__name__}: {error}"
    if all(v == "ok" for v in checks.values()):
        return Health(status="ok", checks=checks)
    return error_response(503, "not_ready", "a dependency is unreachable", checks)
