"""Forced photometry over HTTP: truth at simulated stars, blank sky, matching, formats, errors.

The real engine runs on a simulated calexp whose truth (positions, fluxes) the tests know,
after a real detect job characterized it; on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from fastapi.testclient import TestClient
from scipy import ndimage

from app.io.catalogs import read_catalog
from service.api.conftest import Detected, Simulated
from service.api.test_detect import all_sources
from service.api.test_exposures import upload
from service.conftest import assert_error, wait_for_job

MIN_DISTANCE = 40.0


def forced(client: TestClient, body: dict[str, Any], **params: str) -> dict[str, Any]:
    response = client.post("/v1/forced", json=body, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def column(rows: list[dict[str, Any]], name: str) -> np.ndarray:
    return np.array([np.nan if r[name] is None else r[name] for r in rows], float)


# ---------------------------------------------------------------------------------------------
# S/N range of the detection catalog


def test_sources_by_psf_snr_range(client: TestClient, job: dict) -> None:
    sources = list(all_sources(client, job["id"]))
    flux = column(sources, "base_PsfFlux_instFlux")
    err = column(sources, "base_PsfFlux_instFluxErr")
    snr = np.sort(flux[err > 0] / err[err > 0])
    i, j = len(snr) // 4, 3 * len(snr) // 4
    # bounds halfway between neighbours: no S/N sits on one, whatever the rounding
    lo, hi = float(snr[i] + snr[i + 1]) / 2, float(snr[j - 1] + snr[j]) / 2

    def expected(low: float | None, high: float | None) -> list[int]:
        return [s["id"] for s, f, e in zip(sources, flux, err, strict=True)
                if e > 0 and (low is None or f > low * e) and (high is None or f < high * e)]

    for low, high in ((lo, hi), (lo, None), (None, hi)):
        params = {k: v for k, v in (("min_psf_snr", low), ("max_psf_snr", high)) if v is not None}
        got = [s["id"] for s in all_sources(client, job["id"], **params)]
        assert got == expected(low, high) and got, params
    between = expected(lo, hi)
    assert len(between) == j - i - 1  # snr[i + 1] … snr[j - 1]

    csv = client.get(f"/v1/jobs/{job['id']}/sources",
                     params={"min_psf_snr": lo, "max_psf_snr": hi, "format": "csv"})
    assert sorted(np.asarray(read_catalog(io.BytesIO(csv.content), "csv")["id"])) == between
    error = assert_error(client.get(f"/v1/jobs/{job['id']}/sources",
                                    params={"min_psf_snr": 5, "max_psf_snr": 4}), 422)
    assert "max_psf_snr" in error["message"]


# ---------------------------------------------------------------------------------------------
# Forced photometry at known positions


def isolated_bright(truth: Table) -> np.ndarray:
    return ((np.asarray(truth["psf_sn"]) > 30) & (np.asarray(truth["nearest_px"]) > 20)
            & ~np.asarray(truth["saturated"]) & (np.asarray(truth["kind"]) == "star"))


def test_forced_at_true_positions_recovers_truth(client: TestClient,
                                                 detected: Detected) -> None:
    truth = detected.truth
    by_sky = [{"name": f"star-{i}", "ra": float(r["ra"]), "dec": float(r["dec"]), "rank": i}
              for i, r in enumerate(truth)][::-1]  # an order of the client's own
    body = forced(client, {"exposure_id": detected.exposure_id, "positions": by_sky})
    rows = body["rows"]
    names = [c["name"] for c in body["columns"]]
    assert names[:4] == ["name", "ra", "dec", "rank"]  # client columns first, as given
    assert [r["name"] for r in rows] == [p["name"] for p in by_sky]
    assert [(r["ra"], r["dec"], r["rank"]) for r in rows] == [
        (p["ra"], p["dec"], p["rank"]) for p in by_sky]
    units = {c["name"]: c["unit"] for c in body["columns"]}
    assert units["base_PsfFlux_instFlux"] == "ct" and units["base_PsfFlux_flux"] == "nJy"
    assert "position_kind" not in names and "match_id" not in names

    order = np.array([p["rank"] for p in by_sky])
    flux = column(rows, "base_PsfFlux_instFlux")
    true_flux = np.asarray(truth["flux"])[order]
    good = isolated_bright(truth)[order]
    assert good.sum() >= 10
    assert abs(np.median(flux[good] / true_flux[good]) - 1) < 0.03

    by_pixel = [{"x": float(r["x"]), "y": float(r["y"]), "rank": i}
                for i, r in enumerate(truth)][::-1]
    pixel_rows = forced(client, {"exposure_id": detected.exposure_id,
                                 "positions": by_pixel, "job_id": detected.job["id"]})["rows"]
    np.testing.assert_allclose(column(pixel_rows, "base_PsfFlux_instFlux"), flux, rtol=1e-6)
    np.testing.assert_allclose(column(pixel_rows, "base_PsfFlux_instFluxErr"),
                               column(rows, "base_PsfFlux_instFluxErr"), rtol=1e-6)


def test_match_gives_the_detection_of_each_star(client: TestClient, detected: Detected) -> None:
    truth = detected.truth
    leaves = {s["id"]: s for s in all_sources(client, detected.job["id"], deblend_nChild=0)}
    positions = [{"x": float(r["x"]), "y": float(r["y"])} for r in truth]
    positions.append({"x": 5000.0, "y": 5000.0})  # off the image: flagged, never an error
    rows = forced(client, {"exposure_id": detected.exposure_id, "positions": positions,
                           "match": True})["rows"]
    bright = isolated_bright(truth)
    for row, is_bright in zip(rows[:-1], bright, strict=True):
        if not is_bright:
            continue
        source = leaves[row["match_id"]]
        distance = np.hypot(source["base_SdssCentroid_x"] - row["x"],
                            source["base_SdssCentroid_y"] - row["y"])
        assert row["match_distance_px"] == pytest.approx(distance) and distance < 1
        assert row["match_base_PsfFlux_instFlux"] == source["base_PsfFlux_instFlux"]
        assert row["match_base_PsfFlux_instFluxErr"] == source["base_PsfFlux_instFluxErr"]
        # the same measurement at (nearly) the same place: forced ≈ detection flux
        assert row["base_PsfFlux_instFlux"] == pytest.approx(
            source["base_PsfFlux_instFlux"], rel=0.02)
    off = rows[-1]
    assert off["base_PixelFlags_flag_offimage"] and off["base_PsfFlux_flag"]
    assert off["base_PsfFlux_instFlux"] is None  # NaN in JSON
    assert off["match_id"] == -1 and off["match_distance_px"] is None

    by_sky = [{"ra": float(r["ra"]), "dec": float(r["dec"])} for r in truth]
    sky_rows = forced(client, {"exposure_id": detected.exposure_id, "positions": by_sky,
                               "match": True})["rows"]
    assert [r["match_id"] for r in sky_rows] == [r["match_id"] for r in rows[:-1]]

    tight = forced(client, {"exposure_id": detected.exposure_id, "match": True,
                            "match_radius_px": 0.001, "positions": positions[:3]})["rows"]
    assert all(r["match_id"] == -1 for r in tight)


def test_plugins_choose_the_columns(client: TestClient, detected: Detected) -> None:
    body = forced(client, {"exposure_id": detected.exposure_id, "positions": [{"x": 100, "y": 90}],
                           "plugins": ["base_PsfFlux", "base_CircularApertureFlux"]})
    names = {c["name"] for c in body["columns"]}
    assert "base_PsfFlux_instFlux" in names and "base_CircularApertureFlux_12_0_instFlux" in names
    assert not any(n.startswith(("base_PixelFlags", "base_TransformedShape")) for n in names)
    error = assert_error(client.post("/v1/forced", json={
        "exposure_id": detected.exposure_id, "positions": [{"x": 1, "y": 1}],
        "plugins": ["base_PsfFlux", "base_Nope"]}), 422, "unknown_plugin")
    assert "'base_Nope'" in error["message"] and "base_LocalBackground" in error["message"]
    error = assert_error(client.post("/v1/forced", json={
        "exposure_id": detected.exposure_id, "positions": [{"x": 1, "y": 1}],
        "apertureRadii": [5.0]}), 422, "radii_without_apertures")
    assert "base_CircularApertureFlux" in error["message"]
    # a tag may not take an aperture column's name, whatever the radii
    assert_error(client.post("/v1/forced", json={
        "exposure_id": detected.exposure_id,
        "positions": [{"x": 1, "y": 1, "base_CircularApertureFlux_7_0_flag": True}]}),
        422, "reserved_column")


# ---------------------------------------------------------------------------------------------
# Random blank-sky positions


def detected_distance(client: TestClient, job_id: str) -> np.ndarray:
    """Distance of every pixel to the nearest DETECTED pixel of the job's mask."""
    with fits.open(io.BytesIO(client.get(f"/v1/jobs/{job_id}/mask").content)) as hdul:
        hdu = next(h for h in hdul if h.data is not None)
        mask = np.asarray(hdu.data)
        bit = 1 << int(hdu.header.get("MP_DETECTED", 5))
    return ndimage.distance_transform_edt((mask & bit) == 0)


