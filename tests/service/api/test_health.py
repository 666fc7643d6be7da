"""Liveness, readiness, the error shape and request ids."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.conftest import assert_error


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "checks": {}}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_ready_is_503_when_the_broker_is_down(make_client: Callable[..., TestClient]) -> None:
    client = make_client(broker_url="redis://127.0.0.1:1/0")
    error = assert_error(client.get("/ready"), 503, "not_ready")
    assert error["detail"]["database"] == "ok"
    assert error["detail"]["broker"].startswith("unreachable")


def test_limits_are_the_settings(make_client: Callable[..., TestClient]) -> None:
    client = make_client(forced_sync_max_positions=25, lightcurve_max_exposures=7)
    limits = client.get("/v1/limits").json()
    assert limits["forced_sync_max_positions"] == 25
    assert limits["lightcurve_max_exposures"] == 7
    assert limits["max_upload_bytes"] > limits["max_job_upload_bytes"] > 0
    # the limit it states is the one it applies
    body = {"exposure_id": "x", "random": {"n": 26}}
    assert_error(client.post("/v1/forced", json=body), 413, "too_many_positions")


def test_unknown_route_uses_the_error_shape(client: TestClient) -> None:
    error = assert_error(client.get("/v1/nothing"), 404, "not_found")
    assert "/v1/nothing" in error["message"]


def test_request_id_is_echoed(client: TestClient) -> None:
    response = client.get("/health", headers={"X-Request-ID": "abc123"})
    assert response.headers["x-request-id"] == "abc123"
    assert len(client.get("/health").headers["x-request-id"]) == 32


def test_openapi_docs_are_served(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "/v1/jobs/{job_id}/sources" in schema["paths"]
    assert client.get("/docs").status_code == 200


TRACED = """
import sys
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from app.api.app import create_app
from app.settings import Settings

spans = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(provider)
with TestClient(create_app(Settings(opentelemetry=sys.argv[1] == "on"))) as client:
    assert client.get("/health").status_code == 200
print(sorted(s.name for s in spans.get_finished_spans() if s.kind == trace.SpanKind.SERVER))
"""


@pytest.mark.parametrize(("flag", "spans"), [("on", "['GET /health']"), ("off", "[]")])
def test_opentelemetry_spans_only_when_asked(tmp_path: Path, flag: str, spans: str) -> None:
    # a process of its own: a global tracer provider can be set once per process
    env = {**os.environ, "SKYPHOT_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
           "SKYPHOT_BROKER_URL": "memory://", "SKYPHOT_STORAGE_URL": str(tmp_path / "s"),
           "SKYPHOT_LOG_LEVEL": "WARNING"}
    run = subprocess.run([sys.executable, "-c", TRACED, flag], env=env, capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).parents[3])
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == spans
