"""A forced job without an exposure: every position on every stored exposure covering it."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.engine.simulate import SimulationConfig, simulate_exposure
from app.io.catalogs import catalog_bytes
from app.io.fits_exposure import write_exposure
from service.api.test_exposures import upload
from service.api.test_forced_jobs import all_rows, completed, star_table, submit
from service.api.test_lightcurve import _detect, _epoch, star_njy
from service.conftest import assert_error, wait_for_job

FLUXES = (30000.0, 45000.0)


def test_every_covering_exposure_measures_each_position(client: TestClient) -> None:
    epochs = [_epoch(k, f) for k, f in enumerate(FLUXES)]
    ids = [_detect(client, data) for _, data in epochs]
    undetected_sim, undetected = _epoch(7, 38000.0)  # covers the star, no detect job
    on_demand_id = upload(client, undetected).json()["id"]
    _, elsewhere = _epoch(9, 40000.0, ra0=120.0)
    _detect(client, elsewhere)  # another part of the sky: never measured
    starless_id = upload(client, _starless()).json()["id"]  # overlaps, no PSF to be had

    sims = [sim for sim, _ in epochs] + [undetected_sim]
    table = star_table(sims[0].truth[:1], n_grid=400)  # the variable star, then a grid
    job = completed(client, submit(client, {"kind": "forced"},
                                   catalog_bytes(table, "fits"), "targets.fits"))
    summary = job["summary"]
    assert [e["exposure_id"] for e in summary["exposures"]] == [*ids, on_demand_id]
    assert [e["characterized_by"] for e in summary["exposures"]] == [
        *(e["detect_job_id"] for e in summary["exposures"][:2]), "on-demand"]
    [starless] = summary["skipped_exposures"]
    assert starless["exposure_id"] == starless_id
    assert "could not be characterized" in starless["reason"]

    rows = all_rows(client, job["id"])
    assert len(rows) == summary["n_rows"] == sum(e["n_rows"] for e in summary["exposures"])
    names = [r["name"] for r in rows]
    assert names == sorted(names)  # by input row, then time
    star = [r for r in rows if r["name"] == table["name"][0]]
    assert [r["exposure_id"] for r in star] == [*ids, on_demand_id]
    assert [r["characterized_by"] for r in star] == [
        *(e["detect_job_id"] for e in summary["exposures"][:2]), "on-demand"]
    assert [r["visit"] for r in star] == [100, 101, 107]
    assert [r["mjd"] for r in star] == [60300.0, 60301.0, 60307.0]
    for row, sim in zip(star, sims, strict=True):
        assert abs(row["base_PsfFlux_flux"] - star_njy(sim)) < 3 * row["base_PsfFlux_fluxErr"]
        assert not row["base_PsfFlux_flag"] and row["base_PsfFlux_apCorr"] > 0.9
    # each exposure holds the positions on its pixels, and only those
    for exposure_id in [*ids, on_demand_id]:
        on = all_rows(client, job["id"], exposure_id=exposure_id)
        assert 0 < len(on) <= len(table)
        assert not any(r["base_PixelFlags_flag_offimage"] for r in on)
    csv = client.get(f"/v1/jobs/{job['id']}/sources", params={"format": "csv"})
    assert csv.status_code == 200 and len(io.BytesIO(csv.content).read()) > 0

    # a match needs detections: the exposure without a detect job is left out, with why
    matched = client.post("/v1/jobs", json={"kind": "forced", "config": {
        "positions": [{"ra": float(table["ra"][0]), "dec": float(table["dec"][0])}],
        "match": True}})
    assert matched.status_code == 201, matched.text
    config = matched.json()["config"]
    assert [e["exposure_id"] for e in config["exposures"]] == ids
    assert [e["exposure_id"] for e in config["skipped_exposures"]] == [on_demand_id,
                                                                        starless_id]
    assert "match" in config["skipped_exposures"][0]["reason"]


def test_exposures_without_a_detect_job_are_characterized_as_the_job_says(
        client: TestClient) -> None:
    sim, data = _epoch(3, 36000.0)
    exposure_id = upload(client, data).json()["id"]
    at = [{"ra": float(sim.truth["ra"][0]), "dec": float(sim.truth["dec"][0])}]
    star = all_rows(client, completed(client, client.post("/v1/jobs", json={
        "kind": "forced", "config": {"positions": at, "characterize": {
            "psfSpatialOrder": 0, "psfIterations": 2}}}))["id"])
    assert [r["exposure_id"] for r in star] == [exposure_id]
    assert abs(star[0]["base_PsfFlux_flux"] - star_njy(sim)) < 3 * star[0]["base_PsfFlux_fluxErr"]
    # settings under which no PSF can be measured here: the exposure is left out, with why
    submitted = client.post("/v1/jobs", json={
        "kind": "forced", "config": {"positions": at, "characterize": {
            "psfCandidateThreshold": 1e9}}})
    assert submitted.status_code == 201, submitted.text
    failed = wait_for_job(client, submitted.json()["id"], timeout=120)
    assert failed["phase"] == "ERROR" and failed["error"]["code"] == "no_covering_exposure"
    assert f"{exposure_id} left out: could not be characterized" in failed["error"]["message"]


def _starless() -> bytes:
    """An exposure over the same sky with too few stars for a PSF."""
    sim = simulate_exposure(SimulationConfig(width=200, height=200, n_stars=2, n_galaxies=0,
                                             n_pairs=0, n_saturated=0, seed=5))
    buffer = io.BytesIO()
    write_exposure(sim.exposure, buffer)
    return buffer.getvalue()


SKY = [{"ra": 62.0, "dec": -37.0}]


@pytest.mark.parametrize(("config", "upload_csv", "code", "says"), [
    ({"positions": [{"x": 1.0, "y": 2.0}]}, None, "needs_exposure", "exposure_id"),
    ({}, b"x,y\n1,2\n", "needs_exposure", "ra and dec"),
    ({"positions": SKY, "random": {"n": 4}}, None, "needs_exposure", "random"),
    ({"random": {"n": 4}}, None, "needs_exposure", "random"),
    ({"positions": SKY, "job_id": "abc"}, None, "needs_exposure", "job_id"),
    ({"positions": [{**SKY[0], "band": "r"}]}, None, "reserved_column", "'band'"),
    ({}, b"ra,dec,mjd\n62,-37,60000\n", "reserved_column", "'mjd'"),
    ({"positions": [{**SKY[0], "characterized_by": "me"}]}, None, "reserved_column",
     "'characterized_by'"),
    ({"positions": SKY, "start": 60310, "end": 60300}, None, "invalid_config", "after end"),
])
def test_bad_input_without_an_exposure_is_a_422(
        client: TestClient, config: dict[str, Any], upload_csv: bytes | None, code: str,
        says: str) -> None:
    job = {"kind": "forced", "config": config}
    response = (client.post("/v1/jobs", json=job) if upload_csv is None
                else submit(client, job, upload_csv))
    assert says in assert_error(response, 422, code)["message"]
    assert client.get("/v1/jobs").json()["total"] == 0


def test_no_stored_exposure_there_is_a_409(client: TestClient) -> None:
    """Good input the service cannot serve yet: it can once an exposure there is stored."""
    error = assert_error(client.post("/v1/jobs", json={"kind": "forced", "config": {
        "positions": [{"ra": 200.0, "dec": 10.0}]}}), 409, "no_covering_exposure")
    assert "upload" in error["message"]