def test_random_positions_are_blank_sky(client: TestClient, detected: Detected) -> None:
    n = 100
    blank = client.post(f"/v1/exposures/{detected.exposure_id}/random-positions",
                        json={"n": n, "min_distance_px": MIN_DISTANCE, "seed": 7})
    assert blank.status_code == 200, blank.text
    assert blank.json()["job_id"] == detected.job["id"]
    positions = blank.json()["positions"]
    assert len(positions) == n and set(positions[0]) == {"x", "y", "ra", "dec"}
    x, y = column(positions, "x"), column(positions, "y")
    distance = detected_distance(client, detected.job["id"])
    assert distance[np.round(y).astype(int), np.round(x).astype(int)].min() >= MIN_DISTANCE - 1

    star = {"ra": float(detected.truth["ra"][0]), "dec": float(detected.truth["dec"][0]),
            "id": "mine"}
    body = forced(client, {"exposure_id": detected.exposure_id, "positions": [star],
                           "random": {"n": n, "min_distance_px": MIN_DISTANCE, "seed": 7}})
    rows = body["rows"]
    assert [c["name"] for c in body["columns"]][:4] == ["ra", "dec", "id", "position_kind"]
    assert [r["position_kind"] for r in rows] == ["input"] + ["random"] * n
    assert rows[0]["id"] == "mine" and all(r["id"] is None for r in rows[1:])
    # the same seed gives the same positions, whichever endpoint drew them
    np.testing.assert_allclose(column(rows[1:], "coord_ra"), column(positions, "ra"), rtol=1e-12)
    np.testing.assert_allclose(column(rows[1:], "base_TransformedCentroid_x"), x, atol=1e-6)
    z = column(rows[1:], "base_PsfFlux_instFlux") / column(rows[1:], "base_PsfFlux_instFluxErr")
    assert np.isfinite(z).all()
    assert abs(z.mean()) < 0.3 and 0.7 < z.std() < 1.3


