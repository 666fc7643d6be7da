"""Quick JSON forced requests are answered before routing, and answered as the route would.

Whatever the fast path does not answer itself (another format, a calexp still on disk, any
error) reaches the route with its body intact, so the answers must not depend on which of
the two answered; the tests count the route's measurements to know which one did.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

import app.api.routers.forced as forced_route
from app.io.catalogs import read_catalog
from service.api.conftest import Detected
from service.conftest import assert_error, runtime_of


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The queries the route measured, in order."""
    calls: list[Any] = []
    measure = forced_route._measure

    def counted(service: Any, query: Any, format: Any) -> bytes:
        calls.append(query)
        return measure(service, query, format)

    monkeypatch.setattr(forced_route, "_measure", counted)
    return calls


def body_of(detected: Detected, **extra: Any) -> dict[str, Any]:
    truth = detected.truth
    return {"exposure_id": detected.exposure_id, **extra, "positions": [
        {"ra": float(truth["ra"][i]), "dec": float(truth["dec"][i]), "name": f"s{i}"}
        for i in range(5)] + [{"ra": 0.0, "dec": 0.0, "name": "far"}]}


def test_quick_requests_skip_the_route_and_answer_the_same(
        client: TestClient, detected: Detected, routed: list[Any]) -> None:
    # on PostgreSQL the calexp's lookup is a network round trip: every request is routed
    local = runtime_of(client).settings.database_url.startswith("sqlite")
    body = body_of(detected)
    first = client.post("/v1/forced", json=body)  # the calexp is read: the route's work
    assert first.status_code == 200 and len(routed) == 1
    again = client.post("/v1/forced", json=body, headers={"X-Request-ID": "fast-1"})
    assert again.status_code == 200 and len(routed) == (1 if local else 2)
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"] == "application/json"
    assert again.headers["x-request-id"] == "fast-1"
    assert int(again.headers["content-length"]) == len(again.content)
    rows = again.json()["rows"]
    assert [r["name"] for r in rows] == ["s0", "s1", "s2", "s3", "s4", "far"]
    assert rows[-1]["base_PsfFlux_instFlux"] is None and rows[-1][
        "base_PixelFlags_flag_offimage"]
    # charset in the content type, ?format=json and a JSON Accept are all quick
    for headers, params in (({"content-type": "application/json; charset=utf-8"}, {}),
                            ({}, {"format": "json"}), ({"accept": "application/json"}, {})):
        response = client.post("/v1/forced", content=again.request.content, params=params,
                               headers=headers | {"content-type": headers.get(
                                   "content-type", "application/json")})
        assert response.content == first.content, (headers, params)
    assert len(routed) == (1 if local else 5)


def test_large_apertures_are_the_routes(client: TestClient, detected: Detected,
                                       routed: list[Any]) -> None:
    """A 100-px aperture costs milliseconds per position: measured off the event loop."""
    apertures = {"plugins": ["base_PsfFlux", "base_CircularApertureFlux"]}
    client.post("/v1/forced", json=body_of(detected))  # the calexp in memory
    start = len(routed)
    small = client.post("/v1/forced", json=body_of(detected, **apertures,
                                                   apertureRadii=[3.0, 12.0]))
    assert small.status_code == 200
    local = runtime_of(client).settings.database_url.startswith("sqlite")
    assert len(routed) == start + (0 if local else 1)
    large = client.post("/v1/forced", json=body_of(detected, **apertures,
                                                   apertureRadii=[3.0, 100.0]))
    assert large.status_code == 200 and len(routed) == start + (1 if local else 2)
    assert [r["base_CircularApertureFlux_3_0_instFlux"] for r in large.json()["rows"]] == [
        r["base_CircularApertureFlux_3_0_instFlux"] for r in small.json()["rows"]]


@pytest.mark.parametrize(("headers", "params"), [
    ({}, {"format": "csv"}), ({"accept": "text/csv"}, {}), ({}, {"format": "fits"})])
def test_other_formats_are_the_routes(client: TestClient, detected: Detected,
                                      routed: list[Any], headers: dict[str, str],
                                      params: dict[str, str]) -> None:
    response = client.post("/v1/forced", json=body_of(detected), headers=headers,
                           params=params)
    assert response.status_code == 200 and len(routed) == 1
    table = read_catalog(io.BytesIO(response.content), params.get("format", "csv"))
    assert list(table["name"]) == ["s0", "s1", "s2", "s3", "s4", "far"]


@pytest.mark.parametrize(("send", "status", "code"), [
    (lambda d: {"content": b'{"exposure_id": ', "headers": {"content-type": "application/json"}},
     422, "invalid_request"),
    (lambda d: {"json": {"exposure_id": d.exposure_id, "positions": [{"x": 1.0}]}},
     422, "invalid_position"),
    (lambda d: {"json": {"exposure_id": "no-such-exposure", "positions": [{"x": 1, "y": 1}]}},
     404, "exposure_not_found"),
    (lambda d: {"json": body_of(d, plugins=["base_NoSuchFlux"])}, 422, "unknown_plugin"),
    (lambda d: {"json": body_of(d, job_id="no-such-job")}, 404, "job_not_found"),
    (lambda d: {"json": body_of(d), "params": {"format": "xls"}}, 422, "unknown_format"),
])
def test_errors_are_the_routes(client: TestClient, detected: Detected,
                               send: Callable[[Detected], dict[str, Any]], status: int,
                               code: str) -> None:
    client.post("/v1/forced", json=body_of(detected)).raise_for_status()  # calexp in memory
    response = client.post("/v1/forced", **send(detected))
    assert_error(response, status, code)
    assert response.headers["x-request-id"]


def test_another_owner_is_refused_on_the_fast_path(
        client: TestClient, make_client: Callable[..., TestClient], detected: Detected) -> None:
    body = body_of(detected)
    client.post("/v1/forced", json=body).raise_for_status()
    other = make_client(default_owner="someone-else")
    assert_error(other.post("/v1/forced", json=body), 404, "exposure_not_found")
    assert client.post("/v1/forced", json=body).status_code == 200
