"""Image products over HTTP: planes and cutouts (PNG, FITS + WCS), PSF, overlays, regions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from fastapi.testclient import TestClient
from numpy.testing import assert_allclose
from PIL import Image

from app.api.dependencies import get_owner
from app.engine.psf_kolmogorov import KolmogorovPsf
from app.engine.simulate import SimulationConfig
from service.api.test_exposures import upload
from service.conftest import assert_error

SIZE = 400  # the fixture calexp is 400×400


def image_url(job: dict) -> str:
    return f"/v1/exposures/{job['exposure_id']}/image"


def get_fits(client: TestClient, url: str, **params: object) -> fits.PrimaryHDU:
    response = client.get(url, params={"format": "fits", **params})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/fits"
    return fits.open(io.BytesIO(response.content))[0]


def get_png(client: TestClient, url: str, **params: object) -> tuple[Image.Image, dict]:
    response = client.get(url, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image, response.headers


def test_before_detection_there_is_nothing_to_show(client: TestClient, calexp: bytes) -> None:
    exposure_id = upload(client, calexp).json()["id"]
    for path in ("image", "psf"):
        error = assert_error(client.get(f"/v1/exposures/{exposure_id}/{path}"), 409,
                             "not_characterized")
        assert "POST /v1/jobs" in error["message"]
    assert_error(client.get("/v1/jobs/nope/overlay.png"), 404, "job_not_found")


def test_png_renders_at_size_and_bins_large_images(client: TestClient, job: dict) -> None:
    image, headers = get_png(client, image_url(job))
    assert image.size == (SIZE, SIZE) and headers["x-skyphot-binning"] == "1"
    for stretch in ("asinh", "zscale", "linear", "minmax"):
        get_png(client, image_url(job), stretch=stretch, cmap="viridis", plane="variance")
    image, headers = get_png(client, image_url(job), max_size=100)
    assert image.size == (100, 100) and headers["x-skyphot-binning"] == "4"
    assert_error(client.get(image_url(job), params={"cmap": "nope"}), 422, "invalid_render")
    assert_error(client.get(image_url(job), params={"stretch": "log"}), 422)


def test_fits_cutout_carries_the_shifted_wcs(client: TestClient, job: dict) -> None:
    full = get_fits(client, image_url(job))
    assert full.data.shape == (SIZE, SIZE) and full.header["PADDED"] is False
    box = {"x0": 120, "y0": 200, "width": 50, "height": 30}
    cut = get_fits(client, image_url(job), **box)
    assert cut.data.shape == (30, 50) and cut.header["LTV1"] == -120
    np.testing.assert_array_equal(cut.data, full.data[200:230, 120:170])
    xs, ys = np.array([0.0, 49.0, 10.3]), np.array([0.0, 29.0, 7.7])
    sky_cut = WCS(cut.header).all_pix2world(xs, ys, 0)
    sky_full = WCS(full.header).all_pix2world(xs + 120, ys + 200, 0)
    assert_allclose(sky_cut, sky_full, rtol=0, atol=1e-10)


def test_background_added_back_is_exactly_the_background(client: TestClient, job: dict) -> None:
    plain = get_fits(client, image_url(job)).data
    added = get_fits(client, image_url(job), add_background="true")
    background = get_fits(client, image_url(job), plane="background").data
    assert added.header["BKGADDED"] is True
    assert np.ptp(background) > 0
    assert_allclose(added.data - plain, background, rtol=0, atol=1e-3)


def test_mask_png_has_a_legend_and_fits_mask_its_planes(client: TestClient, job: dict) -> None:
    image, headers = get_png(client, image_url(job), plane="mask")
    assert "DETECTED=32" in headers["x-skyphot-legend"]
    assert "DETECTED=32" in image.text["Legend"]
    assert image.height == SIZE and image.width > SIZE  # legend panel on the right
    over, _ = get_png(client, image_url(job), plane="mask", mask_over_image="true")
    assert over.size == image.size and over.tobytes() != image.tobytes()
    mask = get_fits(client, image_url(job), plane="mask")
    assert mask.header["MP_DETECTED"] == 5 and (mask.data & 32).any()


def test_cutout_off_the_edge_is_padded_and_flagged(client: TestClient, job: dict) -> None:
    box = {"x0": -10, "y0": SIZE - 20, "width": 40, "height": 40}
    cut = get_fits(client, image_url(job), **box)
    assert cut.header["PADDED"] is True
    assert np.isnan(cut.data[:, :10]).all() and np.isnan(cut.data[20:]).all()
    assert np.isfinite(cut.data[:20, 10:]).all()
    mask = get_fits(client, image_url(job), plane="mask", **box).data
    assert (mask[20:] & (1 << 8)).all() and not (mask[:20, 10:] & (1 << 8)).any()
    _, headers = get_png(client, image_url(job), **box)
    assert headers["x-skyphot-padded"] == "true"
    error = assert_error(client.get(image_url(job), params={**box, "x0": SIZE + 5}), 422,
                         "cutout_off_image")
    assert "wholly off the image" in error["message"]
    assert_error(client.get(image_url(job), params={"x0": 3, "y0": 4}), 422)


def test_sky_cutout_is_centred_on_the_position(client: TestClient, job: dict) -> None:
    full = get_fits(client, image_url(job))
    ra, dec = WCS(full.header).all_pix2world(150.0, 160.0, 0)
    cut = get_fits(client, image_url(job), ra=float(ra), dec=float(dec), size=21)
    assert cut.data.shape == (21, 21) and (cut.header["LTV1"], cut.header["LTV2"]) == (-140, -150)
    arcsec = get_fits(client, image_url(job), ra=float(ra), dec=float(dec), size=4.2,
                      size_unit="arcsec")
    assert arcsec.data.shape == (21, 21)  # 0.2"/pixel


@pytest.mark.parametrize("where", [(200.0, 200.0), (40.0, 350.0)])
def test_psf_fwhm_matches_the_simulation(client: TestClient, job: dict,
                                         where: tuple[float, float]) -> None:
    cfg = SimulationConfig(width=SIZE, height=SIZE)  # the fixture's PSF: default seeing
    truth = KolmogorovPsf(cfg.fwhm_px, gradient=cfg.fwhm_gradient, width=SIZE, height=SIZE)
    x, y = where
    response = client.get(f"/v1/exposures/{job['exposure_id']}/psf", params={"x": x, "y": y})
    assert response.status_code == 200, response.text
    body = response.json()
    assert_allclose(body["sigma_pixels"], truth.sigma(x, y), rtol=0.03)
    assert_allclose(body["fwhm_pixels"], 2.3548 * body["sigma_pixels"], rtol=1e-4)
    assert_allclose(body["fwhm_arcsec"], 0.2 * body["fwhm_pixels"], rtol=1e-3)
    by_sky = client.get(f"/v1/exposures/{job['exposure_id']}/psf",
                        params={"ra": body["ra"], "dec": body["dec"]}).json()
    assert_allclose([by_sky["x"], by_sky["y"]], [x, y], atol=1e-6)


def test_psf_stamp_as_fits_and_png(client: TestClient, job: dict) -> None:
    url = f"/v1/exposures/{job['exposure_id']}/psf"
    stamp = get_fits(client, url, x=100, y=100)
    assert stamp.data.shape[0] % 2 == 1 and abs(stamp.data.sum() - 1) < 0.02
    image, _ = get_png(client, url, x=100, y=100, format="png")
    assert image.width >= 256
    assert_error(client.get(url, params={"x": 5000, "y": 5}), 422, "off_image")
    assert_error(client.get(url, params={"x": 5}), 422)


def test_overlay_draws_the_sources_in_the_box(client: TestClient, job: dict) -> None:
    url = f"/v1/jobs/{job['id']}/overlay.png"
    box = {"x0": 100, "y0": 100, "width": 200, "height": 200}
    image, headers = get_png(client, url, **box)
    sources = client.get(f"/v1/jobs/{job['id']}/sources", params={
        "x_min": 99.5, "x_max": 299.5, "y_min": 99.5, "y_max": 299.5, "limit": 10000,
    }).json()["sources"]
    assert int(headers["x-skyphot-sources"]) == len(sources) > 0
    assert headers["x-skyphot-scale"] == "2" and image.height == 400
    assert "isolated (" in image.text["Legend"] and "child (" in image.text["Legend"]
    for footprints in ("fill", "none"):
        get_png(client, url, footprints=footprints)


def test_regions_list_every_source(client: TestClient, job: dict) -> None:
    sources = client.get(f"/v1/jobs/{job['id']}/sources", params={"limit": 10000}).json()[
        "sources"]
    response = client.get(f"/v1/jobs/{job['id']}/regions.reg")
    assert response.status_code == 200, response.text
    lines = response.text.splitlines()
    assert lines[0].startswith("# Region file format: DS9") and lines[2] == "icrs"
    circles = [line for line in lines if line.startswith("circle(")]
    assert len(circles) == len(sources)
    first = sources[0]
    pixel = client.get(f"/v1/jobs/{job['id']}/regions.reg", params={"system": "image",
                                                                     "radius": 3}).text
    assert f"circle({first['base_SdssCentroid_x'] + 1:.3f},{first['base_SdssCentroid_y'] + 1:.3f},"\
           "3.000)" in pixel
    assert f"text={{{first['id']}}}" in pixel


def test_forced_positions_are_drawn_and_listed(client: TestClient, job: dict) -> None:
    header = get_fits(client, image_url(job)).header
    ra, dec = (float(v) for v in WCS(header).all_pix2world(120.0, 130.0, 0))
    body = {"positions": [{"ra": ra, "dec": dec}, {"x": 50.0, "y": 60.0}, {"x": 900, "y": 9}]}
    response = client.post(f"/v1/jobs/{job['id']}/overlay.png", json=body)
    assert response.status_code == 200, response.text
    legend = Image.open(io.BytesIO(response.content)).text["Legend"]
    assert "forced (2)" in legend  # the one off the image is not drawn
    regions = client.post(f"/v1/jobs/{job['id']}/regions.reg", params={"system": "image"},
                          json={**body, "label": "blank sky"}).text
    tagged = [line for line in regions.splitlines() if "tag={blank sky}" in line]
    assert tagged[0].startswith("circle(121.000,131.000,") and len(tagged) == 3
    assert tagged[1].startswith("circle(51.000,61.000,")
    bad = client.post(f"/v1/jobs/{job['id']}/regions.reg", json={"positions": [{"ra": 1.0}]})
    assert "ra and dec, or as x and y" in assert_error(bad, 422)["message"]


def test_other_owners_get_404s(client: TestClient, job: dict) -> None:
    client.app.dependency_overrides[get_owner] = lambda: "someone-else"  # type: ignore[attr-defined]
    try:
        for path in ("image", "psf"):
            assert_error(client.get(f"/v1/exposures/{job['exposure_id']}/{path}"), 404,
                         "exposure_not_found")
        for path in ("overlay.png", "regions.reg"):
            assert_error(client.get(f"/v1/jobs/{job['id']}/{path}"), 404, "job_not_found")
    finally:
        client.app.dependency_overrides.clear()  # type: ignore[attr-defined]
