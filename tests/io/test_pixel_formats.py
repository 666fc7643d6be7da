"""Pixel formats: every BITPIX, BZERO/BSCALE/BLANK, byte orders, tile compression, gzip.

Each file is written with astropy from stored values chosen here, and the pixels read are
checked exactly against the physical values ``BZERO + BSCALE × stored`` rounded once to
float32 (the reader computes them in float64 per block).
"""

from __future__ import annotations

import bz2
import gzip
import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from app.engine.exposure import Exposure
from app.io.errors import ExposureReadError
from app.io.fits_exposure import read_exposure, read_exposure_metadata, write_exposure
from app.io.read_options import ReadOptions

SHAPE = (37, 53)
NO_DATA = 1 << 8


def to_bytes(hdul: fits.HDUList) -> bytes:
    buffer = io.BytesIO()
    hdul.writeto(buffer)
    return buffer.getvalue()


def stored_image(stored: np.ndarray, **keys: float) -> bytes:
    """A plain image whose data are ``stored`` as they are, with the scaling ``keys``."""
    hdu = fits.PrimaryHDU(stored)
    for key, value in keys.items():  # after the data, so astropy writes them as they are
        hdu.header[key] = value
    return to_bytes(fits.HDUList([hdu]))


def physical(stored: np.ndarray, bscale: float = 1.0, bzero: float = 0.0) -> np.ndarray:
    return (stored.astype(np.float64) * bscale + bzero).astype(np.float32)


def calexp_with_mask(mask_hdu: fits.ImageHDU) -> bytes:
    """IMAGE / MASK / VARIANCE with the given MASK HDU (MP_* keys added)."""
    mask_hdu.header["EXTNAME"] = "MASK"
    for name, bit in (("BAD", 0), ("SAT", 1), ("EDGE", 4), ("DETECTED", 5), ("NO_DATA", 8),
                      ("HIGH", 15)):
        mask_hdu.header[f"HIERARCH MP_{name}"] = bit
    return to_bytes(fits.HDUList([
        fits.PrimaryHDU(),
        fits.ImageHDU(np.ones(SHAPE, np.float32), name="IMAGE"),
        mask_hdu,
        fits.ImageHDU(np.full(SHAPE, 4.0, np.float32), name="VARIANCE"),
    ]))


rng = np.random.default_rng(5)


@pytest.mark.parametrize(("dtype", "keys"), [
    (np.uint8, {}),
    (np.uint8, {"BZERO": -128.0}),  # signed bytes, the FITS way (astropy's scaling fails)
    (np.int16, {}),
    (np.int16, {"BSCALE": 0.01, "BZERO": 1000.0}),
    (np.int16, {"BZERO": 32768.0}),  # unsigned 16-bit
    (np.int32, {}),
    (np.int32, {"BSCALE": 2.5e-4, "BZERO": -7.25}),
    (np.int32, {"BZERO": 2147483648.0}),  # unsigned 32-bit
    (np.int64, {}),
    (np.int64, {"BSCALE": 1e-9, "BZERO": 3.0}),
    (np.float32, {}),
    (np.float64, {}),
    (np.float32, {"BSCALE": 2.0, "BZERO": 10.0}),  # legal on floats too
])
def test_every_bitpix_with_its_scaling(dtype: type, keys: dict[str, float]) -> None:
    if np.dtype(dtype).kind == "f":
        stored = rng.normal(0, 1e3, SHAPE).astype(dtype)
    else:
        info = np.iinfo(dtype)
        low, high = max(info.min, -(2**50)), min(info.max, 2**50)  # squares fit float32
        stored = rng.integers(low, high, SHAPE, dtype=dtype, endpoint=True)
    data = stored_image(stored, **keys)
    exposure = read_exposure(io.BytesIO(data))
    expected = physical(stored, keys.get("BSCALE", 1.0), keys.get("BZERO", 0.0))
    np.testing.assert_array_equal(exposure.image, expected)
    assert exposure.image.dtype == np.float32
    if keys.get("BZERO") != -128.0:  # astropy cannot scale signed bytes to int8
        with fits.open(io.BytesIO(data)) as hdul:  # astropy's own scaling agrees
            np.testing.assert_allclose(exposure.image, hdul[0].data, rtol=1e-6,
                                       atol=1e-6 * float(np.abs(expected).max()))


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("kind", ["i2", "i4", "f4", "f8"])
def test_byte_orders_read_the_same(order: str, kind: str) -> None:
    values = (np.arange(np.prod(SHAPE)).reshape(SHAPE) * 3 - 500).astype(order + kind)
    exposure = read_exposure(io.BytesIO(to_bytes(fits.HDUList([fits.PrimaryHDU(values)]))))
    np.testing.assert_array_equal(exposure.image, values.astype(np.float32))


