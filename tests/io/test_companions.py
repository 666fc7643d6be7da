"""Companion planes beside a plain image: variance, weight, data-quality maps, background."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from app.engine.masks import MaskPlanes
from app.io.background_file import read_background_file
from app.io.errors import ExposureReadError
from app.io.fits_exposure import read_exposure
from app.io.read_options import MaskMap, OptionError, PlaneRef, ReadOptions

SHAPE = (40, 50)
rng = np.random.default_rng(11)
PLANES = MaskPlanes()


def bit(name: str) -> int:
    return PLANES.bitmask(name)


def write(path: Path, data: np.ndarray, name: str | None = None) -> Path:
    """``data`` in an extension named ``name`` after an empty primary, or in the primary."""
    hdus = [fits.PrimaryHDU(data)] if name is None else [fits.PrimaryHDU(),
                                                         fits.ImageHDU(data, name=name)]
    fits.HDUList(hdus).writeto(path)
    return path


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = rng.normal(100.0, 3.0, SHAPE).astype(np.float32)
    return write(tmp_path / "image.fits", data, "CCD7"), data


def test_variance_map_replaces_the_estimate(tmp_path: Path, image) -> None:
    path, data = image
    variance = rng.uniform(4.0, 16.0, SHAPE).astype(np.float32)
    ref = PlaneRef(write(tmp_path / "var.fits", variance))
    exposure = read_exposure(path, ReadOptions(variance=ref))
    np.testing.assert_array_equal(exposure.variance, variance)
    np.testing.assert_array_equal(exposure.image, data)
    assert exposure.info.provenance["variance"] == "variance map var.fits[#0 PRIMARY]"


def test_weight_is_inverse_variance_and_zero_weight_is_no_data(tmp_path: Path, image) -> None:
    path, _ = image
    weight = rng.uniform(0.05, 0.5, SHAPE).astype(np.float32)
    weight[3, 3] = 0.0
    weight[4, 4] = -1.0
    weight[5, 5] = np.nan
    exposure = read_exposure(path, ReadOptions(weight=PlaneRef(write(tmp_path / "w.fits",
                                                                      weight, "CCD7"))))
    good = np.isfinite(weight) & (weight > 0)
    np.testing.assert_array_equal(exposure.variance[good], np.float32(1) / weight[good])
    no_data = (exposure.mask & bit("NO_DATA")) != 0
    np.testing.assert_array_equal(no_data, ~good)
    assert np.isfinite(exposure.variance).all() and (exposure.variance > 0).all()
    assert exposure.info.provenance["variance"] == "1/weight, weight map w.fits[#1 CCD7]"


def test_companion_in_the_image_file_by_hdu(tmp_path: Path) -> None:
    data = rng.normal(0, 1, SHAPE).astype(np.float32)
    weight = np.full(SHAPE, 0.25, np.float32)
    dq = np.zeros(SHAPE, np.int16)
    dq[7, 8] = 1
    path = tmp_path / "mef.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, name="SCI"),
                  fits.ImageHDU(weight, name="WHT"), fits.ImageHDU(dq, name="DQ")]).writeto(path)
    options = ReadOptions(hdu="SCI", weight=PlaneRef.parse("[WHT]"), mask=PlaneRef.parse("[3]"))
    exposure = read_exposure(path, options)
    assert (exposure.variance == 4.0).all()
    assert exposure.mask[7, 8] == bit("BAD") and np.count_nonzero(exposure.mask) == 1
    assert exposure.info.provenance["variance"] == "1/weight, weight map HDU #2 WHT of the " \
                                                  "image file"
    with pytest.raises(ExposureReadError) as info:
        read_exposure(path, ReadOptions(weight=PlaneRef(None, None)))
    assert info.value.code == "bad_option" and "needs its name or index" in info.value.message


def test_separate_file_uses_the_hdu_of_the_same_name(tmp_path: Path, image) -> None:
    path, _ = image
    other = tmp_path / "w.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.full(SHAPE, 1.0, np.float32), name="CCD1"),
                  fits.ImageHDU(np.full(SHAPE, 0.5, np.float32), name="CCD7")]).writeto(other)
    exposure = read_exposure(path, ReadOptions(weight=PlaneRef(other)))
    assert (exposure.variance == 2.0).all()
    exposure = read_exposure(path, ReadOptions(weight=PlaneRef(other, "CCD1")))
    assert (exposure.variance == 1.0).all()


def test_mask_without_a_map_nonzero_is_bad(tmp_path: Path, image) -> None:
    path, _ = image
    dq = np.zeros(SHAPE, np.uint8)
    dq[1, 1], dq[2, 2] = 1, 200
    exposure = read_exposure(path, ReadOptions(mask=PlaneRef(write(tmp_path / "bpm.fits", dq))))
    expected = np.where(dq != 0, bit("BAD"), 0)
    np.testing.assert_array_equal(exposure.mask, expected)
    assert exposure.info.provenance["mask"] == "data-quality map bpm.fits[#0 PRIMARY] " \
                                              "(nonzero = BAD)"


def test_mask_bits_map(tmp_path: Path, image) -> None:
    path, _ = image
    dq = np.zeros(SHAPE, np.int32)
    dq[0, 0] = 1
    dq[0, 1] = 2 | 16
    dq[0, 2] = 64
    dq[0, 3] = 128  # not in the map: BAD, with a note
    dq[0, 4] = 4 | 256  # 256 mapped to a plane skyphot does not know
    options = ReadOptions(mask=PlaneRef(write(tmp_path / "dq.fits", dq)),
                          mask_map=MaskMap.parse("bits", "1=BAD,2=SAT,4=INTRP,16=CR,64=SAT,"
                                                         "0x100=EDGE2"))
    exposure = read_exposure(path, options)
    planes = exposure.planes
    want = [bit("BAD"), bit("SAT") | bit("CR"), bit("SAT"), bit("BAD"),
            bit("INTRP") | planes.bitmask("EDGE2")]
    assert exposure.mask[0, :5].tolist() == want
    assert np.count_nonzero(exposure.mask) == 5
    assert "EDGE2" in planes and planes.bit("EDGE2") not in PLANES.as_dict().values()
    assert any("1 pixels hold values the bits map does not list (128)" in note
               for note in exposure.info.notes)


def test_mask_codes_map_decam(tmp_path: Path, image) -> None:
    path, _ = image
    dq = np.zeros(SHAPE, np.int16)
    for code in range(1, 10):
        dq[1, code] = code
    options = ReadOptions(mask=PlaneRef(write(tmp_path / "ood.fits", dq)),
                          mask_map=MaskMap.parse("codes", "decam"))
    exposure = read_exposure(path, options)
    planes = exposure.planes
    want = [bit("BAD"), bit("NO_DATA"), bit("SAT"), bit("SAT"), bit("CR"), bit("BAD"),
            bit("SUSPECT"), planes.bitmask("STREAK"), bit("BAD")]  # 9 is no DECam code
    assert exposure.mask[1, 1:10].tolist() == want
    assert any("(9)" in note for note in exposure.info.notes)


def test_float_bad_pixel_map_and_fractional_one(tmp_path: Path, image) -> None:
    path, _ = image
    bpm = np.zeros(SHAPE, np.float32)
    bpm[9, 9] = 1.0
    bpm[9, 10] = np.nan  # a NaN in a bad-pixel map: no data there
    exposure = read_exposure(path, ReadOptions(mask=PlaneRef(write(tmp_path / "b.fits", bpm))))
    assert exposure.mask[9, 9] == bit("BAD") and exposure.mask[9, 10] == bit("NO_DATA")
    bpm[9, 9] = 0.5
    with pytest.raises(ExposureReadError) as info:
        read_exposure(path, ReadOptions(mask=PlaneRef(write(tmp_path / "f.fits", bpm))))
    assert info.value.code == "unsupported_bitpix"
    assert info.value.message.startswith("the data-quality map f.fits: ")
    assert "fractional values" in info.value.message


def test_companion_refusals_name_the_companion(tmp_path: Path, image) -> None:
    path, _ = image
    small = write(tmp_path / "small.fits", np.ones((10, 10), np.float32))
    with pytest.raises(ExposureReadError) as info:
        read_exposure(path, ReadOptions(variance=PlaneRef(small)))
    assert info.value.code == "shape_mismatch"
    assert info.value.message.startswith("the variance map small.fits: it has shape (10, 10)")
    zero = write(tmp_path / "zero.fits", np.zeros(SHAPE, np.float32))
    with pytest.raises(ExposureReadError) as info:
        read_exposure(path, ReadOptions(weight=PlaneRef(zero, label="upload-w.fits")))
    assert info.value.code == "bad_weight" and "upload-w.fits" in info.value.message
    with pytest.raises(ExposureReadError) as info:
        read_exposure(path, ReadOptions(variance=PlaneRef(zero)))
    assert info.value.code == "bad_variance"
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"not fits" * 400)
    with pytest.raises(ExposureReadError) as info:
        read_exposure(path, ReadOptions(mask=PlaneRef(junk)))
    assert info.value.code == "not_fits" and "the data-quality map junk.fits" in str(info.value)
    with pytest.raises(ExposureReadError) as info:
        read_exposure(path, ReadOptions(weight=PlaneRef(zero, "NOPE")))
    assert info.value.code == "bad_hdu" and "no HDU is named 'NOPE'" in info.value.message


def test_background_file(tmp_path: Path, image) -> None:
    path, data = image
    sky = np.linspace(10, 20, np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    sky[0, 0] = np.nan
    bkg = tmp_path / "bkg.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((3, 3)), name="OTHER"),
                  fits.ImageHDU(sky, name="BACKGROUND")]).writeto(bkg)
    got = read_background_file(bkg, SHAPE)
    assert got[0, 0] == 0 and np.array_equal(got[1:], sky[1:])
    exposure = read_exposure(path, ReadOptions(background=PlaneRef(bkg)))
    np.testing.assert_array_equal(exposure.background, got)
    np.testing.assert_array_equal(exposure.with_background_added().image, data + got)
    assert exposure.info.provenance["background"] == "background file bkg.fits"
    with pytest.raises(ExposureReadError) as info:
        read_background_file(bkg, (5, 5))
    assert info.value.code == "shape_mismatch"


def test_options_are_checked() -> None:
    with pytest.raises(OptionError, match="not both"):
        ReadOptions(variance=PlaneRef("v.fits"), weight=PlaneRef("w.fits"))
    with pytest.raises(OptionError, match="needs a data-quality map"):
        ReadOptions(mask_map=MaskMap.parse("bits", "1=BAD"))
    with pytest.raises(OptionError, match="not a single bit"):
        MaskMap.parse("bits", "3=BAD")
    with pytest.raises(OptionError, match="VALUE=PLANE"):
        MaskMap.parse("codes", "1:BAD")
    with pytest.raises(OptionError, match="mapped twice"):
        MaskMap.parse("codes", "1=BAD,1=SAT")
    with pytest.raises(OptionError, match="a map of codes"):
        MaskMap.parse("bits", "decam")
    assert MaskMap.parse("bits", "1=bad, 0x10=cr").planes == ((1, "BAD"), (16, "CR"))


def test_plane_ref_parsing(tmp_path: Path) -> None:
    assert PlaneRef.parse("w.fits") == PlaneRef("w.fits", None)
    assert PlaneRef.parse("w.fits[N2]") == PlaneRef("w.fits", "N2")
    assert PlaneRef.parse("w.fits[2]") == PlaneRef("w.fits", 2)
    assert PlaneRef.parse("[WHT]") == PlaneRef(None, "WHT")
    odd = tmp_path / "odd[1].fits]"
    odd.write_bytes(b"")
    assert PlaneRef.parse(str(odd)) == PlaneRef(str(odd), None)
    assert PlaneRef("w.fits", "N2", label="oow.fits").describe() == "oow.fits[N2]"
    assert ReadOptions().is_default and not ReadOptions(hdu=1).is_default
    summary = ReadOptions(hdu="N2", weight=PlaneRef("/x/oow.fits"), mask=PlaneRef("ood.fits"),
                          mask_map=MaskMap.parse("codes", "decam")).summary()
    assert summary == {"hdu": "N2", "weight": "oow.fits", "mask": "ood.fits",
                       "mask_map": "codes 1=BAD,2=NO_DATA,3=SAT,4=SAT,5=CR,6=BAD,7=SUSPECT,"
                                   "8=STREAK"}


def test_file_objects_as_companions(image) -> None:
    path, _ = image
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.full(SHAPE, 9.0, np.float32)).writeto(buffer)
    buffer.seek(0)
    exposure = read_exposure(path, ReadOptions(variance=PlaneRef(buffer, label="var.fits")))
    assert (exposure.variance == 9.0).all()
