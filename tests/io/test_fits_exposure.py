"""FITS exposure reader/writer: round trips, LSST layout details, and every bad-input code."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from app.engine.exposure import Exposure, ExposureInfo, PhotoCalib
from app.engine.masks import MaskPlanes
from app.io.errors import ExposureReadError
from app.io.fits_exposure import read_exposure, read_exposure_metadata, write_exposure

HEIGHT, WIDTH = 60, 80


def make_wcs() -> WCS:
    """A TAN-SIP WCS with 0.2"/pixel, a small rotation and visible distortion."""
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    header["CRPIX1"], header["CRPIX2"] = 40.5, 30.5
    header["CRVAL1"], header["CRVAL2"] = 62.1, -37.2
    scale = 0.2 / 3600
    header["CD1_1"], header["CD1_2"] = -scale * 0.99, scale * 0.05
    header["CD2_1"], header["CD2_2"] = scale * 0.05, scale * 0.99
    header["A_ORDER"], header["B_ORDER"] = 2, 2
    header["A_2_0"], header["A_1_1"], header["B_0_2"] = 2e-5, -1e-5, 3e-5
    return WCS(header)


def make_exposure() -> Exposure:
    rng = np.random.default_rng(42)
    image = rng.normal(0.0, 5.0, (HEIGHT, WIDTH)).astype(np.float32)
    image[20:25, 30:35] += 500.0
    planes = MaskPlanes()
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.int32)
    mask[20:25, 30:35] |= planes.bitmask("DETECTED")
    mask[:, :2] |= planes.bitmask("EDGE")
    mask[0, 0] |= planes.bitmask("SAT")
    variance = np.full((HEIGHT, WIDTH), 25.0, dtype=np.float32)
    background = np.linspace(100, 120, HEIGHT * WIDTH, dtype=np.float32).reshape(HEIGHT, WIDTH)
    info = ExposureInfo(
        visit=1234567, detector=42, band="i", physical_filter="i_sim_1.4", mjd=60123.25,
        exptime=30.0, extra={"header": [("OBSERVER", "skyphot tests", "who took it"),
                                        ("LSST BUTLER DATAID TRACT", 3828, "long key")]},
    )
    return Exposure(
        image=image, mask=mask, variance=variance, planes=planes, wcs=make_wcs(),
        photo_calib=PhotoCalib(0.4321, 0.0012), info=info, background=background,
        xy0=(1000, 2000),
    )


def assert_same_exposure(got: Exposure, want: Exposure) -> None:
    np.testing.assert_array_equal(got.image, want.image)
    np.testing.assert_array_equal(got.mask, want.mask)
    np.testing.assert_array_equal(got.variance, want.variance)
    np.testing.assert_array_equal(got.background, want.background)
    assert got.image.dtype == np.float32 and got.mask.dtype == np.int32
    assert got.planes == want.planes
    assert got.xy0 == want.xy0
    assert got.photo_calib is not None and want.photo_calib is not None
    assert got.photo_calib.njy_per_count == pytest.approx(want.photo_calib.njy_per_count, 1e-12)
    assert got.photo_calib.njy_per_count_err == pytest.approx(
        want.photo_calib.njy_per_count_err, 1e-12)
    for field in ("visit", "detector", "band", "physical_filter", "exptime"):
        assert getattr(got.info, field) == getattr(want.info, field), field
    assert got.info.mjd == pytest.approx(want.info.mjd, abs=1e-9)
    assert got.info.extra["header"] == want.info.extra["header"]
    # WCS: sky positions of a pixel grid (parent frame) agree to 1e-9 deg, SIP included.
    y, x = np.mgrid[0:HEIGHT:7, 0:WIDTH:9].astype(float)
    x, y = x.ravel() + want.xy0[0], y.ravel() + want.xy0[1]
    ra0, dec0 = want.pixel_to_sky(x, y)
    ra1, dec1 = got.pixel_to_sky(x, y)
    np.testing.assert_allclose(ra1, ra0, rtol=0, atol=1e-9)
    np.testing.assert_allclose(dec1, dec0, rtol=0, atol=1e-9)
    assert got.wcs is not None and got.wcs.sip is not None
    xb, yb = got.sky_to_pixel(ra0, dec0)
    np.testing.assert_allclose(xb, x, atol=1e-6)
    np.testing.assert_allclose(yb, y, atol=1e-6)
    assert got.psf is None