@pytest.mark.parametrize("keys", [{}, {"BSCALE": 0.5, "BZERO": 100.0}])
def test_blank_is_no_data(keys: dict[str, float]) -> None:
    stored = rng.integers(-1000, 1000, SHAPE).astype(np.int16)
    stored[3, 4] = stored[10, 0] = -32768
    exposure = read_exposure(io.BytesIO(stored_image(stored, BLANK=-32768, **keys)))
    no_data = (exposure.mask & NO_DATA) != 0
    assert set(zip(*np.nonzero(no_data), strict=True)) == {(3, 4), (10, 0)}
    assert exposure.image[3, 4] == 0 and np.isfinite(exposure.variance).all()
    good = ~no_data
    expected = physical(stored, keys.get("BSCALE", 1.0), keys.get("BZERO", 0.0))
    np.testing.assert_array_equal(exposure.image[good], expected[good])
    assert "image" in exposure.info.provenance


def test_uint16_mask_through_bzero_reads_its_bits() -> None:
    """The layout of every older afw file: BITPIX 16, BZERO 32768, bits up to 15."""
    bits = np.zeros(SHAPE, np.uint16)
    bits[0, 0] = 1 << 15 | 1
    bits[1, 2] = (1 << 5) | (1 << 4)
    bits[2, 2] = 65535
    hdu = fits.ImageHDU(bits)  # astropy writes uint16 as int16 with BZERO = 32768
    data = calexp_with_mask(hdu)
    with fits.open(io.BytesIO(data), do_not_scale_image_data=True) as raw:
        assert (raw[2].header["BITPIX"], raw[2].header["BZERO"]) == (16, 32768)
    exposure = read_exposure(io.BytesIO(data))
    assert exposure.mask.dtype == np.int32
    np.testing.assert_array_equal(exposure.mask, bits.astype(np.int32))
    assert exposure.mask[1, 2] == 48 and exposure.planes.bit("HIGH") == 15


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.uint32, np.int64])
def test_integer_masks_of_any_bitpix(dtype: type) -> None:
    bits = np.zeros(SHAPE, dtype)
    bits[5, 6] = 1 << 5
    bits[6, 6] = (1 << 7) | 1
    exposure = read_exposure(io.BytesIO(calexp_with_mask(fits.ImageHDU(bits))))
    np.testing.assert_array_equal(exposure.mask, bits.astype(np.int32))


def test_mask_blank_is_no_data_and_scaled_mask_is_refused() -> None:
    bits = np.zeros(SHAPE, np.int16)
    bits[4, 4] = -1
    bits[5, 5] = 1 << 5
    hdu = fits.ImageHDU(bits, do_not_scale_image_data=True)
    hdu.header["BLANK"] = -1
    exposure = read_exposure(io.BytesIO(calexp_with_mask(hdu)))
    assert exposure.mask[4, 4] == NO_DATA and exposure.mask[5, 5] == 32

    scaled = fits.ImageHDU(bits, do_not_scale_image_data=True)
    scaled.header["BSCALE"] = 2.0
    with pytest.raises(ExposureReadError) as info:
        read_exposure(io.BytesIO(calexp_with_mask(scaled)))
    assert info.value.code == "unsupported_bitpix" and "BSCALE = 2" in info.value.message


