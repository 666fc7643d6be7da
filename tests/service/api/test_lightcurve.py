"""Light curves: forced PSF flux of a variable star on every exposure covering it."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient

from app.engine.simulate import SimulationConfig, simulate_exposure
from app.io.catalogs import read_catalog
from app.io.fits_exposure import write_exposure
from service.api.test_exposures import upload
from service.conftest import wait_for_job

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


@pytest.fixture(scope="module")
def epochs():
    return [_epoch(k, f) for k, f in enumerate(FLUXES)]


def _detect(client: TestClient, data: bytes) -> str:
    exposure_id = upload(client, data).json()["id"]
    job = client.post("/v1/jobs", json={"kind": "detect", "exposure_id": exposure_id})
    assert wait_for_job(client, job.json()["id"], timeout=120)["phase"] == "COMPLETED"
    return exposure_id


def test_light_curve_follows_the_injected_fluxes(client: TestClient, epochs) -> None:
    ids = [_detect(client, data) for _, data in epochs]
    _, elsewhere = _epoch(9, 40000.0, ra0=120.0)  # another part of the sky
    _detect(client, elsewhere)
    _, undetected = _epoch(7, 30000.0)  # covers the star, never characterized
    undetected_id = upload(client, undetected).json()["id"]

    truth = epochs[0][0].truth
    ra, dec = float(truth["ra"][0]), float(truth["dec"][0])
    response = client.get("/v1/lightcurve", params={"ra": ra, "dec": dec})
    assert response.status_code == 200, response.text
    rows = response.json()["rows"]
    measured = [r for r in rows if not r["flag_not_characterized"]]
    assert [r["exposure_id"] for r in measured] == ids  # ordered by MJD, elsewhere left out
    assert [r["exposure_id"] for r in rows if r["flag_not_characterized"]] == [undetected_id]
    for row, (sim, _) in zip(measured, epochs, strict=True):
        true_njy = float(sim.truth["flux"][0]) * sim.exposure.photo_calib.njy_per_count
        assert abs(row["base_PsfFlux_flux"] - true_njy) < 3 * row["base_PsfFlux_fluxErr"]
        assert row["snr"] > 30 and row["band"] == "i"
    # cached the second time, the same numbers
    again = client.get("/v1/lightcurve", params={"ra": ra, "dec": dec}).json()["rows"]
    assert again == rows
    # filters and formats
    assert client.get("/v1/lightcurve", params={"ra": ra, "dec": dec, "band": "g"}
                      ).json()["rows"] == []
    late = client.get("/v1/lightcurve", params={"ra": ra, "dec": dec, "start": 60302.5}
                      ).json()["rows"]
    assert {r["mjd"] for r in late} == {60303.0, 60304.0, 60307.0}
    fits_bytes = client.get("/v1/lightcurve", params={"ra": ra, "dec": dec, "format": "fits"})
    table = read_catalog(io.BytesIO(fits_bytes.content), "fits")
    assert str(table["base_PsfFlux_flux"].unit) == "nJy" and len(table) == len(rows)


def test_bad_position_is_a_422(client: TestClient) -> None:
    response = client.get("/v1/lightcurve", params={"ra": 10.0, "dec": 95.0})
    assert response.status_code == 422
    assert "dec" in response.json()["error"]["message"]


def test_no_exposure_is_an_empty_light_curve(client: TestClient) -> None:
    body = client.get("/v1/lightcurve", params={"ra": 10.0, "dec": 5.0}).json()
    assert body["rows"] == [] and any(c["name"] == "mjd" for c in body["columns"])