@pytest.mark.parametrize("name", ["calexp.fits", "calexp.fits.gz"])
def test_round_trip_path(tmp_path: Path, name: str) -> None:
    exposure = make_exposure()
    path = tmp_path / name
    write_exposure(exposure, path)
    assert path.read_bytes().startswith(b"\x1f\x8b" if name.endswith(".gz") else b"SIMPLE")
    assert_same_exposure(read_exposure(path), exposure)
    assert_same_exposure(read_exposure(str(path)), exposure)


def test_round_trip_file_objects() -> None:
    exposure = make_exposure()
    for compress in (False, True):
        buffer = io.BytesIO()
        write_exposure(exposure, buffer, compress=compress)
        buffer.seek(0)
        assert_same_exposure(read_exposure(buffer), exposure)
        assert not buffer.closed  # the caller's file stays theirs


def test_gzip_found_by_magic_not_name(tmp_path: Path) -> None:
    path = tmp_path / "misnamed.fits"
    write_exposure(make_exposure(), path, compress=True)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert read_exposure(path).shape == (HEIGHT, WIDTH)


def test_written_layout_is_lsst(tmp_path: Path) -> None:
    path = tmp_path / "calexp.fits"
    write_exposure(make_exposure(), path)
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == [
            "PRIMARY", "IMAGE", "MASK", "VARIANCE", "ARCHIVE_INDEX", "ChebyshevBoundedField",
            "PhotoCalib", "FilterLabel", "BACKGROUND"]
        primary = hdul[0].header
        assert primary["VISIT"] == 1234567 and primary["DETECTOR"] == 42
        assert primary["BAND"] == "i" and primary["FILTER"] == "i_sim_1.4"
        # afw's VisitInfo: the middle of the exposure in TAI, 37 s ahead of UTC in 2023
        assert (primary["DATE-AVG"], primary["TIMESYS"]) == ("2023-06-28T06:00:37.000000000", "TAI")
        assert primary["EXPTIME"] == 30.0
        assert (primary["AR_HDU"], primary["EXPINFO_V"]) == (5, 2)
        assert primary["PHOTOCALIB_ID"] == primary["ARCHIVE_ID_PHOTOCALIB"] == 1
        assert primary["FLUXMAG0"] == pytest.approx(3631e9 / 0.4321)
        assert primary["MAGZERO"] == pytest.approx(31.4 - 2.5 * np.log10(0.4321))
        assert primary["OBSERVER"] == "skyphot tests"
        for name, bitpix in (("IMAGE", -32), ("MASK", 32), ("VARIANCE", -32)):
            header = hdul[name].header
            assert header["EXTTYPE"] == name and header["BITPIX"] == bitpix
            assert header["CTYPE1"] == "RA---TAN-SIP" and "A_2_0" in header
            assert (header["LTV1"], header["LTV2"]) == (-1000, -2000)
        assert hdul["MASK"].header["MP_DETECTED"] == 5
        assert hdul["MASK"].header["MP_NO_DATA"] == 8


def test_unwritable_extra_cards_are_dropped() -> None:
    exposure = make_exposure()
    exposure.info.extra["header"] = [("AIRMASS", float("nan"), ""), ("SITE", "Cerro Pachón", ""),
                                     ("SEEING", 0.7, "arcsec")]
    buffer = io.BytesIO()
    write_exposure(exposure, buffer)
    buffer.seek(0)
    assert read_exposure(buffer).info.extra["header"] == [("SEEING", 0.7, "arcsec")]


def test_reproducible_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a.fits.gz", tmp_path / "b.fits.gz"
    write_exposure(make_exposure(), a)
    write_exposure(make_exposure(), b)
    assert a.read_bytes() == b.read_bytes()