# ----- tile compression ------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["RICE_1", "GZIP_1", "GZIP_2", "HCOMPRESS_1"])
def test_tile_compressed_integers_are_exact(compression: str) -> None:
    stored = rng.integers(-3000, 3000, (70, 53)).astype(np.int16)
    hdu = fits.CompImageHDU(stored, compression_type=compression)
    exposure = read_exposure(io.BytesIO(to_bytes(fits.HDUList([fits.PrimaryHDU(), hdu]))))
    np.testing.assert_array_equal(exposure.image, stored.astype(np.float32))


def test_tile_compressed_int16_with_bscale_and_blank() -> None:
    values = rng.normal(200.0, 5.0, (70, 53)).astype(np.float32)
    hdu = fits.CompImageHDU(values, compression_type="RICE_1")
    hdu.scale("int16", bscale=0.01, bzero=200.0)
    stored = hdu.data.copy()
    stored[0, :5] = -32768
    hdu = fits.CompImageHDU(stored, header=hdu.header, compression_type="RICE_1")
    hdu.header["BSCALE"], hdu.header["BZERO"], hdu.header["BLANK"] = 0.01, 200.0, -32768
    data = to_bytes(fits.HDUList([fits.PrimaryHDU(), hdu]))
    exposure = read_exposure(io.BytesIO(data))
    expected = physical(stored, 0.01, 200.0)
    assert ((exposure.mask[0, :5] & NO_DATA) != 0).all()
    np.testing.assert_array_equal(exposure.image[1:], expected[1:])


def test_quantized_floats_read_as_astropy_decompresses_them() -> None:
    values = rng.normal(100.0, 5.0, (64, 40)).astype(np.float32)
    values[7, 7] = np.nan
    hdu = fits.CompImageHDU(values, compression_type="RICE_1", quantize_level=16)
    data = to_bytes(fits.HDUList([fits.PrimaryHDU(), hdu]))
    with fits.open(io.BytesIO(data)) as hdul:
        decompressed = hdul[1].data.copy()
    exposure = read_exposure(io.BytesIO(data))
    good = np.isfinite(decompressed)
    np.testing.assert_array_equal(exposure.image[good], decompressed[good])
    assert exposure.mask[7, 7] & NO_DATA and not good[7, 7]
    # quantization to 1/16 of the noise: the values are within that of what was written
    assert np.abs(exposure.image[good] - values[good]).max() < 5.0 / 16


def test_plio_compressed_mask() -> None:
    bits = np.zeros(SHAPE, np.int32)
    bits[3, 4] = 48
    bits[:, 0] = 16
    mask = fits.CompImageHDU(bits, compression_type="PLIO_1", name="MASK")
    mask.header["HIERARCH MP_EDGE"], mask.header["HIERARCH MP_DETECTED"] = 4, 5
    data = to_bytes(fits.HDUList([
        fits.PrimaryHDU(), fits.ImageHDU(np.ones(SHAPE, np.float32), name="IMAGE"), mask,
        fits.ImageHDU(np.ones(SHAPE, np.float32), name="VARIANCE")]))
    np.testing.assert_array_equal(read_exposure(io.BytesIO(data)).mask, bits)


def test_damaged_tiles_are_corrupt_not_cut_short() -> None:
    stored = rng.integers(-3000, 3000, (70, 53)).astype(np.int16)
    data = bytearray(to_bytes(fits.HDUList([
        fits.PrimaryHDU(), fits.CompImageHDU(stored, compression_type="GZIP_1")])))
    with fits.open(io.BytesIO(bytes(data))) as hdul:
        heap = hdul.fileinfo(1)["datLoc"] + hdul[1]._bintable.header["NAXIS1"] * 70
    data[heap + 20: heap + 400] = b"\x55" * 380  # the first tiles' gzip streams
    with pytest.raises(ExposureReadError) as info:
        read_exposure(io.BytesIO(bytes(data)))
    assert info.value.code == "corrupt"
    assert "cut short" not in info.value.message
    assert "the pixels of HDU #1 cannot be decoded" in info.value.message


