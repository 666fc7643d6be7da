"""Fixtures for the service tests: both database back ends, settings, the app in its lifespan.

Tests that need PostgreSQL or Redis skip when it is unreachable, except under ``CI=true``,
where a missing service fails the run.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import psycopg
import pytest
import redis
from ci import unavailable
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.jobs.runtime import Runtime
from app.settings import Settings

POSTGRES_ADMIN_URL = os.environ.get(
    "SKYPHOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_TEST_URL = os.environ.get("SKYPHOT_TEST_REDIS", "redis://127.0.0.1:6379/13")

FINAL_PHASES = {"COMPLETED", "ERROR", "ABORTED"}


def service_unavailable(service: str, error: Exception) -> NoReturn:
    """Skip the test, or fail it under ``CI=true``: CI must never skip for a missing service."""
    unavailable(f"{service} is unreachable: {type(error).__name__}: {error}")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL on a fresh PostgreSQL schema, dropped after the test."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        service_unavailable("PostgreSQL", error)
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        base = POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1)
        yield f"{base}?options=-csearch_path%3D{schema}"
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def redis_url() -> str:
    """A Redis database of its own, emptied first."""
    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=3)
    try:
        client.flushdb()
    except redis.RedisError as error:
        service_unavailable("Redis", error)
    finally:
        client.close()
    return REDIS_TEST_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'skyphot.sqlite3'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Fast heartbeats and retries so the job machinery is exercised in seconds."""
    return Settings(
        database_url=database_url,
        broker_url="memory://",
        storage_url=str(tmp_path / "storage"),
        queue_name=f"test-{uuid.uuid4().hex[:8]}",
        heartbeat_interval=0.2,
        retry_delay=0.05,
        reconcile_interval=0.5,
        job_time_limit=30,
        worker_threads=2,
        log_level="WARNING",
    )


@pytest.fixture
def make_client(settings: Settings) -> Iterator[Callable[..., TestClient]]:
    """Start the app (lifespan included) with settings overrides; stopped after the test."""
    started: list[TestClient] = []

    def start(**overrides: Any) -> TestClient:
        client = TestClient(create_app(settings.model_copy(update=overrides)))
        client.__enter__()
        started.append(client)
        return client

    yield start
    for client in reversed(started):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def runtime_of(client: TestClient) -> Runtime:
    return client.app.state.runtime  # type: ignore[attr-defined]


def wait_for_job(
    client: TestClient, job_id: str, phases: set[str] = FINAL_PHASES, timeout: float = 30.0
) -> dict[str, Any]:
    """Poll the job until its phase is one of ``phases``."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["phase"] in phases:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['phase']} after {timeout} s: {job}")
        time.sleep(0.05)


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The one error shape, with the expected status (and code)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "detail"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]