def test_metadata_without_pixels(tmp_path: Path) -> None:
    exposure = make_exposure()
    path = tmp_path / "calexp.fits"
    write_exposure(exposure, path)
    meta = read_exposure_metadata(path)
    assert meta["layout"] == "calexp"
    assert meta["shape"] == (HEIGHT, WIDTH) and meta["xy0"] == (1000, 2000)
    assert (meta["visit"], meta["detector"], meta["band"]) == (1234567, 42, "i")
    assert meta["mjd"] == pytest.approx(60123.25)
    assert meta["njy_per_count"] == pytest.approx(0.4321)
    assert meta["mask_planes"]["DETECTED"] == 5
    assert meta["has_background"] is True
    assert meta["wcs"]["CTYPE1"] == "RA---TAN-SIP"
    ra, dec = exposure.wcs.all_pix2world([-0.5, WIDTH - 0.5], [-0.5, HEIGHT - 0.5], 0)
    assert meta["corners"][0] == pytest.approx((ra[0], dec[0]), abs=1e-12)
    assert meta["corners"][2] == pytest.approx((ra[1], dec[1]), abs=1e-12)


# ----- LSST-written files -------------------------------------------------------------------


def lsst_calexp(mask_bits: dict[str, int], photocalib: float | None = None) -> fits.HDUList:
    """A calexp laid out as afw writes one, with an optional archived PhotoCalib."""
    wcs_cards = make_wcs().to_header(relax=True).cards
    primary = fits.PrimaryHDU()
    primary.header["HIERARCH LSST BUTLER DATAID VISIT"] = 987
    primary.header["HIERARCH LSST BUTLER DATAID DETECTOR"] = 9
    primary.header["HIERARCH LSST BUTLER DATAID BAND"] = "r"
    primary.header["HIERARCH LSST BUTLER DATAID PHYSICAL_FILTER"] = "r_sim_1.4"
    primary.header["DATE-AVG"] = "2023-06-01T12:00:37.000000000"
    primary.header["TIMESYS"] = "TAI"
    primary.header["EXPTIME"] = 30.0
    primary.header["FLUXMAG0"] = 1e11  # stale: the archive wins
    hdus = [primary]
    for name, dtype in (("IMAGE", np.float32), ("MASK", np.int32), ("VARIANCE", np.float32)):
        fill = 0 if name == "MASK" else 1
        hdu = fits.ImageHDU(np.full((HEIGHT, WIDTH), fill, dtype), name=name)
        hdu.header["EXTTYPE"] = name
        hdu.header["INHERIT"] = True
        hdu.header.extend(wcs_cards)
        hdu.header["LTV1"], hdu.header["LTV2"] = -7.0, -11.0
        hdus.append(hdu)
    for name, bit in mask_bits.items():
        hdus[2].header[f"HIERARCH MP_{name}"] = bit
    hdus[2].data[3, 4] = (1 << mask_bits["DETECTED"]) | (1 << mask_bits["EDGE"])
    if photocalib is not None:
        primary.header["AR_HDU"] = 5
        primary.header["HIERARCH PHOTOCALIB_ID"] = 2
        primary.header["PSF_ID"] = 1
        index = fits.BinTableHDU.from_columns([
            fits.Column("id", "J", array=[1, 2]),
            fits.Column("cat.archive", "J", array=[2, 1]),
            fits.Column("cat.persistable", "J", array=[0, 0]),
            fits.Column("row0", "J", array=[0, 0]),
            fits.Column("nrows", "J", array=[1, 1]),
            fits.Column("name", "64A", array=["SomePsf", "PhotoCalib"]),
            fits.Column("module", "64A", array=["lsst.meas.algorithms", "lsst.afw.image"]),
        ], name="ARCHIVE_INDEX")
        calib = fits.BinTableHDU.from_columns([
            fits.Column("calibrationMean", "D", array=[photocalib]),
            fits.Column("calibrationErr", "D", array=[0.002]),
            fits.Column("isConstant", "L", array=[True]),
            fits.Column("field", "J", array=[0]),
            fits.Column("version", "J", array=[1]),
        ], name="PhotoCalib")
        calib.header["EXTTYPE"] = "ARCHIVE_DATA"
        calib.header["AR_NAME"] = "PhotoCalib"
        decoy = fits.BinTableHDU.from_columns([fits.Column("x", "D", array=[1.0])], name="Psf")
        hdus += [index, calib, decoy]
    return fits.HDUList(hdus)


