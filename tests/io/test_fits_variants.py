"""Plain frames, int16 + BSCALE and RICE_1-compressed exposures: what is written and read."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

from app.engine.simulate import SimulationConfig, simulate_exposure
from app.io.fits_variants import (
    int16_scaling,
    round_trip,
    write_calexp_variant,
    write_plain_image,
)

SMALL = dict(width=200, height=160, n_stars=30, n_galaxies=10, n_pairs=0, seed=3)


@pytest.fixture(scope="module")
def calexp():
    return simulate_exposure(SimulationConfig(**SMALL)).exposure


@pytest.fixture(scope="module")
def frame():
    return simulate_exposure(SimulationConfig(**SMALL, sky_in=True, sky_gradient=200.0)).exposure


def _float32_slack(image: np.ndarray) -> float:
    """Rounding of ``BZERO + BSCALE × stored`` in float32: a few units in the last place."""
    return 4 * float(np.spacing(np.abs(image).max()))


def _hdus(write) -> fits.HDUList:
    buffer = io.BytesIO()
    write(buffer)
    buffer.seek(0)
    return fits.open(buffer, disable_image_compression=True)


def test_int16_calexp_image_is_scaled_within_half_a_step(calexp):
    hdul = _hdus(lambda b: write_calexp_variant(calexp, b, "int16"))
    image = hdul["IMAGE"]
    assert image.header["BITPIX"] == 16 and "BSCALE" in image.header
    assert hdul["MASK"].header["BITPIX"] == 32 and hdul["VARIANCE"].header["BITPIX"] == -32
    back = round_trip(calexp, "calexp", "int16")
    bscale, _ = int16_scaling(calexp.image)
    assert bscale == pytest.approx(image.header["BSCALE"])
    assert np.abs(back.image - calexp.image).max() <= 0.5 * bscale + _float32_slack(calexp.image)
    np.testing.assert_array_equal(back.mask, calexp.mask)
    np.testing.assert_array_equal(back.variance, calexp.variance)
    np.testing.assert_array_equal(back.background, calexp.background)


def test_rice_calexp_is_tile_compressed_and_quantized_below_the_noise(calexp):
    hdul = _hdus(lambda b: write_calexp_variant(calexp, b, "rice"))
    names = [h.header.get("EXTNAME") for h in hdul[1:]]
    assert names[:3] == ["IMAGE", "MASK", "VARIANCE"]
    for h in hdul[1:4]:
        assert h.header["XTENSION"] == "BINTABLE" and h.header["ZCMPTYPE"] == "RICE_1"
    back = round_trip(calexp, "calexp", "rice")
    np.testing.assert_array_equal(back.mask, calexp.mask)  # integers: lossless
    error = back.image - calexp.image
    sigma = float(np.sqrt(np.median(calexp.variance)))
    # quantized to σ/16 with dithering: a uniform error of rms (σ/16)/√12, mean zero
    assert np.std(error) < 0.5 * sigma / 16
    assert abs(np.mean(error)) < 0.01 * sigma


@pytest.mark.parametrize("encoding", ["float32", "int16", "rice"])
def test_plain_frame_has_only_its_image_gain_and_read_noise(frame, encoding):
    hdul = _hdus(lambda b: write_plain_image(frame, b, gain=1.0, read_noise=5.0,
                                             encoding=encoding, saturation=60000.0))
    images = [h for h in hdul if h.header.get("NAXIS", 0) == 2 or "ZNAXIS" in h.header]
    assert len(images) == 1
    header = images[0].header
    primary = hdul[0].header
    for key, value in (("GAIN", 1.0), ("RDNOISE", 5.0), ("SATURATE", 60000.0)):
        assert (header.get(key) if key in header else primary.get(key)) == value
    back = round_trip(frame, "plain", encoding, gain=1.0, read_noise=5.0)
    assert back.background is None and not back.mask.any()
    assert np.median(back.image) > 900  # the sky is in
    assert back.wcs is not None and back.info.exptime == 30.0
    tolerance = {"float32": 0.0, "int16": 0.5 * int16_scaling(frame.image)[0], "rice": 3.0}
    assert np.abs(back.image - frame.image).max() <= tolerance[encoding] + _float32_slack(
        frame.image)


def test_round_trip_through_a_file_on_disk(frame, tmp_path):
    back = round_trip(frame, "plain", "rice", gain=1.0, read_noise=5.0, directory=tmp_path)
    assert np.abs(back.image - frame.image).max() < 3.0
    assert list(tmp_path.iterdir()) == []  # the file is gone


def test_plain_round_trip_needs_gain_and_read_noise(frame):
    with pytest.raises(ValueError, match="gain and read noise"):
        round_trip(frame, "plain", "float32")