def test_not_enough_blank_sky_is_a_clear_422(client: TestClient, detected: Detected) -> None:
    for response in (
        client.post(f"/v1/exposures/{detected.exposure_id}/random-positions",
                    json={"n": 500, "min_distance_px": 200}),
        client.post("/v1/forced", json={"exposure_id": detected.exposure_id,
                                        "random": {"n": 500, "min_distance_px": 200}}),
    ):
        error = assert_error(response, 422, "not_enough_blank_sky")
        assert "asked for 500" in error["message"]
    too_long = client.post(f"/v1/exposures/{detected.exposure_id}/random-positions",
                           json={"n": 100_001})
    assert "at most 100000 positions; a forced job" in assert_error(too_long, 422)["message"]


# ---------------------------------------------------------------------------------------------
# Formats


@pytest.mark.parametrize(("params", "headers", "format"), [
    ({"format": "fits"}, {}, "fits"),
    ({"format": "csv"}, {}, "csv"),
    ({"format": "parquet"}, {}, "parquet"),
    ({}, {"Accept": "application/fits"}, "fits"),
    ({}, {"Accept": "text/csv"}, "csv"),
])
def test_formats(client: TestClient, detected: Detected, params: dict[str, str],
                 headers: dict[str, str], format: str) -> None:
    request = {"exposure_id": detected.exposure_id,
               "positions": [{"x": 100.5, "y": 200.0, "label": "a", "n": 3},
                             {"x": 300.0, "y": 50.25, "label": "b", "n": 4}]}
    response = client.post("/v1/forced", json=request, params=params, headers=headers)
    assert response.status_code == 200, response.text
    assert "attachment" in response.headers["content-disposition"]
    table = read_catalog(io.BytesIO(response.content), format)
    rows = forced(client, request)["rows"]
    assert table.colnames[:4] == ["x", "y", "label", "n"]
    assert list(table["label"]) == ["a", "b"] and list(table["n"]) == [3, 4]
    np.testing.assert_allclose(np.asarray(table["base_PsfFlux_instFlux"]),
                               column(rows, "base_PsfFlux_instFlux"))
    assert str(table["base_PsfFlux_flux"].unit) == "nJy"


