"""Frames through the service: a galactic-WCS calexp in a parent frame (xy0 ≠ 0).

Its stored sky bounds are ICRS, so a light curve at an ICRS position finds it; cutouts by
ICRS RA/Dec land on the right pixels; region files are ICRS (or FK5 J2000 when asked);
footprints, like catalog x/y, are in the parent frame; and a cutout read back gives the same
x, y.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from fastapi.testclient import TestClient

from app.engine.simulate import SimulatedExposure, SimulationConfig, simulate_exposure
from app.io.fits_exposure import read_exposure, write_exposure
from service.api.test_exposures import upload
from service.conftest import wait_for_job

XY0 = (3000, 1200)
STAR = (200.4, 180.7)  # array position of the star the light curve follows
STAR_FLUX = 40000.0


@pytest.fixture(scope="module")
def galactic() -> tuple[SimulatedExposure, bytes]:
    sim = simulate_exposure(SimulationConfig(
        width=400, height=400, n_stars=60, star_mag_range=(17.0, 21.5), n_galaxies=5,
        n_pairs=2, n_saturated=0, min_separation_px=20.0, ra0=266.4, dec0=-29.0, seed=4,
        positions=[(*STAR, STAR_FLUX, "star")], sky_frame="galactic"))
    exposure = sim.exposure
    exposure.xy0 = XY0
    buffer = io.BytesIO()
    write_exposure(exposure, buffer)
    return sim, buffer.getvalue()


def detected(client: TestClient, data: bytes) -> tuple[str, str]:
    exposure_id = upload(client, data).json()["id"]
    job = client.post("/v1/jobs", json={"kind": "detect", "exposure_id": exposure_id})
    done = wait_for_job(client, job.json()["id"], timeout=120)
    assert done["phase"] == "COMPLETED", done
    return exposure_id, done["id"]


def test_galactic_exposure_is_found_and_measured_at_icrs_positions(
        client: TestClient, galactic) -> None:
    sim, data = galactic
    star = SkyCoord(float(sim.truth["ra"][0]) * u.deg, float(sim.truth["dec"][0]) * u.deg)
    exposure_id, job_id = detected(client, data)

    record = client.get(f"/v1/exposures/{exposure_id}").json()
    assert record["metadata"]["sky_frame"]["frame"] == "galactic"
    assert record["ra_min"] < star.ra.deg < record["ra_max"]
    assert record["dec_min"] < star.dec.deg < record["dec_max"]
    corners = np.array(record["corners"])
    want = sim.exposure.wcs.pixel_to_world([-0.5, 399.5, 399.5, -0.5],
                                          [-0.5, -0.5, 399.5, 399.5]).icrs
    sep = SkyCoord(corners[:, 0] * u.deg, corners[:, 1] * u.deg).separation(want)
    assert sep.to_value(u.mas).max() < 1.0

    # the light curve at the star's ICRS position covers this exposure and measures it
    curve = client.get("/v1/lightcurve", params={"ra": star.ra.deg, "dec": star.dec.deg})
    assert curve.status_code == 200, curve.text
    (row,) = curve.json()["rows"]
    assert row["exposure_id"] == exposure_id
    assert (row["x"], row["y"]) == pytest.approx((STAR[0] + XY0[0], STAR[1] + XY0[1]),
                                                 abs=1e-4)
    # PSF fluxes are tied to slot_CalibFlux: the star's light within 12 px
    ee12 = sim.psf.encircled_energy(float(STAR[0]), float(STAR[1]), 12.0)
    njy = STAR_FLUX * ee12 * sim.exposure.photo_calib.njy_per_count
    assert abs(row["base_PsfFlux_flux"] - njy) < 3 * row["base_PsfFlux_fluxErr"]

    # a cutout by ICRS RA/Dec is centred on the star's pixel
    cut = client.get(f"/v1/exposures/{exposure_id}/image", params={
        "ra": star.ra.deg, "dec": star.dec.deg, "size": 21, "format": "fits"})
    header = fits.getheader(io.BytesIO(cut.content))
    assert (header["CRVAL1A"], header["CRVAL2A"]) == (XY0[0] + 190, XY0[1] + 171)
    assert header["CTYPE1"].startswith("GLON")

    # region files: ICRS by default, FK5 J2000 when asked
    sources = client.get(f"/v1/jobs/{job_id}/sources", params={"limit": 10000}).json()[
        "sources"]
    first = sources[0]
    icrs = client.get(f"/v1/jobs/{job_id}/regions.reg").text.splitlines()
    fk5 = client.get(f"/v1/jobs/{job_id}/regions.reg", params={"system": "fk5"}).text
    assert icrs[2] == "icrs" and fk5.splitlines()[2] == "fk5"
    assert f"circle({first['coord_ra']:.7f},{first['coord_dec']:.7f}," in "\n".join(icrs)
    as_fk5 = SkyCoord(first["coord_ra"] * u.deg, first["coord_dec"] * u.deg).fk5
    assert f"circle({as_fk5.ra.deg:.7f},{as_fk5.dec.deg:.7f}," in fk5


def test_footprints_and_cutouts_are_in_the_parent_frame(client: TestClient, galactic) -> None:
    _, data = galactic
    exposure_id, job_id = detected(client, data)
    sources = client.get(f"/v1/jobs/{job_id}/sources", params={"limit": 10000}).json()[
        "sources"]
    source = max(sources, key=lambda s: s["base_PsfFlux_instFlux"] or 0)
    x, y = source["base_SdssCentroid_x"], source["base_SdssCentroid_y"]
    assert x > XY0[0] and y > XY0[1]  # catalog x, y: parent frame
    footprint = client.get(f"/v1/jobs/{job_id}/sources/{source['id']}").json()["footprint"]
    x0, y0, x1, y1 = footprint["bbox"]
    assert x0 <= x <= x1 and y0 <= y <= y1
    peak = footprint["peaks"][0]
    assert abs(peak["x"] - x) < 1.5 and abs(peak["y"] - y) < 1.5

    heavy = client.get(f"/v1/jobs/{job_id}/sources/{source['id']}/footprint")
    with fits.open(io.BytesIO(heavy.content)) as hdul:
        header = hdul["IMAGE"].header
        assert (header["CRVAL1A"], header["CRVAL2A"]) == (x0, y0)
        assert (header["LTV1"], header["LTV2"]) == (-x0, -y0)
        pixels = hdul["IMAGE"].data
    # the brightest footprint pixel is the brightest image pixel there, in the parent frame
    cut = client.get(f"/v1/exposures/{exposure_id}/image", params={
        "x0": x0, "y0": y0, "width": x1 - x0 + 1, "height": y1 - y0 + 1, "format": "fits"})
    image = fits.getdata(io.BytesIO(cut.content))
    assert np.unravel_index(np.nanargmax(pixels), pixels.shape) == np.unravel_index(
        np.nanargmax(np.where(np.isnan(pixels), np.nan, image)), image.shape)

    # a cutout written by the service reads back in the same parent frame
    back = read_exposure(io.BytesIO(cut.content))
    assert back.xy0 == (x0, y0)
    ra, dec = back.pixel_to_sky(np.array([x]), np.array([y]))
    assert ra[0] == pytest.approx(source["coord_ra"], abs=1e-9)
    assert dec[0] == pytest.approx(source["coord_dec"], abs=1e-9)
