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
from sqlalchemy import func, select, update

from app.db.models import ForcedSourceRecord, JobPhase, JobRecord
from app.io.catalogs import catalog_bytes, read_catalog
from service.api.conftest import Detected
from service.api.test_exposures import stored_files
from service.api.test_forced import column, forced
from service.conftest import assert_error, runtime_of, wait_for_job


def submit(client: TestClient, job: dict[str, Any], data: bytes | None = None,
           filename: str = "positions.csv") -> Any:
    """POST /v1/jobs as multipart: the job's JSON, and the table as ``positions``."""
    files: dict[str, Any] = {"job": (None, json.dumps(job), "application/json")}
    if data is not None:
        files["positions"] = (filename, data, "application/octet-stream")
    return client.post("/v1/jobs", files=files)


def star_table(truth: Table, n_grid: int = 0) -> Table:
    """The simulated stars by RA/Dec, then a grid of positions over and around the image,
    with three tags."""
    ra = np.asarray(truth["ra"], float)
    dec = np.asarray(truth["dec"], float)
    if n_grid:
        side = int(np.ceil(np.sqrt(n_grid)))
        pad_ra, pad_dec = 0.15 * np.ptp(ra), 0.15 * np.ptp(dec)  # some off the image
        gr, gd = np.meshgrid(np.linspace(ra.min() - pad_ra, ra.max() + pad_ra, side),
                             np.linspace(dec.min() - pad_dec, dec.max() + pad_dec, side))
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
    (b"ra,name\n1,a\n", "p.csv", "missing_coordinates", "'ra' needs 'dec' beside it"),
    (b"ra,dec\n1,2\n3,north\n", "p.csv", "unreadable_table", "north"),
    (b"ra,dec\n1,2\n3,-137\n", "p.csv", "invalid_position", "row 1 (0-based): dec must be"),
    (b"ra,dec\n", "p.csv", "no_positions", "no rows"),
    (b"ra,dec,base_PsfFlux_flux\n1,2,3\n", "p.csv", "reserved_column", "rename"),
    (b"ra,dec,base_CircularApertureFlux_7_0_instFlux\n1,2,3\n", "p.csv", "reserved_column",
     "rename"),
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