def to_bytes(hdul: fits.HDUList) -> bytes:
    buffer = io.BytesIO()
    hdul.writeto(buffer)
    return buffer.getvalue()


def test_lsst_mask_layout_tutorial_values() -> None:
    data = to_bytes(lsst_calexp({"BAD": 0, "SAT": 1, "EDGE": 4, "DETECTED": 5, "NO_DATA": 8}))
    exposure = read_exposure(io.BytesIO(data))
    assert exposure.planes.bitmask("DETECTED") == 32
    assert exposure.planes.bitmask(["EDGE", "DETECTED"]) == 48
    assert exposure.mask[3, 4] == 48


def test_non_default_mask_layout_is_honoured() -> None:
    data = to_bytes(lsst_calexp({"EDGE": 2, "DETECTED": 9, "NO_DATA": 3}))
    exposure = read_exposure(io.BytesIO(data))
    assert exposure.planes.bitmask("DETECTED") == 512
    assert exposure.planes.any(exposure.mask, "DETECTED")[3, 4]
    assert not exposure.planes.any(exposure.mask, "SAT").any()  # added on a free bit
    assert exposure.planes.bit("SAT") not in (2, 3, 9)


def test_lsst_metadata_archive_calib_and_xy0() -> None:
    data = to_bytes(lsst_calexp({"EDGE": 4, "DETECTED": 5}, photocalib=0.25))
    exposure = read_exposure(io.BytesIO(data))
    info = exposure.info
    assert (info.visit, info.detector, info.band, info.physical_filter) == (
        987, 9, "r", "r_sim_1.4")
    assert info.exptime == 30.0
    # DATE-AVG is TAI: 37 s ahead of UTC in 2023.
    assert info.mjd == pytest.approx(60096.5, abs=1e-8)
    assert exposure.photo_calib == PhotoCalib(0.25, 0.002)
    assert exposure.xy0 == (7, 11)
    kept = [card[0] for card in info.extra["header"]]
    assert not {"AR_HDU", "PHOTOCALIB_ID", "PSF_ID", "FLUXMAG0", "TIMESYS"} & set(kept)


def test_calibration_from_header_keys() -> None:
    for key, value, expected in (
        ("FLUXMAG0", 3631e9 / 2.0, 2.0),
        ("MAGZERO", 31.4, 1.0),
    ):
        hdul = lsst_calexp({"EDGE": 4, "DETECTED": 5})
        del hdul[0].header["FLUXMAG0"]
        hdul[0].header[key] = value
        exposure = read_exposure(io.BytesIO(to_bytes(hdul)))
        assert exposure.photo_calib is not None
        assert exposure.photo_calib.njy_per_count == pytest.approx(expected)


def test_afw_alternate_wcs_gives_xy0() -> None:
    hdul = lsst_calexp({"EDGE": 4, "DETECTED": 5})
    for hdu in hdul[1:4]:
        del hdu.header["LTV1"], hdu.header["LTV2"]
        hdu.header.update({"CTYPE1A": "LINEAR", "CTYPE2A": "LINEAR", "CRPIX1A": 1,
                           "CRPIX2A": 1, "CRVAL1A": 500, "CRVAL2A": 600})
    assert read_exposure(io.BytesIO(to_bytes(hdul))).xy0 == (500, 600)


