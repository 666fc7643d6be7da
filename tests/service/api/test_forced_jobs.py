"""Forced jobs with an uploaded positions table: checked at submission, measured as the
synchronous request measures, tags back unchanged and in order; on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from astropy.table import Table
from fastapi.testclient import TestClient

from app.io.catalogs import catalog_bytes, read_catalog
from service.api.conftest import Detected
from service.api.test_exposures import stored_files
from service.api.test_forced import column, forced
from service.conftest import assert_error, wait_for_job


def submit(client: TestClient, job: dict[str, Any], data: bytes | None = None,
           filename: str = "positions.csv") -> Any:
    """POST /v1/jobs as multipart: the job's JSON, and the table as ``positions``."""
    files: dict[str, Any] = {"job": (None, json.dumps(job), "application/json")}
    if data is not None:
        files["positions"] = (filename, data, "application/octet-stream")
    return client.post("/v1/jobs", files=files)


def star_table(truth: Table, n_grid: int = 0) -> Table:
    """The simulated stars by RA/Dec, then a grid of blank positions, with three tags."""
    ra = np.asarray(truth["ra"], float)
    dec = np.asarray(truth["dec"], float)
    if n_grid:
        side = int(np.ceil(np.sqrt(n_grid)))
        gr, gd = np.meshgrid(np.linspace(ra.min(), ra.max(), side),
                             np.linspace(dec.min(), dec.max(), side))
        ra = np.concatenate([ra, gr.ravel()[:n_grid]])
        dec = np.concatenate([dec, gd.ravel()[:n_grid]])
    n = len(ra)
    return Table({"name": [f"p{i:05d}" for i in range(n)], "ra": ra, "dec": dec,
                  "rank": np.arange(n)[::-1], "weight": np.linspace(0.5, 1.5, n)})


def rows_of(table: Table) -> list[dict[str, Any]]:
    """The table as JSON positions."""
    columns = {name: table[name].tolist() for name in table.colnames}
    return [{name: columns[name][i] for name in table.colnames} for i in range(len(table))]


def completed(client: TestClient, response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    job = wait_for_job(client, response.json()["id"], timeout=120)
    assert job["phase"] == "COMPLETED", job
    return job


@pytest.mark.parametrize("format", ["csv", "fits", "votable", "parquet"])
def test_uploaded_table_measures_as_the_synchronous_request(
        client: TestClient, detected: Detected, format: str) -> None:
    table = star_table(detected.truth, n_grid=300)
    job = completed(client, submit(client, {"kind": "forced", "exposure_id":
                                            detected.exposure_id},
                                   catalog_bytes(table, format), f"stars.{format}"))
    stored = job["config"]["positions_file"]
    assert stored["format"] == format and stored["rows"] == len(table)
    assert stored["columns"] == ["name", "ra", "dec", "rank", "weight"]
    assert job["summary"]["n_positions"] == len(table)

    result = read_catalog(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/forced").content), "fits")
    assert result.colnames[:5] == ["name", "ra", "dec", "rank", "weight"]
    for tag in ("name", "rank", "weight"):
        assert list(result[tag]) == list(table[tag])  # unchanged, in input order
    sync = forced(client, {"exposure_id": detected.exposure_id,
                           "positions": rows_of(table[:500])})["rows"]
    np.testing.assert_allclose(np.asarray(result["base_PsfFlux_instFlux"])[:500],
                               column(sync, "base_PsfFlux_instFlux"), rtol=1e-12)
    bright = np.asarray(detected.truth["psf_sn"]) > 30
    ratio = (np.asarray(result["base_PsfFlux_instFlux"])[: len(bright)][bright]
             / np.asarray(detected.truth["flux"])[bright])
    assert abs(np.median(ratio) - 1) < 0.03


def test_plain_csv_with_pixel_positions(client: TestClient, detected: Detected) -> None:
    text = "x,y,label\n" + "".join(f"{r['x']:.3f},{r['y']:.3f},star {i}\n"
                                   for i, r in enumerate(detected.truth))
    job = completed(client, submit(client, {"kind": "forced", "exposure_id":
                                            detected.exposure_id}, text.encode()))
    result = read_catalog(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/forced").content), "fits")
    assert list(result["label"]) == [f"star {i}" for i in range(len(detected.truth))]
    np.testing.assert_allclose(np.asarray(result["base_TransformedCentroid_x"]),
                               np.round(np.asarray(detected.truth["x"], float), 3))


@pytest.mark.parametrize(("data", "filename", "code", "says"), [
    (b"ra,decl,name\n1,2,a\n", "p.csv", "missing_coordinates", "ra and dec"),
    (b"RA,DEC\n1,2\n", "p.csv", "missing_coordinates", "lower case"),
    (b"ra,dec\n1,2\n3,north\n", "p.csv", "unreadable_table", "north"),
    (b"ra,dec\n", "p.csv", "no_positions", "no rows"),
    (b"ra,dec,base_PsfFlux_flux\n1,2,3\n", "p.csv", "reserved_column", "rename"),
    (b"\x00\x01 not a table", "p.fits", "unreadable_table", "fits"),
    (b"SIMPLE  =                    T" + b" " * 2850, "p.fits", "unreadable_table", "fits"),
    (b"<VOTABLE><RESOURCE><TABLE><FIELD name='x'/>", "p.vot", "unreadable_table", "votable"),
])
def test_unusable_table_is_a_422_and_nothing_is_kept(
        client: TestClient, detected: Detected, data: bytes, filename: str, code: str,
        says: str) -> None:
    before = set(stored_files(client))
    jobs_before = client.get("/v1/jobs").json()["total"]
    response = submit(client, {"kind": "forced", "exposure_id": detected.exposure_id}, data,
                      filename)
    assert says in assert_error(response, 422, code)["message"]
    assert set(stored_files(client)) == before
    assert client.get("/v1/jobs").json()["total"] == jobs_before


def test_upload_refusals(make_client: Callable[..., TestClient], sparse: Any) -> None:
    client = make_client(max_job_upload_bytes=2000)
    before = set(stored_files(client))
    big = b"ra,dec\n" + b"10.0,20.0\n" * 400
    job = {"kind": "forced", "exposure_id": "any"}
    error = assert_error(submit(client, job, big), 413, "too_large")
    assert "SKYPHOT_MAX_JOB_UPLOAD_BYTES" in error["message"]
    assert set(stored_files(client)) == before
    small = b"ra,dec\n10.0,20.0\n"
    assert_error(submit(client, {**job, "config": {"positions": [{"ra": 1, "dec": 2}]}},
                        small), 422, "invalid_config")  # inline and uploaded: one of the two
    assert_error(submit(client, {**job, "config": {"positions_file": {}}}, small),
                 422, "invalid_config")  # the service fills it in, not the client
    assert_error(submit(client, {"kind": "detect", "exposure_id": "any"}, small),
                 422, "unexpected_file")
    assert_error(client.post("/v1/jobs", files={"positions": ("p.csv", small)}),
                 422, "missing_job")
    assert_error(submit(client, job, small), 404, "exposure_not_found")
    assert set(stored_files(client)) == before