# ---------------------------------------------------------------------------------------------
# Errors


def test_forced_needs_a_detect_job_first(client: TestClient, sparse: Simulated) -> None:
    exposure_id = upload(client, sparse.data).json()["id"]
    body = {"exposure_id": exposure_id, "positions": [{"x": 10, "y": 10}]}
    error = assert_error(client.post("/v1/forced", json=body), 409, "not_characterized")
    assert "detect" in error["message"]
    assert_error(client.post(f"/v1/exposures/{exposure_id}/random-positions", json={"n": 3}),
                 409, "not_characterized")
    assert_error(client.post("/v1/forced", json={**body, "exposure_id": "nope"}), 404)


@pytest.mark.parametrize(("positions", "code"), [
    ([{"ra": 62.0, "dec": -37.0}, {"x": 1.0, "y": 2.0}], "mixed_coordinates"),
    ([{"ra": 62.0, "dec": -37.0, "x": 1.0, "y": 2.0}], "mixed_coordinates"),
    ([{"name": "no coordinates"}], "mixed_coordinates"),
    ([{"x": "1", "y": 2.0}], "invalid_position"),
    ([{"x": 1.0}], "invalid_position"),
    ([{"dec": -37.0, "tag": 1}], "invalid_position"),
    ([{"ra": 62.0, "dec": -37.0}, {"ra": 62.0, "dec": -137.0}], "invalid_position"),
    ([{"ra": 62.0, "dec": 90.5}], "invalid_position"),
    ([{"x": 1.0, "y": 2.0, "tag": "a"}, {"x": 1.0, "y": 2.0, "tag": 3}], "invalid_tag"),
    ([{"x": 1.0, "y": 2.0, "base_PsfFlux_instFlux": 3}], "reserved_column"),
    ([], "no_positions"),
])
def test_invalid_positions_are_422(client: TestClient, positions: list[dict[str, Any]],
                                   code: str) -> None:
    response = client.post("/v1/forced", json={"exposure_id": "any", "positions": positions})
    assert_error(response, 422, code)


@pytest.mark.parametrize(("body", "content_type", "says"), [
    (b'{"exposure_id": "x", "positions": [', "application/json",
     "body: not valid JSON: Expecting value at character 35"),
    (b'{"exposure_id": "x", "positions": [{"x": 1, "y": 2}]}', None,
     "Content-Type: application/json (it came as no content type)"),
    (b'{"exposure_id": "x", "positions": [{"x": 1, "y": 2}]}', "text/plain",
     "(it came as text/plain)"),
    (b'[{"x": 1, "y": 2}]', "application/json", "must be a JSON object, not list"),
])
def test_a_body_that_is_not_a_json_object_says_what_to_send(
        client: TestClient, body: bytes, content_type: str | None, says: str) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    error = assert_error(client.post("/v1/forced", content=body, headers=headers), 422,
                         "invalid_request")
    assert says in error["message"]