def test_tile_compressed_planes() -> None:
    """Rubin's newer products tile-compress each plane; astropy presents them as images."""
    hdul = lsst_calexp({"EDGE": 4, "DETECTED": 5})
    compressed = fits.HDUList([hdul[0]] + [
        fits.CompImageHDU(hdul[name].data, header=hdul[name].header, name=name,
                          compression_type="GZIP_2")
        for name in ("IMAGE", "MASK", "VARIANCE")
    ])
    data = to_bytes(compressed)
    exposure = read_exposure(io.BytesIO(data))
    assert exposure.mask[3, 4] == 48 and exposure.xy0 == (7, 11)
    np.testing.assert_array_equal(exposure.image, hdul["IMAGE"].data)
    for cut in (len(data) // 2, len(data) - 3000):
        with pytest.raises(ExposureReadError) as info:
            read_exposure(io.BytesIO(data[:cut]))
        assert info.value.code == "truncated"


def test_nan_pixels_flagged_no_data() -> None:
    hdul = lsst_calexp({"EDGE": 4, "DETECTED": 5, "NO_DATA": 8})
    hdul["IMAGE"].data[10, 10] = np.nan
    hdul["VARIANCE"].data[11, 11] = np.inf
    exposure = read_exposure(io.BytesIO(to_bytes(hdul)))
    for y, x in ((10, 10), (11, 11)):
        assert exposure.mask[y, x] & 256
        assert exposure.image[y, x] == 0 and exposure.variance[y, x] == 1.0
    assert np.isfinite(exposure.image).all() and np.isfinite(exposure.variance).all()


# ----- plain images -----------------------------------------------------------------------------


def test_plain_image_variance_estimate_and_header(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    image = rng.normal(1000.0, 5.0, (200, 300)).astype(np.float32)
    image[50:60, 50:60] += 5000.0  # a bright source must not inflate the sky estimate
    image[0, :10] = np.nan
    hdu = fits.PrimaryHDU(image)
    hdu.header.extend(make_wcs().to_header(relax=True).cards)
    hdu.header["MAGZERO"] = 27.0
    hdu.header["FILTER"] = "g"
    hdu.header["DATE-OBS"] = "2024-03-01"
    path = tmp_path / "plain.fits"
    hdu.writeto(path)

    exposure = read_exposure(path)
    sky = exposure.variance[100, 200]
    assert sky == pytest.approx(25.0, rel=0.10)
    # no GAIN: the sky's variance everywhere, as the local rms map measures it
    assert np.abs(exposure.variance / 25.0 - 1).max() < 0.1
    assert "rms map" in exposure.info.provenance["variance"]
    assert exposure.planes == MaskPlanes()
    no_data = exposure.planes.any(exposure.mask, "NO_DATA")
    assert no_data.sum() == 10 and no_data[0, :10].all()
    assert exposure.image[0, 0] == 0
    assert exposure.wcs is not None and exposure.wcs.sip is not None
    assert exposure.photo_calib is not None
    # MAGZERO is the AB magnitude of one count: 27 mag is 10**(-0.4 * (27 - 31.4)) nJy.
    assert exposure.photo_calib.njy_per_count == pytest.approx(10 ** (0.4 * 4.4))
    assert (exposure.info.band, exposure.info.physical_filter) == ("g", "g")
    assert exposure.info.mjd == pytest.approx(60370.0)
    kept = {card[0] for card in exposure.info.extra["header"]}
    assert not kept & {"CTYPE1", "A_2_0", "MAGZERO", "DATE-OBS", "BITPIX"}


def test_plain_image_variance_follows_the_sky_where_a_galaxy_fills_the_frame() -> None:
    """A smooth galaxy over the middle of the frame must not raise the noise estimated in
    its corners (one global spread of all pixels was 4–20× the sky noise there)."""
    rng = np.random.default_rng(9)
    y, x = np.mgrid[:512, :512]
    galaxy = 3000.0 * np.exp(-np.hypot(x - 256, y - 256) / 60.0)
    image = (200.0 + galaxy + rng.normal(0.0, 5.0, (512, 512))).astype(np.float32)
    exposure = read_exposure(io.BytesIO(to_bytes(fits.HDUList([fits.PrimaryHDU(image)]))))
    corners = np.concatenate([exposure.variance[:64, :64].ravel(),
                              exposure.variance[-64:, -64:].ravel()])
    assert np.median(corners) == pytest.approx(25.0, rel=0.1)


def test_plain_image_gain_adds_poisson_term() -> None:
    rng = np.random.default_rng(8)
    image = rng.normal(0.0, 5.0, (100, 100)).astype(np.float32)
    image[40, 40] = 1000.0
    hdu = fits.PrimaryHDU(image)
    hdu.header["GAIN"] = 2.0
    exposure = read_exposure(io.BytesIO(to_bytes(fits.HDUList([hdu]))))
    sky = float(np.median(exposure.variance))
    assert exposure.variance[40, 40] == pytest.approx(sky + 500.0, rel=0.01)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.int64,
                                   np.float64])
