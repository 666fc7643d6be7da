"""Every real frame in ../shared/data/real reads as published, pixels as astropy decodes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from app.engine.config import DetectConfig
from app.engine.exposure import Exposure
from app.engine.pipeline import run_detect
from app.engine.psf import GaussianPsf
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


def decam_catalog(weight: Path) -> tuple[Table, Exposure]:
    """The DECam cutout measured with its weight and data-quality maps, with what would
    otherwise depend on the weights held fixed, so only their effect on the errors differs
    between weight maps: the Gaussian of the header's FWHM (3.69 px) as the PSF, no aperture
    corrections (their stars are chosen by S/N), no deblending (its point-source test is a
    χ²), and 3 ``stdev`` detection (one level from the smoothed image). The background is
    subtracted as by default."""
    options = ReadOptions(weight=PlaneRef(weight), mask=PlaneRef(REAL / "decam_ood.fits"),
                          mask_map=MaskMap.parse("codes", "decam"))
    exposure = read_exposure(REAL / "decam_ooi.fits", options)
    fwhm = fits.getheader(REAL / "decam_ooi.fits", 1)["FWHM"]
    exposure.psf = GaussianPsf(fwhm / 2.3548)
    config = DetectConfig.model_validate({
        "characterize": {"doMeasurePsf": False, "doApCorr": False}, "doDeblend": False,
        "detection": {"thresholdType": "stdev", "thresholdValue": 3.0}})
    result = run_detect(exposure, config)
    return result.catalog, result.exposure


def test_decam_catalog_errors_follow_the_weight_map(tmp_path: Path) -> None:
    catalog, measured = decam_catalog(REAL / "decam_oow.fits")
    weight = fits.getdata(REAL / "decam_oow.fits").astype(np.float32)
    good = weight > 0
    np.testing.assert_array_equal(measured.variance[good], np.float32(1) / weight[good])

    # The PSF flux error is sqrt(ΣP²V)/ΣP² over the fit's disk (2.2 FWHM): predicted here
    # from 1/weight with the PSF on the nearest pixel, for the isolated unflagged sources.
    ok = (~catalog["base_PsfFlux_flag"] & ~catalog["base_PsfFlux_flag_edge"]
          & (catalog["deblend_nChild"] == 0))
    assert ok.sum() >= 10, ok.sum()
    kernel = measured.psf.kernel(0.0, 0.0)
    half = kernel.shape[0] // 2
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    disk = xx**2 + yy**2 <= (2.2 * measured.psf.sigma(0, 0) * 2.3548) ** 2
    variance = np.where(good, 1.0 / np.where(good, weight, 1.0), 0.0)
    ratios = []
    x0, y0 = measured.xy0
    for row in catalog[ok]:
        cx = int(round(row["base_SdssCentroid_x"] - x0))
        cy = int(round(row["base_SdssCentroid_y"] - y0))
        if not (half <= cx < weight.shape[1] - half and half <= cy < weight.shape[0] - half):
            continue
        p = np.where(disk, kernel, 0.0)
        v = variance[cy - half:cy + half + 1, cx - half:cx + half + 1]
        predicted = np.sqrt((p**2 * v).sum()) / (p**2).sum()
        ratios.append(row["base_PsfFlux_instFluxErr"] / predicted)
    ratios = np.array(ratios)
    assert len(ratios) >= 10
    assert np.abs(ratios - 1).max() < 0.01, ratios  # the sub-pixel shift is all that differs
    # The weight map holds the sources' own noise: the brightest has twice the sky's error.
    assert catalog["base_PsfFlux_instFluxErr"].max() > 1.8 * np.median(
        catalog["base_PsfFlux_instFluxErr"])

    # Four times the weight: the same fluxes with half the errors, source by source.
    stronger = tmp_path / "oow_x4.fits"
    with fits.open(REAL / "decam_oow.fits") as hdul:
        hdul[1].data = hdul[1].data * np.float32(4)
        hdul.writeto(stronger)
    scaled, _ = decam_catalog(stronger)
    assert len(scaled) == len(catalog)
    np.testing.assert_allclose(scaled["base_PsfFlux_instFlux"], catalog["base_PsfFlux_instFlux"],
                               rtol=1e-5)
    np.testing.assert_allclose(scaled["base_PsfFlux_instFluxErr"],
                               catalog["base_PsfFlux_instFluxErr"] / 2, rtol=1e-5)