# ----- whole-file compression ------------------------------------------------------------------


def plain_bytes() -> tuple[bytes, np.ndarray]:
    stored = rng.integers(0, 60000, (120, 90)).astype(np.uint16)
    return to_bytes(fits.HDUList([fits.PrimaryHDU(stored)])), stored


@pytest.mark.parametrize("name", ["image.fits.gz", "image.fits.bz2", "image.fits.fz",
                                  "image.fits"])
def test_compressed_files_by_content_not_name(tmp_path: Path, name: str) -> None:
    data, stored = plain_bytes()
    packed = gzip.compress(data) if name.endswith(".gz") else bz2.compress(data) \
        if name.endswith(".bz2") else data
    path = tmp_path / name
    path.write_bytes(packed)
    for source in (path, io.BytesIO(packed)):
        np.testing.assert_array_equal(read_exposure(source).image, stored.astype(np.float32))


def test_non_seekable_stream_is_spooled() -> None:
    data, stored = plain_bytes()

    class Pipe(io.RawIOBase):
        def __init__(self, payload: bytes) -> None:
            self._payload = io.BytesIO(payload)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readinto(self, buffer) -> int:  # noqa: ANN001
            chunk = self._payload.read(min(len(buffer), 1000))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    for payload in (data, gzip.compress(data)):
        exposure = read_exposure(io.BufferedReader(Pipe(payload)))
        np.testing.assert_array_equal(exposure.image, stored.astype(np.float32))


def test_file_object_is_read_from_where_it_stands() -> None:
    data, stored = plain_bytes()
    for payload in (data, gzip.compress(data)):
        buffer = io.BytesIO(b"tar header, say" + payload)
        buffer.seek(15)
        np.testing.assert_array_equal(read_exposure(buffer).image, stored.astype(np.float32))


def test_gzip_costs_what_a_plain_file_costs(tmp_path: Path) -> None:
    """No copy of the decompressed file in memory: the same peak as the plain file."""
    y, x = np.mgrid[0:1024, 0:1024]
    image = (100 + (x % 50) + (y % 30)).astype(np.float32)  # compresses well, like a sky
    plain, packed = tmp_path / "big.fits", tmp_path / "big.fits.gz"
    fits.PrimaryHDU(image).writeto(plain)
    packed.write_bytes(gzip.compress(plain.read_bytes(), compresslevel=1))

    def peak(path: Path) -> int:
        tracemalloc.start()
        read_exposure(path)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    plain_peak, gzip_peak = peak(plain), peak(packed)
    file_size = plain.stat().st_size
    assert gzip_peak < plain_peak + file_size / 4, (plain_peak, gzip_peak, file_size)