def test_integer_and_double_images_convert_to_float32(dtype: type) -> None:
    data = (np.arange(30).reshape(5, 6) * 7).astype(dtype)
    exposure = read_exposure(io.BytesIO(to_bytes(fits.HDUList([fits.PrimaryHDU(data)]))))
    assert exposure.image.dtype == np.float32
    np.testing.assert_array_equal(exposure.image, data.astype(np.float32))


def test_mask_beyond_31_bits_is_unsupported_bitpix() -> None:
    hdul = lsst_calexp({"EDGE": 4, "DETECTED": 5})
    mask = np.zeros((HEIGHT, WIDTH), np.int64)
    mask[0, 0] = 1 << 40
    hdul["MASK"] = fits.ImageHDU(mask, name="MASK")
    error = read_error(to_bytes(hdul))
    assert error.code == "unsupported_bitpix" and "MASK" in str(error)


def test_plain_image_in_first_extension_and_no_wcs() -> None:
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((5, 6), np.int16))])
    exposure = read_exposure(io.BytesIO(to_bytes(hdul)))
    assert exposure.shape == (5, 6) and exposure.wcs is None and exposure.photo_calib is None
    assert exposure.variance[0, 0] > 0


# ----- bad input -------------------------------------------------------------------------------


def read_error(data: bytes) -> ExposureReadError:
    with pytest.raises(ExposureReadError) as info:
        read_exposure(io.BytesIO(data))
    return info.value


def test_not_fits() -> None:
    error = read_error(b"PNG\x89 not a fits file at all" * 200)
    assert error.code == "not_fits" and "SIMPLE" in str(error)
    assert read_error(b"").code == "not_fits"
    assert read_error(b"\x1f\x8b\x08" + b"\x00" * 50).code in ("not_fits", "truncated")
    assert read_error(gzip.compress(b"hello world")).code == "not_fits"