def test_too_many_positions_is_413_pointing_to_a_job(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(forced_sync_max_positions=5)
    positions = [{"x": float(i), "y": 1.0} for i in range(4)]
    ok = client.post("/v1/forced", json={"exposure_id": "x", "positions": positions})
    assert ok.status_code == 404  # within the limit: on to looking up the exposure
    for body in ({"positions": positions * 2}, {"positions": positions, "random": {"n": 2}}):
        error = assert_error(client.post("/v1/forced", json={"exposure_id": "x", **body}),
                             413, "too_many_positions")
        assert "job" in error["message"] and error["detail"]["limit"] == 5


# ---------------------------------------------------------------------------------------------
# Batch: the forced job


def test_forced_job_measures_as_the_synchronous_request(client: TestClient,
                                                        detected: Detected) -> None:
    positions = [{"x": float(r["x"]), "y": float(r["y"]), "name": f"s{i}"}
                 for i, r in enumerate(detected.truth)]
    submitted = client.post("/v1/jobs", json={
        "kind": "forced", "exposure_id": detected.exposure_id,
        "config": {"positions": positions, "plugins": ["base_PsfFlux", "base_PixelFlags"]}})
    assert submitted.status_code == 201, submitted.text
    assert submitted.json()["config"]["job_id"] == detected.job["id"]  # recorded at submission
    job = wait_for_job(client, submitted.json()["id"], timeout=60)
    assert job["phase"] == "COMPLETED", job
    assert job["summary"]["n_positions"] == len(positions)

    response = client.get(f"/v1/jobs/{job['id']}/forced")
    assert response.headers["content-type"] == "application/fits"
    table = read_catalog(io.BytesIO(response.content), "fits")
    rows = forced(client, {"exposure_id": detected.exposure_id, "positions": positions,
                           "plugins": ["base_PsfFlux", "base_PixelFlags"]})["rows"]
    assert list(table["name"]) == [p["name"] for p in positions]
    np.testing.assert_allclose(np.asarray(table["base_PsfFlux_instFlux"]),
                               column(rows, "base_PsfFlux_instFlux"), rtol=1e-12)
    csv = client.get(f"/v1/jobs/{job['id']}/forced", params={"format": "csv"})
    assert len(read_catalog(io.BytesIO(csv.content), "csv")) == len(positions)
    assert_error(client.get(f"/v1/jobs/{detected.job['id']}/forced"), 409, "wrong_job_kind")
    listed = client.get(f"/v1/jobs/{job['id']}/sources", params={"limit": 1000}).json()
    assert [r["name"] for r in listed["sources"]] == [p["name"] for p in positions]


def test_forced_job_refuses_what_cannot_run(client: TestClient, detected: Detected,
                                            calexp: bytes) -> None:
    def submit(exposure_id: str, config: dict[str, Any]) -> Any:
        return client.post("/v1/jobs", json={"kind": "forced", "exposure_id": exposure_id,
                                             "config": config})

    one = [{"x": 10.0, "y": 10.0}]
    error = assert_error(submit(detected.exposure_id, {"positions": one, "plugins": ["nope"]}),
                         422, "unknown_plugin")
    assert "'nope'" in error["message"]
    mixed = [{"x": 1.0, "y": 1.0}, {"ra": 1.0, "dec": 1.0}]
    error = assert_error(submit(detected.exposure_id, {"positions": mixed}), 422,
                         "invalid_config")
    assert "mix" in error["message"]
    assert_error(submit(detected.exposure_id, {"positions": []}), 422, "invalid_config")
    assert_error(submit(detected.exposure_id, {"positions": one, "job_id": "nope"}),
                 404, "job_not_found")
    error = assert_error(submit(detected.exposure_id, {"positions": one, "band": "r"}), 422,
                         "needs_no_exposure")
    assert "config.band" in error["message"]
    error = assert_error(submit(detected.exposure_id, {
        "positions": one, "characterize": {"psfSpatialOrder": 1}}), 422, "needs_no_exposure")
    assert "config.characterize" in error["message"]
    undetected = upload(client, calexp).json()["id"]
    error = assert_error(submit(undetected, {"positions": one}), 409, "not_characterized")
    assert "run one first" in error["message"]
