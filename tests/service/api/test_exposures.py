"""Exposures: streamed upload, dedupe, metadata, refusals, listing and deletion."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from service.conftest import assert_error, runtime_of
from service.fits_files import calexp_bytes


def upload(client: TestClient, data: bytes, name: str = "calexp.fits"):  # noqa: ANN201
    return client.post("/v1/exposures", files={"file": (name, data, "application/fits")})


def stored_files(client: TestClient) -> list[Path]:
    root = runtime_of(client).store.root
    return [p for p in root.rglob("*") if p.is_file()]


def test_upload_stores_once_and_returns_metadata(client: TestClient) -> None:
    data = calexp_bytes()
    first = upload(client, data)
    assert first.status_code == 201, first.text
    body = first.json()
    assert first.headers["location"] == f"/v1/exposures/{body['id']}"
    assert body["shape"] == [64, 80]
    assert (body["band"], body["visit"], body["detector"]) == ("r", 1234, 42)
    assert body["mjd"] == 60000.5
    assert body["njy_per_count"] > 0
    assert body["mask_planes"]["DETECTED"] == 5
    assert len(body["corners"]) == 4
    assert 149.99 < body["ra_min"] < body["ra_max"] < 150.01
    assert body["metadata"]["wcs"]["CTYPE1"] == "RA---TAN"
    assert body["size"] == len(data)

    again = upload(client, data, name="copy.fits")
    assert again.status_code == 200
    assert again.json()["id"] == body["id"]
    assert len(stored_files(client)) == 1
    assert client.get(f"/v1/exposures/{body['id']}").json() == body


def test_not_fits_and_truncated_are_refused_and_nothing_is_kept(client: TestClient) -> None:
    error = assert_error(upload(client, b"hello, not a FITS file" * 200), 422, "invalid_exposure")
    assert error["detail"]["reason"] == "not_fits"
    data = calexp_bytes()
    error = assert_error(upload(client, data[: len(data) - 5000]), 422, "invalid_exposure")
    assert error["detail"]["reason"] == "truncated"
    assert "cut short" in error["message"]
    assert stored_files(client) == []
    assert client.get("/v1/exposures").json()["total"] == 0


def test_upload_over_the_limit_is_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_upload_bytes=50_000)
    error = assert_error(upload(client, calexp_bytes()), 413, "too_large")
    assert error["detail"] == {"limit": 50_000}
    assert stored_files(client) == []


def test_upload_needs_a_file_field(client: TestClient) -> None:
    response = client.post("/v1/exposures", files={"other": ("x.fits", b"x", "text/plain")})
    assert_error(response, 422, "missing_file")
    assert_error(client.post("/v1/exposures", content=b"raw"), 422, "invalid_input")


def test_urls_to_private_addresses_are_refused(client: TestClient) -> None:
    for url in (
        "http://127.0.0.1:8000/calexp.fits",
        "http://localhost/calexp.fits",
        "http://[::1]/calexp.fits",
    ):
        error = assert_error(client.post("/v1/exposures", json={"url": url}), 422, "unsafe_url")
        assert "not a public address" in error["message"]
    error = assert_error(
        client.post("/v1/exposures", json={"url": "ftp://127.0.0.1/x.fits"}), 422, "unsafe_url"
    )
    assert "only http and https" in error["message"]
    error = assert_error(client.post("/v1/exposures", json={"uri": "x"}), 422, "invalid_input")
    assert "uri" in error["message"]
    assert client.get("/v1/jobs").json()["total"] == 0


def test_list_get_and_delete(client: TestClient) -> None:
    ids = [upload(client, calexp_bytes(seed=seed)).json()["id"] for seed in range(3)]
    page = client.get("/v1/exposures", params={"limit": 2}).json()
    assert page["total"] == 3 and len(page["exposures"]) == 2
    rest = client.get("/v1/exposures", params={"limit": 2, "offset": 2}).json()
    assert {e["id"] for e in page["exposures"] + rest["exposures"]} == set(ids)

    assert client.delete(f"/v1/exposures/{ids[0]}").status_code == 204
    assert_error(client.get(f"/v1/exposures/{ids[0]}"), 404, "exposure_not_found")
    assert_error(client.delete(f"/v1/exposures/{ids[0]}"), 404, "exposure_not_found")
    assert len(stored_files(client)) == 2
