"""Uploads with reading options and companion planes, and the refusals at upload."""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits
from fastapi.testclient import TestClient

from app.io.afw_background import evaluate_background_list
from app.io.fits_exposure import read_exposure
from service.conftest import assert_error, runtime_of
from service.fits_files import calexp_bytes

REAL = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "real"
DECAM = {part: REAL / f"decam_oo{letter}.fits" for part, letter in
         (("file", "i"), ("weight", "w"), ("mask", "d"))}


def post(client: TestClient, files: dict[str, tuple[str, bytes]], **fields: str):  # noqa: ANN201
    return client.post("/v1/exposures", files={
        part: (name, data, "application/fits") for part, (name, data) in files.items()},
        data=fields)


def fits_bytes(*hdus: fits.hdu.base._BaseHDU) -> bytes:
    buffer = io.BytesIO()
    fits.HDUList(list(hdus)).writeto(buffer)
    return buffer.getvalue()


def stored(client: TestClient) -> list[Path]:
    return [p for p in runtime_of(client).store.root.rglob("*") if p.is_file()]


def test_decam_triple_is_stored_assembled(client: TestClient) -> None:
    files = {part: (path.name, path.read_bytes()) for part, path in DECAM.items()}
    response = post(client, files, mask_codes="decam")
    assert response.status_code == 201, response.text
    body = response.json()
    meta = body["metadata"]
    assert meta["source"] == {
        "image": "decam_ooi.fits", "weight": "decam_oow.fits", "mask": "decam_ood.fits",
        "mask_map": "codes 1=BAD,2=NO_DATA,3=SAT,4=SAT,5=CR,6=BAD,7=SUSPECT,8=STREAK"}
    assert meta["provenance"]["variance"] == "1/weight, weight map decam_oow.fits[#1 N2]"
    assert meta["layout"] == "calexp" and body["shape"] == [251, 245]
    assert "STREAK" in body["mask_planes"]
    # the stored blob is the assembled calexp: variance 1/weight, CR and NO_DATA planes
    [blob] = stored(client)
    exposure = read_exposure(blob)
    weight = fits.getdata(DECAM["weight"]).astype(np.float32)
    good = weight > 0
    np.testing.assert_array_equal(exposure.variance[good], np.float32(1) / weight[good])
    assert exposure.planes.any(exposure.mask, "CR").sum() == 177
    assert body["size"] == blob.stat().st_size

    again = post(client, files, mask_codes="decam")
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    plain = post(client, {"file": files["file"]})  # the image alone: stored as it came
    assert plain.status_code == 201 and plain.json()["id"] != body["id"]
    assert plain.json()["size"] == len(files["file"][1])
    assert "source" not in plain.json()["metadata"]


def test_hdu_by_name_or_index_and_companion_hdus_of_the_same_file(client: TestClient) -> None:
    sci = np.random.default_rng(1).normal(0, 1, (30, 40)).astype(np.float32)
    data = fits_bytes(fits.PrimaryHDU(), fits.ImageHDU(np.ones((8, 8), np.float32), name="A"),
                      fits.ImageHDU(sci, name="SCI"),
                      fits.ImageHDU(np.full((30, 40), 0.25, np.float32), name="WHT"))
    by_name = post(client, {"file": ("mef.fits", data)}, hdu="SCI", weight_hdu="WHT")
    assert by_name.status_code == 201, by_name.text
    by_index = post(client, {"file": ("mef.fits", data)}, hdu="2", weight_hdu="3")
    assert by_index.status_code == 200 and by_index.json()["id"] == by_name.json()["id"]
    meta = by_name.json()["metadata"]
    assert meta["source"] == {"image": "mef.fits", "hdu": "SCI",
                              "weight": "the image file[WHT]"}
    exposure = read_exposure(stored(client)[0])
    np.testing.assert_array_equal(exposure.image, sci)
    assert (exposure.variance == 4.0).all()
    default = post(client, {"file": ("mef.fits", data)})  # first 2-d image: the 8×8 one
    assert default.json()["shape"] == [8, 8]
    assert any("the first, was read" in note for note in default.json()["metadata"]["notes"])


def refusal(client: TestClient, files: dict[str, tuple[str, bytes]], reason: str,
            **fields: str) -> str:
    error = assert_error(post(client, files, **fields), 422, "invalid_exposure")
    assert error["detail"]["reason"] == reason, error
    return error["message"]


def test_unusable_files_are_refused_at_upload(client: TestClient) -> None:
    ones = np.ones((30, 40), np.float32)
    image = ("img.fits", fits_bytes(fits.PrimaryHDU(ones)))
    assert "1×1 pixels" in refusal(
        client, {"file": ("tiny.fits", fits_bytes(fits.PrimaryHDU(np.ones((1, 1)))))},
        "too_small")
    assert "NaN" in refusal(
        client, {"file": ("nan.fits", fits_bytes(fits.PrimaryHDU(ones * np.nan)))}, "all_nan")
    calexp = fits_bytes(fits.PrimaryHDU(), fits.ImageHDU(ones, name="IMAGE"),
                        fits.ImageHDU(np.zeros((30, 40), np.int32), name="MASK"),
                        fits.ImageHDU(-ones, name="VARIANCE"))
    assert "VARIANCE" in refusal(client, {"file": ("neg.fits", calexp)}, "bad_variance")
    zero = ("w.fits", fits_bytes(fits.PrimaryHDU(ones * 0)))
    message = refusal(client, {"file": image, "weight": zero}, "bad_weight")
    assert message.startswith("img.fits is not a usable exposure: the weight map "
                              "w.fits[#0 PRIMARY] is zero, negative or NaN everywhere")
    small = ("s.fits", fits_bytes(fits.PrimaryHDU(np.ones((5, 5), np.float32))))
    assert "(5, 5)" in refusal(client, {"file": image, "variance": small}, "shape_mismatch")
    assert "no HDU is named 'SCI'" in refusal(client, {"file": image}, "bad_hdu", hdu="SCI")
    assert stored(client) == []
    assert client.get("/v1/exposures").json()["total"] == 0


