"""Light curves: forced PSF flux of a variable star on every exposure covering it."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.engine.simulate import SimulatedExposure, SimulationConfig, simulate_exposure
from app.io.catalogs import read_catalog
from app.io.fits_exposure import write_exposure
from service.api.test_exposures import upload
from service.api.test_forced_jobs import all_rows
from service.conftest import assert_error, wait_for_job

STAR = (256.3, 250.7)  # pixel position of the variable star on every epoch
FLUXES = [30000.0, 42000.0, 25000.0, 51000.0, 36000.0]  # counts, one per epoch


def _epoch(k: int, flux: float | None, ra0: float = 62.0):
    """One 512² calexp: a field of bright stars for the PSF, the variable star at STAR."""
    positions = None if flux is None else [(STAR[0], STAR[1], flux, "star")]
    sim = simulate_exposure(SimulationConfig(
        width=512, height=512, n_stars=90, star_mag_range=(17.0, 21.0), n_galaxies=5,
        n_pairs=0, n_saturated=0, positions=positions, min_separation_px=20.0, ra0=ra0,
        visit=100 + k, mjd=60300.0 + k, seed=40 + k))
    buffer = io.BytesIO()
    write_exposure(sim.exposure, buffer)
    return sim, buffer.getvalue()


def star_njy(sim: SimulatedExposure) -> float:
    """The variable star's true flux on that epoch within slot_CalibFlux (the 12-px
    aperture every PSF flux is tied to), nJy."""
    star = sim.truth[0]
    ee12 = sim.psf.encircled_energy(float(star["x"]), float(star["y"]), 12.0)
    return float(star["flux"]) * ee12 * sim.exposure.photo_calib.njy_per_count


@pytest.fixture(scope="module")
def epochs():
    return [_epoch(k, f) for k, f in enumerate(FLUXES)]


def _detect(client: TestClient, data: bytes) -> str:
    exposure_id = upload(client, data).json()["id"]
    job = client.post("/v1/jobs", json={"kind": "detect", "exposure_id": exposure_id})
    assert wait_for_job(client, job.json()["id"], timeout=120)["phase"] == "COMPLETED"
    return exposure_id


def test_light_curve_follows_the_injected_fluxes_synchronously_and_as_a_job(
        make_client: Callable[..., TestClient], epochs) -> None:
    client = make_client(lightcurve_max_exposures=4)
    ids = [_detect(client, data) for _, data in epochs]
    _, elsewhere = _epoch(9, 40000.0, ra0=120.0)  # another part of the sky
    _detect(client, elsewhere)
    undetected_sim, undetected = _epoch(7, 33000.0)  # covers the star, no detect job
    undetected_id = upload(client, undetected).json()["id"]

    truth = epochs[0][0].truth
    at = {"ra": float(truth["ra"][0]), "dec": float(truth["dec"][0])}
    early = client.get("/v1/lightcurve", params={**at, "end": 60302.5})
    middle = client.get("/v1/lightcurve", params={**at, "start": 60302.5, "end": 60305.0})
    assert early.status_code == middle.status_code == 200, middle.text
    rows = early.json()["rows"] + middle.json()["rows"]
    assert [r["mjd"] for r in rows] == [60300.0, 60301.0, 60302.0, 60303.0, 60304.0]
    assert [r["exposure_id"] for r in rows] == ids  # ordered by MJD, elsewhere left out
    for row, (sim, _) in zip(rows, epochs, strict=True):
        assert abs(row["base_PsfFlux_flux"] - star_njy(sim)) < 3 * row["base_PsfFlux_fluxErr"]
        assert row["snr"] > 30 and row["band"] == "i"
    # cached the second time, the same numbers; filters and formats
    assert client.get("/v1/lightcurve", params={**at, "end": 60302.5}).json() == early.json()
    assert client.get("/v1/lightcurve", params={**at, "band": "g"}).json()["rows"] == []
    fits_bytes = client.get("/v1/lightcurve", params={**at, "end": 60302.5, "format": "fits"})
    table = read_catalog(io.BytesIO(fits_bytes.content), "fits")
    assert str(table["base_PsfFlux_flux"].unit) == "nJy" and len(table) == 3

    # an exposure without a detect job must be characterized first: the light curve
    # becomes a job, which does it, so that exposure gets its flux too
    late = client.get("/v1/lightcurve", params={**at, "start": 60302.5})
    assert late.status_code == 202, late.text
    assert wait_for_job(client, late.json()["id"], timeout=120)["phase"] == "COMPLETED"
    points = all_rows(client, late.json()["id"])
    assert [p["exposure_id"] for p in points] == [*ids[3:], undetected_id]
    assert [p["characterized_by"] for p in points] == [
        *(r["detect_job_id"] for r in rows[3:]), "on-demand"]
    assert abs(points[2]["base_PsfFlux_flux"] - star_njy(undetected_sim)
               ) < 3 * points[2]["base_PsfFlux_fluxErr"]

    # six covering exposures are more than four: the light curve becomes a job
    accepted = client.get("/v1/lightcurve", params=at)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    assert accepted.headers["location"] == f"/v1/jobs/{job_id}"
    assert accepted.json()["kind"] == "forced" and accepted.json()["exposure_id"] is None
    job = wait_for_job(client, job_id, timeout=120)
    assert job["phase"] == "COMPLETED", job
    points = all_rows(client, job_id)
    assert [p["exposure_id"] for p in points] == [*ids, undetected_id]
    assert [p["mjd"] for p in points] == [r["mjd"] for r in rows] + [60307.0]
    np.testing.assert_allclose([p["base_PsfFlux_flux"] for p in points[:5]],
                               [r["base_PsfFlux_flux"] for r in rows], rtol=1e-9)
    np.testing.assert_allclose([p["base_PsfFlux_fluxErr"] for p in points[:5]],
                               [r["base_PsfFlux_fluxErr"] for r in rows], rtol=1e-9)
    assert [p["characterized_by"] for p in points] == [
        *(r["detect_job_id"] for r in rows), "on-demand"]
    assert abs(points[5]["base_PsfFlux_flux"] - star_njy(undetected_sim)
               ) < 3 * points[5]["base_PsfFlux_fluxErr"]

    # asked for as a job: any number of exposures, the window kept
    submitted = client.post("/v1/lightcurve", json={**at, "band": "i", "start": 60302.5})
    assert submitted.status_code == 201, submitted.text
    assert submitted.headers["location"] == f"/v1/jobs/{submitted.json()['id']}"
    config = submitted.json()["config"]
    assert (config["band"], config["start"], config["end"]) == ("i", 60302.5, None)
    assert [e["exposure_id"] for e in config["exposures"]] == [*ids[3:], undetected_id]

    # asked again: the same job, not a new one; until another exposure covers the star
    again = client.get("/v1/lightcurve", params=at)
    assert again.status_code == 202 and again.json()["id"] == job_id
    assert client.get("/v1/lightcurve", params={**at, "band": "i"}).json()["id"] != job_id
    upload(client, _epoch(8, 28000.0)[1])
    newer = client.get("/v1/lightcurve", params=at)
    assert newer.status_code == 202 and newer.json()["id"] != job_id
    assert len(newer.json()["config"]["exposures"]) == 7
    assert client.get("/v1/lightcurve", params=at).json()["id"] == newer.json()["id"]


def test_bad_position_is_a_422(client: TestClient) -> None:
    response = client.get("/v1/lightcurve", params={"ra": 10.0, "dec": 95.0})
    assert response.status_code == 422
    assert "dec" in response.json()["error"]["message"]


def test_no_exposure_is_an_empty_light_curve(client: TestClient) -> None:
    body = client.get("/v1/lightcurve", params={"ra": 10.0, "dec": 5.0}).json()
    assert body["rows"] == [] and any(c["name"] == "mjd" for c in body["columns"])


@pytest.mark.parametrize(("request_params", "code"), [
    ({"ra": 10.0, "dec": 95.0}, "bad_position"),
    ({"ra": 10.0, "dec": 5.0, "start": 60310.0, "end": 60300.0}, "bad_window"),
])
def test_a_bad_light_curve_job_is_a_422(client: TestClient, request_params: dict,
                                        code: str) -> None:
    assert_error(client.post("/v1/lightcurve", json=request_params), 422, code)
    assert_error(client.get("/v1/lightcurve", params=request_params), 422, code)
    assert client.get("/v1/jobs").json()["total"] == 0


def test_a_light_curve_job_where_nothing_is_stored_is_a_409(client: TestClient) -> None:
    error = assert_error(client.post("/v1/lightcurve", json={"ra": 10.0, "dec": 5.0}), 409,
                         "no_covering_exposure")
    assert "POST /v1/exposures" in error["message"]


def test_an_exposure_no_psf_can_be_measured_on_fails_its_job_once(client: TestClient) -> None:
    """Asked again, the failed job answers: submitting another would fail the same way."""
    sim = simulate_exposure(SimulationConfig(width=200, height=200, n_stars=2, n_galaxies=0,
                                             n_pairs=0, n_saturated=0, seed=5))
    buffer = io.BytesIO()
    write_exposure(sim.exposure, buffer)
    upload(client, buffer.getvalue())
    at = {"ra": float(sim.truth["ra"][0]), "dec": float(sim.truth["dec"][0])}
    first = client.get("/v1/lightcurve", params=at)
    assert first.status_code == 202, first.text
    failed = wait_for_job(client, first.json()["id"], timeout=120)
    assert failed["phase"] == "ERROR" and failed["error"]["code"] == "no_covering_exposure"
    assert "could not be characterized" in failed["error"]["message"]
    again = client.get("/v1/lightcurve", params=at)
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    assert client.get("/v1/jobs").json()["total"] == 1