def all_rows(client: TestClient, job_id: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of a job's JSON rows, following the cursor."""
    query = {**params, "limit": 10000}
    rows: list[dict[str, Any]] = []
    while True:
        response = client.get(f"/v1/jobs/{job_id}/sources", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        rows += page["sources"]
        if page["next_cursor"] is None:
            return rows
        query["cursor"] = page["next_cursor"]


def test_forced_rows_are_stored_paged_filtered_and_replaced(
        client: TestClient, detected: Detected) -> None:
    table = star_table(detected.truth, n_grid=20000 - len(detected.truth))
    table["id"] = [f"target-{i}" for i in range(len(table))]
    response = submit(client, {"kind": "forced", "exposure_id": detected.exposure_id},
                      catalog_bytes(table, "parquet"), "targets.parquet")
    job = completed(client, response)
    full = read_catalog(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/forced").content), "fits")
    assert len(full) == len(table) == 20000

    rows = all_rows(client, job["id"])  # three pages: every row once, in input order
    assert [r["id"] for r in rows] == list(table["id"])
    assert [r["name"] for r in rows] == list(table["name"])
    assert [r["rank"] for r in rows] == list(table["rank"])
    np.testing.assert_allclose(column(rows, "base_PsfFlux_instFlux"),
                               np.asarray(full["base_PsfFlux_instFlux"]), rtol=1e-12)
    assert set(rows[0]) == set(full.colnames)

    def expect(mask: np.ndarray) -> list[str]:
        return list(np.asarray(full["id"])[mask])

    def ids(**params: Any) -> list[str]:
        return [r["id"] for r in all_rows(client, job["id"], **params)]

    flux = np.asarray(full["base_PsfFlux_instFlux"])
    err = np.asarray(full["base_PsfFlux_instFluxErr"])
    with np.errstate(invalid="ignore"):
        faint = (err > 0) & (flux > 2 * err) & (flux < 5 * err)
    assert ids(min_psf_snr=2, max_psf_snr=5) == expect(faint) and faint.sum() > 10
    x, y = np.asarray(full["base_TransformedCentroid_x"]), np.asarray(
        full["base_TransformedCentroid_y"])
    in_box = (x >= 100) & (x <= 200) & (y >= 50) & (y <= 300)
    assert ids(x_min=100, x_max=200, y_min=50, y_max=300) == expect(in_box)
    ra0, dec0 = float(full["ra"][0]), float(full["dec"][0])
    near = np.degrees(np.arccos(np.clip(
        np.sin(np.radians(dec0)) * np.sin(np.radians(np.asarray(full["dec"])))
        + np.cos(np.radians(dec0)) * np.cos(np.radians(np.asarray(full["dec"])))
        * np.cos(np.radians(np.asarray(full["ra"]) - ra0)), -1, 1))) <= 0.005
    assert ids(ra=ra0, dec=dec0, radius=0.005) == expect(near) and 1 < near.sum() < 20000
    edge = np.asarray(full["base_PixelFlags_flag_edge"])
    assert 0 < edge.sum() < len(full)
    assert ids(flag="base_PixelFlags_flag_edge") == expect(edge)
    assert ids(noflag="base_PixelFlags_flag_edge", min_psf_snr=2) == expect(
        ~edge & (err > 0) & (flux > 2 * err))
    assert ids(position_kind="input") == list(table["id"])
    assert ids(position_kind="random") == []
    assert ids(exposure_id="elsewhere") == []

    picked = client.get(f"/v1/jobs/{job['id']}/sources",
                        params={"columns": "name,base_PsfFlux_flux", "limit": 3}).json()
    assert [set(r) for r in picked["sources"]] == [{"name", "base_PsfFlux_flux"}] * 3
    # ForcedMeasurementTask's slots, by alias
    assert job["summary"]["aliases"]["slot_Centroid"] == "base_TransformedCentroid"
    by_alias = client.get(f"/v1/jobs/{job['id']}/sources",
                          params={"columns": "slot_Centroid_x", "limit": 3}).json()["sources"]
    assert [r["slot_Centroid_x"] for r in by_alias] == list(x[:3])
    assert ids(noflag="base_PsfFlux_flag_badCentroid", flag="slot_Centroid_flag") == []
    assert "slot_Centroid:base_TransformedCentroid" in full.meta["ALIAS"]
    csv = client.get(f"/v1/jobs/{job['id']}/sources",
                     params={"format": "csv", "min_psf_snr": 2, "max_psf_snr": 5})
    from_csv = read_catalog(io.BytesIO(csv.content), "csv")
    assert list(from_csv["id"]) == expect(faint)
    assert str(from_csv["base_PsfFlux_flux"].unit) == "nJy"

    assert_error(client.get(f"/v1/jobs/{job['id']}/sources", params={"parents_only": True}),
                 422, "invalid_filter")
    assert "base_PsfFlux_flag" in assert_error(
        client.get(f"/v1/jobs/{job['id']}/sources", params={"flag": "nope"}),
        422, "unknown_flag")["message"]
    assert_error(client.get(f"/v1/jobs/{detected.job['id']}/sources",
                            params={"position_kind": "random"}), 422, "invalid_filter")

    # a second run of the job replaces its rows
    runtime = runtime_of(client)
    with runtime.sessions.begin() as session:
        session.execute(update(JobRecord).where(JobRecord.id == job["id"])
                        .values(phase=JobPhase.QUEUED))
    client.app.state.queue.send(job["id"])  # type: ignore[attr-defined]
    again = wait_for_job(client, job["id"], phases={"COMPLETED"}, timeout=120)
    assert again["attempt"] == 2
    with runtime.sessions() as session:
        count = session.scalar(select(func.count()).select_from(ForcedSourceRecord)
                               .where(ForcedSourceRecord.job_id == job["id"]))
    assert count == len(table)
    assert [r["id"] for r in all_rows(client, job["id"])] == list(table["id"])


def test_aperture_radii_chosen_in_a_job_as_in_the_synchronous_request(
        client: TestClient, detected: Detected) -> None:
    truth = detected.truth
    positions = [{"x": float(r["x"]), "y": float(r["y"]), "id": f"s{i}"}
                 for i, r in enumerate(truth)]
    options = {"plugins": ["base_PsfFlux", "base_CircularApertureFlux"],
               "apertureRadii": [2.5, 20.0]}
    sync = forced(client, {"exposure_id": detected.exposure_id, "positions": positions,
                           **options})["rows"]
    assert {"base_CircularApertureFlux_2_5_instFlux",
            "base_CircularApertureFlux_20_0_instFlux"} <= set(sync[0])
    assert "base_CircularApertureFlux_3_0_instFlux" not in sync[0]
    isolated = ((np.asarray(truth["kind"]) == "star") & (np.asarray(truth["psf_sn"]) > 50)
                & (np.asarray(truth["nearest_px"]) > 30))
    assert isolated.sum() >= 5
    wide = column(sync, "base_CircularApertureFlux_20_0_instFlux")[isolated]
    narrow = column(sync, "base_CircularApertureFlux_2_5_instFlux")[isolated]
    assert (narrow < 0.8 * wide).all()  # a 2.5-px aperture holds part of a star's light
    assert abs(np.median(wide / np.asarray(truth["flux"])[isolated]) - 1) < 0.03

    job = completed(client, client.post("/v1/jobs", json={
        "kind": "forced", "exposure_id": detected.exposure_id,
        "config": {"positions": positions, **options}}))
    result = read_catalog(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/forced").content), "fits")
    for name in ("base_CircularApertureFlux_2_5_instFlux",
                 "base_CircularApertureFlux_20_0_instFluxErr"):
        np.testing.assert_allclose(np.asarray(result[name]), column(sync, name), rtol=1e-12)

    for config, code, says in (
            ({"apertureRadii": [2.5]}, "radii_without_apertures", "add it to plugins"),
            ({"plugins": ["base_Nope"]}, "unknown_plugin", "'base_Nope'"),
            ({**options, "apertureRadii": [3.01, 3.04]}, "invalid_config", "0.1 pixel"),
            ({**options, "apertureRadii": [0.2]}, "invalid_config", "between 0.5 and 100")):
        error = assert_error(client.post("/v1/jobs", json={
            "kind": "forced", "exposure_id": detected.exposure_id,
            "config": {"positions": positions[:2], **config}}), 422, code)
        assert says in error["message"], error


def test_random_and_match_in_a_job_as_in_the_synchronous_request(
        client: TestClient, detected: Detected) -> None:
    positions = [{"x": float(r["x"]), "y": float(r["y"]), "id": f"s{i}"}
                 for i, r in enumerate(detected.truth)]
    options = {"random": {"n": 60, "min_distance_px": 40, "seed": 5}, "match": True}
    job = completed(client, client.post("/v1/jobs", json={
        "kind": "forced", "exposure_id": detected.exposure_id,
        "config": {"positions": positions, **options}}))
    rows = all_rows(client, job["id"])
    sync = forced(client, {"exposure_id": detected.exposure_id, "positions": positions,
                           **options})["rows"]
    assert len(rows) == len(positions) + 60 == job["summary"]["n_rows"]
    assert [r["position_kind"] for r in rows] == [r["position_kind"] for r in sync]
    assert [r["match_id"] for r in rows] == [r["match_id"] for r in sync]
    assert sum(r["match_id"] >= 0 for r in rows[: len(positions)]) >= len(positions) - 4
    for name in ("base_PsfFlux_instFlux", "coord_ra", "match_distance_px"):
        np.testing.assert_allclose(column(rows, name), column(sync, name), rtol=1e-12)
    random_rows = all_rows(client, job["id"], position_kind="random")
    # random rows have no client id (FITS stores a missing string as empty)
    assert len(random_rows) == 60 and all(r["id"] in ("", None) for r in random_rows)
    z = column(random_rows, "base_PsfFlux_instFlux") / column(random_rows,
                                                             "base_PsfFlux_instFluxErr")
    assert abs(z.mean()) < 0.4 and 0.6 < z.std() < 1.4

    jobs_before = client.get("/v1/jobs").json()["total"]
    too_many = client.post("/v1/jobs", json={
        "kind": "forced", "exposure_id": detected.exposure_id,
        "config": {"positions": positions[:3],
                   "random": {"n": 500, "min_distance_px": 200}}})
    assert "asked for 500" in assert_error(too_many, 422, "not_enough_blank_sky")["message"]
    assert client.get("/v1/jobs").json()["total"] == jobs_before  # refused, not stored
    # what needs no pixels is refused first, as it would be without random positions
    assert_error(client.post("/v1/jobs", json={
        "kind": "forced", "exposure_id": detected.exposure_id,
        "config": {"band": "r", "random": {"n": 500, "min_distance_px": 200}}}),
        422, "needs_no_exposure")
    assert_error(client.post("/v1/jobs", json={
        "kind": "forced", "exposure_id": detected.exposure_id,
        "config": {"positions": positions, "match_radius_px": 3}}), 422, "invalid_config")