def test_truncated(tmp_path: Path) -> None:
    path = tmp_path / "calexp.fits"
    write_exposure(make_exposure(), path)
    data = path.read_bytes()
    for cut in (len(data) // 2, 2880 * 2 + 100, 1000):
        error = read_error(data[:cut])
        assert error.code == "truncated", (cut, error)
    gz = gzip.compress(data)
    assert read_error(gz[: len(gz) // 2]).code == "truncated"
    cut_path = tmp_path / "cut.fits"
    cut_path.write_bytes(data[: len(data) - 5000])
    with pytest.raises(ExposureReadError) as info:
        read_exposure_metadata(cut_path)
    assert info.value.code == "truncated"


def test_shape_mismatch() -> None:
    hdul = lsst_calexp({"EDGE": 4, "DETECTED": 5})
    hdul["MASK"] = fits.ImageHDU(np.zeros((10, 12), np.int32), name="MASK")
    error = read_error(to_bytes(hdul))
    assert error.code == "shape_mismatch"
    assert "MASK has shape (10, 12)" in str(error) and f"({HEIGHT}, {WIDTH})" in str(error)


def test_all_nan() -> None:
    error = read_error(to_bytes(fits.HDUList([fits.PrimaryHDU(np.full((4, 4), np.nan))])))
    assert error.code == "all_nan"


def test_no_image() -> None:
    table = fits.BinTableHDU.from_columns([fits.Column("a", "D", array=[1.0, 2.0])])
    error = read_error(to_bytes(fits.HDUList([fits.PrimaryHDU(), table])))
    assert error.code == "no_image" and "table" in str(error)
    cube = fits.PrimaryHDU(np.zeros((3, 4, 5), np.float32))
    assert read_error(to_bytes(fits.HDUList([cube]))).code == "no_image"


def test_float_mask_is_unsupported_bitpix() -> None:
    hdul = lsst_calexp({"EDGE": 4, "DETECTED": 5})
    hdul["MASK"] = fits.ImageHDU(np.zeros((HEIGHT, WIDTH), np.float32), name="MASK")
    assert read_error(to_bytes(hdul)).code == "unsupported_bitpix"


def test_bad_wcs() -> None:
    hdu = fits.PrimaryHDU(np.ones((5, 5), np.float32))
    hdu.header.update({"CTYPE1": "RA---XYZ", "CTYPE2": "DEC--XYZ", "CRVAL1": 10.0,
                       "CRVAL2": 10.0, "CDELT1": 1e-4, "CDELT2": 1e-4})
    error = read_error(to_bytes(fits.HDUList([hdu])))
    assert error.code == "bad_wcs" and "PRIMARY" in str(error)


def test_measured_psf_round_trips(tmp_path):
    """A characterized exposure written and read back evaluates the same PSF everywhere."""
    from app.engine.characterize import characterize
    from app.engine.config import CharacterizeConfig
    from app.engine.psf import GaussianPsf
    from app.engine.simulate import SimulationConfig, simulate_exposure

    sim = simulate_exposure(SimulationConfig(width=1024, height=1024, n_stars=300,
                                             star_mag_range=(17.0, 21.0), n_galaxies=20,
                                             n_pairs=0, seed=4))
    exposure = sim.exposure
    characterize(exposure, CharacterizeConfig())
    path = tmp_path / "characterized.fits"
    write_exposure(exposure, path)
    back = read_exposure(path)
    for x, y in [(100.0, 100.0), (512.0, 700.0), (900.0, 50.0)]:
        np.testing.assert_allclose(back.psf.kernel(x, y), exposure.psf.kernel(x, y), atol=1e-12)
        assert back.psf.sigma(x, y) == pytest.approx(exposure.psf.sigma(x, y), rel=1e-9)
    exposure.psf = GaussianPsf(2.1, size=21)
    write_exposure(exposure, path)
    back = read_exposure(path)
    assert back.psf.sigma(5.0, 5.0) == 2.1 and back.psf.kernel(0, 0).shape == (21, 21)


def test_an_oversampled_psf_round_trips_with_its_step(tmp_path):
    """An oversampled PixelPsf (step 1/3) reads back oversampled, its kernels and their
    phases the same."""
    from app.engine.psf import pixel_gaussian
    from app.engine.psf_model import PixelPsf
    from app.engine.psf_oversampled import fine_side, phase_images

    step, k = 1 / 3, 21
    m = fine_side(k, step)
    off = (np.arange(m) - m // 2) * step
    core = np.array([[pixel_gaussian(1, 0.6, -a, -b)[0, 0] for a in off] for b in off])
    wide = np.array([[pixel_gaussian(1, 0.8, -a, -b)[0, 0] for a in off] for b in off])
    exposure = make_exposure()
    h, w = exposure.shape
    exposure.psf = PixelPsf(np.stack([core, 0.2 * (wide - core), -0.1 * (wide - core)]), 1,
                            w, h, step=step)
    path = tmp_path / "oversampled.fits"
    write_exposure(exposure, path)
    back = read_exposure(path)
    assert isinstance(back.psf, PixelPsf) and back.psf.step == pytest.approx(step)
    x, y = np.array([3.0, w - 4.0]), np.array([h - 2.0, 5.0])
    np.testing.assert_allclose(back.psf.kernels(x, y), exposure.psf.kernels(x, y), atol=1e-7)
    shifted = phase_images(exposure.psf, x, y, np.array([0.3, -0.45]), np.array([0.1, 0.5]))
    np.testing.assert_allclose(phase_images(back.psf, x, y, np.array([0.3, -0.45]),
                                            np.array([0.1, 0.5])), shifted, atol=1e-7)


def test_concurrent_reads_leave_the_warning_filters_as_they_were(tmp_path):
    """Readers in several threads (the API's pool) must not swap the process's filters."""
    import threading
    import warnings

    path = tmp_path / "calexp.fits"
    write_exposure(make_exposure(), path)
    before = list(warnings.filters)
    errors: list[BaseException] = []

    def read_many() -> None:
        try:
            for _ in range(25):
                read_exposure_metadata(path)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=read_many) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert list(warnings.filters) == before