def test_bad_options_are_refused(client: TestClient) -> None:
    image = ("img.fits", fits_bytes(fits.PrimaryHDU(np.ones((30, 40), np.float32))))
    mask = ("dq.fits", fits_bytes(fits.PrimaryHDU(np.zeros((30, 40), np.int16))))
    error = assert_error(post(client, {"file": image, "mask": mask}, mask_bits="3=BAD"), 422,
                         "invalid_option")
    assert "3 is not a single bit" in error["message"]
    error = assert_error(post(client, {"file": image, "mask": mask}, mask_bits="1=BAD",
                              mask_codes="decam"), 422, "invalid_option")
    assert "not both" in error["message"]
    error = assert_error(post(client, {"file": image}, hdus="SCI"), 422, "unknown_part")
    assert "unknown part(s) 'hdus'" in error["message"] and "'hdu'" in error["message"]
    assert stored(client) == []


def test_memory_of_an_upload_is_bounded_by_the_limit(
        make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_upload_bytes=300_000)
    # 200×200 int16: an 80 kB file whose planes take 480 kB once assembled
    data = fits_bytes(fits.PrimaryHDU(np.ones((200, 200), np.int16)))
    weight = fits_bytes(fits.PrimaryHDU(np.ones((200, 200), np.int16)))
    error = assert_error(post(client, {"file": ("i.fits", data), "weight": ("w.fits", weight)}),
                         413, "too_large")
    assert error["detail"]["reason"] == "too_large" and "planes" in error["message"]
    # a gzip file within the limit whose FITS is not: refused as the FITS itself would be
    big = fits_bytes(fits.PrimaryHDU(np.zeros((400, 400), np.float32)))
    error = assert_error(post(client, {"file": ("z.fits.gz", gzip.compress(big))}), 413,
                         "too_large")
    assert "gzip stream holds more than 300000 bytes" in error["message"]
    ok = post(client, {"file": ("i.fits", data)})  # read as it is: checked block by block
    assert ok.status_code == 201
    assert len(stored(client)) == 1


def test_url_reference_options_are_checked_before_queueing(client: TestClient) -> None:
    error = assert_error(client.post("/v1/exposures", json={
        "url": "https://example.org/x.fits", "mask_url": "https://example.org/dq.fits",
        "mask_bits": "5=BAD"}), 422, "invalid_option")
    assert "not a single bit" in error["message"]
    error = assert_error(client.post("/v1/exposures", json={
        "url": "https://93.184.216.34/x.fits", "weight_url": "http://127.0.0.1/w.fits"}),
        422, "unsafe_url")
    assert "not a public address" in error["message"]
    assert client.get("/v1/jobs").json()["total"] == 0


def test_a_calexp_background_part_is_stored_evaluated(client: TestClient) -> None:
    """The tutorial's calexpBackground uploaded beside its calexp (part ``background``): the
    stored exposure carries the full-resolution sky the BackgroundList evaluates to, so
    ``add_background=true`` restores it."""
    height, width = 64, 80
    yy, xx = np.mgrid[0:4, 0:5]
    stats = (300.0 + 2.0 * xx - 1.5 * yy).astype(np.float32)  # a plane sampled on 5×4 bins
    header = fits.Header()
    for key, value in (("INTERPSTYLE", 3), ("UNDERSAMPLESTYLE", 2), ("APPROXSTYLE", -1),
                       ("APPROXORDERX", 1), ("APPROXORDERY", 1), ("APPROXWEIGHTING", True),
                       ("BKGD_X0", 0), ("BKGD_Y0", 0), ("BKGD_WIDTH", width),
                       ("BKGD_HEIGHT", height)):
        header[f"HIERARCH {key}" if len(key) > 8 else key] = value
    background = fits_bytes(fits.PrimaryHDU(stats, header),
                            fits.ImageHDU(np.zeros(stats.shape, np.int32), header),
                            fits.ImageHDU(np.ones_like(stats), header))
    truth = evaluate_background_list(fits.open(io.BytesIO(background)))
    assert truth.shape == (height, width) and np.ptp(truth) > 10

    response = post(client, {"file": ("calexp.fits", calexp_bytes((height, width))),
                             "background": ("calexpBackground.fits", background)})
    assert response.status_code == 201, response.text
    assert response.json()["metadata"]["source"] == {
        "image": "calexp.fits", "background": "calexpBackground.fits"}
    exposure = read_exposure(stored(client)[0])
    np.testing.assert_allclose(exposure.background, truth, rtol=1e-6)

    cutout = post(client, {"file": ("cutout.fits", calexp_bytes((32, 40), seed=1)),
                           "background": ("calexpBackground.fits", background)})
    assert cutout.status_code == 201, cutout.text  # a cutout inside the box gets its part
    [blob] = [p for p in stored(client) if p.stem == cutout.json()["sha256"]]
    np.testing.assert_allclose(read_exposure(blob).background, truth[:32, :40], rtol=1e-6)
    wider = post(client, {"file": ("wide.fits", calexp_bytes((64, 120))),
                          "background": ("calexpBackground.fits", background)})
    error = assert_error(wider, 422)
    assert "background" in error["message"]
    assert len(stored(client)) == 2  # nothing of the refused upload is kept
