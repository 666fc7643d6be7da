"""Every real frame in ../shared/data/real reads as published, pixels as astropy decodes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from app.io.fits_exposure import read_exposure, read_exposure_metadata
from app.io.read_options import MaskMap, PlaneRef, ReadOptions

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
FILES = sorted(p.name for p in REAL.glob("*.fits*"))


def astropy_planes(name: str) -> list[np.ndarray]:
    """The image HDUs with data, as astropy scales them (memmap=False allows scaling)."""
    with fits.open(REAL / name, memmap=False) as hdul:
        return [np.array(h.data) for h in hdul if isinstance(h, fits.ImageHDU | fits.PrimaryHDU)
                and h.data is not None]


def test_the_files_are_there() -> None:
    assert len(FILES) == 9, FILES


@pytest.mark.parametrize("name", FILES)
def test_reads_as_published(name: str) -> None:
    exposure = read_exposure(REAL / name)
    planes = astropy_planes(name)
    np.testing.assert_array_equal(exposure.image, planes[0].astype(np.float32))
    if len(planes) >= 3:  # an afw MaskedImage: IMAGE, MASK, VARIANCE
        np.testing.assert_array_equal(exposure.mask, planes[1].astype(np.int32))
        np.testing.assert_array_equal(exposure.variance, planes[2])
        assert exposure.info.provenance["mask"] == "MASK plane"
    meta = read_exposure_metadata(REAL / name, check_pixels=True)
    assert tuple(meta["shape"]) == exposure.shape
    assert meta["notes"] == exposure.info.notes


@pytest.mark.parametrize("name", ["hsc_afw_small.fits", "ipdiffim_scienceMI.fits",
                                  "sdss_mini-r-3-113_0.fits.gz"])
def test_old_afw_uint16_masks_read_their_bits(name: str) -> None:
    with fits.open(REAL / name, memmap=False, do_not_scale_image_data=True) as hdul:
        mask_hdu = hdul[2]
        assert (mask_hdu.header["BITPIX"], mask_hdu.header["BZERO"]) == (16, 32768)
        stored = mask_hdu.data.astype(np.int32)
    exposure = read_exposure(REAL / name)
    np.testing.assert_array_equal(exposure.mask, stored + 32768)


def test_hsc_cutout_planes_and_sdss_interpolated_fraction() -> None:
    hsc = read_exposure(REAL / "hsc_afw_small.fits")
    assert hsc.planes.bit("CROSSTALK") == 8 and hsc.planes.bit("NO_DATA") == 9
    assert hsc.xy0 == (100, 100)
    assert np.count_nonzero(hsc.mask) > 0
    sdss = read_exposure(REAL / "sdss_mini-r-3-113_0.fits.gz")
    interpolated = sdss.planes.any(sdss.mask, "INTRP").mean()
    assert interpolated == pytest.approx(0.37, abs=0.01)  # as the README describes it


def test_decam_triple_variance_is_one_over_weight() -> None:
    options = ReadOptions(weight=PlaneRef(REAL / "decam_oow.fits"),
                          mask=PlaneRef(REAL / "decam_ood.fits"),
                          mask_map=MaskMap.parse("codes", "decam"))
    exposure = read_exposure(REAL / "decam_ooi.fits", options)
    weight = fits.getdata(REAL / "decam_oow.fits").astype(np.float32)
    dq = fits.getdata(REAL / "decam_ood.fits")
    good = weight > 0
    np.testing.assert_array_equal(exposure.variance[good], np.float32(1) / weight[good])
    planes = exposure.planes
    np.testing.assert_array_equal(planes.any(exposure.mask, "NO_DATA"), ~good)
    np.testing.assert_array_equal(planes.any(exposure.mask, "CR"), dq == 5)
    assert int((dq == 5).sum()) == 177  # the file's cosmic rays, all of weight 0
    assert exposure.info.provenance["variance"] == "1/weight, weight map decam_oow.fits[#1 N2]"
    assert exposure.info.provenance["image"] == "HDU #1 N2"