def test_gzip_stream_beyond_the_limit_is_too_large(tmp_path: Path) -> None:
    data, _ = plain_bytes()
    packed = gzip.compress(data)
    with pytest.raises(ExposureReadError) as info:
        read_exposure(io.BytesIO(packed), max_bytes=len(data) // 2)
    assert info.value.code == "too_large" and "more than" in info.value.message
    with pytest.raises(ExposureReadError) as info:
        read_exposure(io.BytesIO(data), max_bytes=len(data) // 2)
    assert info.value.code == "too_large" and "planes" in info.value.message


# ----- choosing the HDU ------------------------------------------------------------------------


def several_images() -> tuple[bytes, dict[str, np.ndarray]]:
    planes = {name: np.full(SHAPE, value, np.float32)
              for name, value in (("SCI", 10.0), ("WHT", 0.25), ("AUX", 3.0))}
    hdus = [fits.PrimaryHDU()] + [fits.ImageHDU(data, name=name) for name, data in planes.items()]
    hdus.append(fits.BinTableHDU.from_columns([fits.Column("a", "D", array=[1.0])],
                                              name="TABLE"))
    return to_bytes(fits.HDUList(hdus)), planes


def test_primary_without_data_then_several_images() -> None:
    data, planes = several_images()
    exposure = read_exposure(io.BytesIO(data))
    np.testing.assert_array_equal(exposure.image, planes["SCI"])
    assert exposure.info.provenance["image"] == "HDU #1 SCI"
    assert any("4 images" not in n and "HDU #1 (SCI), the first" in n
               for n in exposure.info.notes)
    for spec, name in (("WHT", "WHT"), ("wht", "WHT"), (3, "AUX"), ("3", "AUX"),
                       ("SCI,1", "SCI")):
        exposure = read_exposure(io.BytesIO(data), ReadOptions(hdu=spec))
        np.testing.assert_array_equal(exposure.image, planes[name])
    meta = read_exposure_metadata(io.BytesIO(data), ReadOptions(hdu="AUX"))
    assert meta["hdu"] == 3 and meta["layout"] == "image"


@pytest.mark.parametrize(("spec", "words"), [
    ("NOPE", ["no HDU is named 'NOPE'", "#1 image SCI", "#4 table TABLE"]),
    (9, ["no HDU #9", "the file has 5"]),
    ("TABLE", ["HDU #4 is a table TABLE, not an image"]),
    ("SCI,2", ["no HDU is named 'SCI,2'"]),
])
def test_wrong_hdu_says_what_the_file_holds(spec: str | int, words: list[str]) -> None:
    data, _ = several_images()
    with pytest.raises(ExposureReadError) as info:
        read_exposure(io.BytesIO(data), ReadOptions(hdu=spec))
    assert info.value.code == "bad_hdu"
    for word in words:
        assert word in info.value.message


def test_lsst_image_is_the_default(tmp_path: Path) -> None:
    exposure = Exposure(image=np.ones(SHAPE, np.float32), mask=np.zeros(SHAPE, np.int32),
                        variance=np.ones(SHAPE, np.float32))
    path = tmp_path / "calexp.fits"
    write_exposure(exposure, path)
    back = read_exposure(path)
    planes = {k: back.info.provenance[k] for k in ("image", "mask", "variance")}
    assert planes == {"image": "HDU #1 IMAGE", "mask": "MASK plane",
                      "variance": "VARIANCE plane"}
    assert back.info.notes == []


# ----- non-standard header cards ---------------------------------------------------------------


def with_cards(cards: list[str]) -> bytes:
    """A plain image whose primary header carries the raw 80-character ``cards``."""
    data = bytearray(to_bytes(fits.HDUList([fits.PrimaryHDU(np.ones(SHAPE, np.float32))])))
    header = data[:2880].decode("ascii")
    lines = [header[i:i + 80] for i in range(0, 2880, 80)]
    end = next(i for i, line in enumerate(lines) if line.startswith("END "))
    lines = lines[:end] + [c.ljust(80) for c in cards] + ["END".ljust(80)]
    data[:2880] = "".join(lines + [" " * 80] * (36 - len(lines))).encode("latin-1")
    return bytes(data)


def test_non_standard_cards_are_repaired_or_skipped_with_notes() -> None:
    data = with_cards(["exptime =                 30.0", "FILTER  = r_band   / unquoted",
                       "SEEING  = 1.2.3", "BAD\x01KEY =                    3",
                       "DATE-OBS= 2023-01-05"])
    exposure = read_exposure(io.BytesIO(data))
    assert exposure.info.exptime == 30.0
    assert exposure.info.physical_filter == "r_band"
    assert exposure.info.mjd == pytest.approx(59949.0)
    notes = "\n".join(exposure.info.notes)
    assert "'exptime' is not upper case; repaired, read as 30.0" in notes
    assert "'FILTER'" in notes and "'SEEING'" in notes
    assert "Illegal keyword name 'BAD\\x01KEY'; the card cannot be repaired and was skipped" \
        in notes
    meta = read_exposure_metadata(io.BytesIO(data))
    assert meta["notes"] == exposure.info.notes and meta["exptime"] == 30.0


# ----- refusals name their cause ---------------------------------------------------------------


@pytest.mark.parametrize(("shape", "code"), [((1, 1), "too_small"), ((2, 40), "too_small"),
                                             ((40, 0), "too_small")])
def test_tiny_images_are_refused(shape: tuple[int, int], code: str) -> None:
    data = to_bytes(fits.HDUList([fits.PrimaryHDU(np.ones(shape, np.float32))]))
    with pytest.raises(ExposureReadError) as info:
        read_exposure_metadata(io.BytesIO(data))
    assert info.value.code == code


def test_blank_everywhere_is_all_nan_and_checked_without_reading_whole_planes() -> None:
    stored = np.full(SHAPE, -32768, np.int16)
    data = stored_image(stored, BLANK=-32768)
    for check in (lambda: read_exposure(io.BytesIO(data)),
                  lambda: read_exposure_metadata(io.BytesIO(data), check_pixels=True)):
        with pytest.raises(ExposureReadError) as info:
            check()
        assert info.value.code == "all_nan" and "BLANK" in info.value.message
    read_exposure_metadata(io.BytesIO(data))  # headers alone are fine


@pytest.mark.parametrize(("variance", "code"), [(0.0, "bad_variance"), (-1.0, "bad_variance"),
                                                (np.nan, "bad_variance")])
def test_calexp_variance_nowhere_positive(variance: float, code: str) -> None:
    data = to_bytes(fits.HDUList([
        fits.PrimaryHDU(), fits.ImageHDU(np.ones(SHAPE, np.float32), name="IMAGE"),
        fits.ImageHDU(np.zeros(SHAPE, np.int32), name="MASK"),
        fits.ImageHDU(np.full(SHAPE, variance, np.float32), name="VARIANCE")]))
    for check in (lambda: read_exposure(io.BytesIO(data)),
                  lambda: read_exposure_metadata(io.BytesIO(data), check_pixels=True)):
        with pytest.raises(ExposureReadError) as info:
            check()
        assert info.value.code == code and "VARIANCE" in info.value.message


def test_disjoint_image_and_variance_is_no_data() -> None:
    image = np.ones(SHAPE, np.float32)
    image[:, 20:] = np.nan
    variance = np.ones(SHAPE, np.float32)
    variance[:, :20] = 0
    data = to_bytes(fits.HDUList([
        fits.PrimaryHDU(), fits.ImageHDU(image, name="IMAGE"),
        fits.ImageHDU(np.zeros(SHAPE, np.int32), name="MASK"),
        fits.ImageHDU(variance, name="VARIANCE")]))
    with pytest.raises(ExposureReadError) as info:
        read_exposure_metadata(io.BytesIO(data), check_pixels=True)
    assert info.value.code == "no_data" and "do not overlap" in info.value.message


def test_some_zero_variance_pixels_are_no_data() -> None:
    variance = np.full(SHAPE, 4.0, np.float32)
    variance[2, 3] = 0.0
    variance[4, 5] = -1.0
    data = to_bytes(fits.HDUList([
        fits.PrimaryHDU(), fits.ImageHDU(np.ones(SHAPE, np.float32), name="IMAGE"),
        fits.ImageHDU(np.zeros(SHAPE, np.int32), name="MASK"),
        fits.ImageHDU(variance, name="VARIANCE")]))
    exposure = read_exposure(io.BytesIO(data))
    assert set(zip(*np.nonzero(exposure.mask & NO_DATA), strict=True)) == {(2, 3), (4, 5)}
    assert exposure.variance[2, 3] == 4.0 and (exposure.variance > 0).all()
