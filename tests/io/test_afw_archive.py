"""afw's archive: real LSST files decode to what their tables hold, and skyphot's own archive
reads back exactly and has afw's table layout."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time

from app.engine.apcorr import ApCorr
from app.engine.exposure import Exposure, ExposureInfo, PhotoCalib
from app.engine.fields import ChebyshevBoundedField
from app.engine.psf import GaussianPsf
from app.engine.psf_model import PixelPsf
from app.io.afw_archive import ArchiveReader
from app.io.afw_psf import decode_psf
from app.io.fits_exposure import read_exposure, read_exposure_metadata, write_exposure

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
CALEXP = REAL / "hsc_obsbase_calexp.fits"


def archived_rows(path: Path, archive_id: int) -> fits.FITS_rec:
    """The rows of one archived object, found from the ARCHIVE_INDEX by hand."""
    with fits.open(path) as hdul:
        index = hdul["ARCHIVE_INDEX"].data
        entry = index[index["id"] == archive_id][0]
        base = hdul[0].header["AR_HDU"] - 1
        table = hdul[base + int(entry["cat.archive"])].data
        return table[entry["row0"]:entry["row0"] + entry["nrows"]].copy()


def test_obs_base_calexp_psf_is_afws_point_sampled_gaussian():
    """GaussianPsf of the table (3×3, sigma 4): afw samples exp(-r²/2σ²) at pixel centres
    and normalizes over the stamp (an integrated Gaussian would differ by ~1e-3 here)."""
    psf_id = fits.getheader(CALEXP)["ARCHIVE_ID_PSF"]
    row = archived_rows(CALEXP, psf_id)[0]
    assert (row["dimensions_x"], row["dimensions_y"], row["sigma"]) == (3, 3, 4.0)
    exposure = read_exposure(CALEXP)
    x = np.arange(3) - 1
    want = np.exp(-0.5 * (x[:, None] ** 2 + x[None, :] ** 2) / 16.0)
    want /= want.sum()
    np.testing.assert_allclose(exposure.psf.kernel(10.0, 20.0), want, rtol=1e-15)
    assert exposure.psf.sigma(10.0, 20.0) == 4.0  # afw's computeShape: sigma², not moments
    assert want[1, 1] == pytest.approx(0.115813, abs=1e-6)
    assert exposure.info.provenance["psf"] == "archive GaussianPsf"


def test_obs_base_calexp_calibration_apcorr_filter_and_visit():
    header = fits.getheader(CALEXP)
    exposure = read_exposure(CALEXP)
    calib = archived_rows(CALEXP, header["ARCHIVE_ID_PHOTOCALIB"])[0]
    assert exposure.photo_calib == PhotoCalib(calib["calibrationMean"], calib["calibrationErr"])
    assert exposure.photo_calib.njy_per_count == pytest.approx(1.99409, abs=1e-5)

    # the ApCorrMap's rows name the fields; base_PsfFlux_instFlux's holds a 3×3 series over
    # the whole CCD (parent frame; this cutout's xy0 is 0, 0)
    entries = {str(r["name"]).strip(): int(r["field"])
               for r in archived_rows(CALEXP, header["ARCHIVE_ID_AP_CORR_MAP"])}
    assert len(exposure.ap_corr) == len(entries) // 2 == 23
    field = archived_rows(CALEXP, entries["base_PsfFlux_instFlux"])[0]
    err = archived_rows(CALEXP, entries["base_PsfFlux_instFluxErr"])[0]
    corr = exposure.ap_corr["base_PsfFlux"]
    assert corr.field.bbox == (0, 0, 2047, 4175)
    np.testing.assert_array_equal(corr.field.coefficients.ravel(), field["coefficients"])
    assert corr.err == err["coefficients"] == pytest.approx(0.0066, abs=1e-4)
    # afw's ChebyshevBoundedField: x, y scaled over the box grown by half a pixel
    x, y = 32.0, 16.0
    sx, sy = (2 * x - 2047) / 2048, (2 * y - 4175) / 4176
    want = np.polynomial.chebyshev.chebval2d(sy, sx, field["coefficients"].reshape(3, 3))
    assert corr(np.array([x]), np.array([y]))[0] == pytest.approx(want, rel=1e-14)
    assert want == pytest.approx(0.96811, abs=1e-5)

    info = exposure.info
    assert (info.band, info.physical_filter) == ("i", "HSC-I")
    assert any("band '300' is not a band name" in n for n in info.notes)
    # VisitInfo: DATE-AVG is TAI; the middle of MJD-STR .. MJD-END (UTC)
    assert info.mjd == pytest.approx(
        Time("2013-11-02T06:01:31.7885", scale="tai").utc.mjd, abs=1e-10)
    assert info.mjd == pytest.approx((56598.2504706895 + 56598.2508438504) / 2, abs=2e-6)
    assert info.exptime == 30.0
    expected = {"psf": "archive GaussianPsf", "photo_calib": "archive PhotoCalib",
                "ap_corr": "archive ApCorrMap", "filter": "archive FilterLabel",
                "mjd": "header DATE-AVG", "variance": "VARIANCE plane", "mask": "MASK plane",
                "image": "HDU #1 IMAGE", "sky_frame": "WCS in icrs",
                "pixel_frame": "parent frame, xy0 = (0, 0) from afw A WCS (CRVAL1A, CRVAL2A)"}
    assert info.provenance == expected
    meta = read_exposure_metadata(CALEXP)
    # the headers say the same, but for the mask, whose plane is not read there
    assert meta["provenance"] == {k: v for k, v in expected.items() if k != "mask"}
    assert meta["notes"] == info.notes
    assert meta["band"] == "i" and meta["njy_per_count"] == exposure.photo_calib.njy_per_count


def test_obs_base_calexp_mask_planes_by_name():
    exposure = read_exposure(CALEXP)
    bits = exposure.planes.as_dict()
    assert (bits["CROSSTALK"], bits["UNMASKEDNAN"], bits["NOT_DEBLENDED"]) == (12, 14, 13)
    with fits.open(CALEXP) as hdul:
        raw = hdul["MASK"].data
    np.testing.assert_array_equal(exposure.planes.any(exposure.mask, "BAD"), (raw & 1) != 0)


def test_piff_psf_is_named_not_decoded():
    exposure = read_exposure(REAL / "piff_sim_exp.fits")
    assert exposure.psf is None
    assert "archived PiffPsf not decoded; the PSF is measured" in exposure.info.notes
    assert "psf" not in exposure.info.provenance


def test_old_afw_layout_planes_and_no_calibration():
    """hsc_afw_small: MP_ planes on other bits, FLUXMAG0 = 0, TIME-MID at afw's unset date."""
    meta = read_exposure_metadata(REAL / "hsc_afw_small.fits")
    planes = meta["mask_planes"]
    assert (planes["CROSSTALK"], planes["NO_DATA"], planes["UNMASKEDNAN"]) == (8, 9, 10)
    assert meta["njy_per_count"] is None and meta["provenance"]["photo_calib"] == "none"
    assert any(n.startswith("FLUXMAG0 = 0 in the header") for n in meta["notes"])
    assert meta["mjd"] is None and any("afw's unset date" in n for n in meta["notes"])
    assert meta["physical_filter"] is None  # FILTER = '_unknown_'
    assert meta["xy0"] == (100, 100)


# ----- skyphot's own archive ----------------------------------------------------------------


def archived_exposure(psf=None) -> Exposure:
    shape = (40, 60)
    rng = np.random.default_rng(3)
    image = rng.normal(0, 1, shape).astype(np.float32)
    field = ChebyshevBoundedField((0, 0, 59, 39), np.array([[0.97, 0.01], [-0.02, 0.0]]))
    return Exposure(
        image=image, mask=np.zeros(shape, np.int32), variance=np.ones(shape, np.float32),
        psf=psf or GaussianPsf(1.7, 13, sampling="point"), photo_calib=PhotoCalib(0.57, 0.003),
        info=ExposureInfo(band="r", physical_filter="HSC-R2", mjd=59000.123456, exptime=45.0),
        xy0=(1500, 2200),
        ap_corr={"base_PsfFlux": ApCorr(field, 0.004, 37),
                 "base_GaussianFlux": ApCorr(ChebyshevBoundedField.constant(field.bbox, 1.02),
                                             0.005, 35)})


def round_trip(exposure: Exposure) -> Exposure:
    buffer = io.BytesIO()
    write_exposure(exposure, buffer)
    buffer.seek(0)
    return read_exposure(buffer)


def test_own_archive_reads_back_exactly():
    exposure = archived_exposure()
    back = round_trip(exposure)
    np.testing.assert_array_equal(back.psf.kernel(0, 0), exposure.psf.kernel(0, 0))
    assert back.psf.sampling == "point" and back.psf.sigma(0, 0) == 1.7
    assert back.photo_calib == exposure.photo_calib
    for stem, corr in exposure.ap_corr.items():
        got = back.ap_corr[stem]
        assert got.field.bbox == corr.field.bbox  # back in the array frame
        np.testing.assert_array_equal(got.field.coefficients, corr.field.coefficients)
        assert (got.err, got.n_stars) == (corr.err, corr.n_stars)
    assert (back.info.band, back.info.physical_filter, back.info.exptime) == ("r", "HSC-R2", 45.0)
    assert back.info.mjd == pytest.approx(exposure.info.mjd, abs=1e-10)
    assert back.info.provenance["psf"] == "archive GaussianPsf"
    assert back.info.provenance["ap_corr"] == "archive ApCorrMap"
    assert not back.info.notes
    assert not [k for k, *_ in back.info.extra["header"] if "ID" in k or k == "EXPINFO_V"]


def test_own_archive_has_afws_table_layout(tmp_path):
    """Every table skyphot writes has the columns, forms and afw field classes of the same
    table in the real calexp, and the ApCorrMap's fields are in the parent frame."""
    path = tmp_path / "own.fits"
    write_exposure(archived_exposure(), path)

    def layout(hdu: fits.BinTableHDU) -> list[tuple]:
        h = hdu.header
        return [(h[f"TTYPE{n}"], h[f"TFORM{n}"].lstrip("1"), h.get(f"TCCLS{n}"),
                 h.get(f"TFLAG{n}")) for n in range(1, h["TFIELDS"] + 1)]

    with fits.open(path) as ours, fits.open(CALEXP) as afw:
        assert ours[4].name == "ARCHIVE_INDEX" and ours[0].header["AR_HDU"] == 5
        assert layout(ours["ARCHIVE_INDEX"]) == layout(afw["ARCHIVE_INDEX"])
        for name in ("GaussianPsf", "PhotoCalib", "ApCorrMap", "FilterLabel"):
            assert layout(ours[name]) == layout(afw[name]), name
            assert ours[name].header["EXTTYPE"] == "ARCHIVE_DATA"
        assert layout(ours["ChebyshevBoundedField", 1]) == layout(afw["ChebyshevBoundedField", 1])
        n_cat = ours["ARCHIVE_INDEX"].header["AR_NCAT"]
        assert [h.header["AR_CATN"] for h in ours[5:4 + n_cat]] == list(range(1, n_cat))
        archive = ArchiveReader(ours, ours[0].header)
        names = {str(r["name"]).strip(): int(r["field"])
                 for r in archive.get(archive.ids["AP_CORR_MAP"]).catalogs[0]}
        assert sorted(names) == ["base_GaussianFlux_instFlux", "base_GaussianFlux_instFluxErr",
                                 "base_PsfFlux_instFlux", "base_PsfFlux_instFluxErr"]
        row = archive.get(names["base_PsfFlux_instFlux"]).one_row()
        assert (row["bbox_min_x"], row["bbox_min_y"], row["bbox_max_x"], row["bbox_max_y"]) == (
            1500, 2200, 1559, 2239)
        err = archive.get(names["base_PsfFlux_instFluxErr"]).one_row()
        assert err["coefficients"] == 0.004


def test_real_calexp_rewritten_keeps_its_archive(tmp_path):
    exposure = read_exposure(CALEXP)
    back = round_trip(exposure)
    np.testing.assert_array_equal(back.psf.kernel(5, 5), exposure.psf.kernel(5, 5))
    assert back.photo_calib == exposure.photo_calib
    assert set(back.ap_corr) == set(exposure.ap_corr)
    for stem, corr in exposure.ap_corr.items():
        np.testing.assert_array_equal(back.ap_corr[stem].field.coefficients,
                                      corr.field.coefficients)
        assert back.ap_corr[stem].err == corr.err
    assert (back.info.band, back.info.physical_filter) == ("i", "HSC-I")


def test_measured_pixel_psf_is_archived_as_psfex_of_the_same_kernels():
    """The PixelPsf goes to the archive as a PsfexPsf (float32 components) that decodes to
    the same kernels, besides skyphot's exact float64 PSF extension, which the reader uses."""
    k = 15
    yy, xx = np.mgrid[:k, :k] - k // 2
    mean = np.exp(-0.5 * (xx**2 + yy**2) / 2.2**2)
    wide = np.exp(-0.5 * (xx**2 + yy**2) / 2.6**2) - mean
    stretch = np.exp(-0.5 * (xx**2 / 2.6**2 + yy**2 / 2.0**2)) - mean
    basis = np.zeros((6, k, k))
    basis[0], basis[1], basis[2], basis[3] = mean, 0.3 * wide, 0.2 * stretch, 0.1 * wide
    psf = PixelPsf(basis, 2, 60, 40)
    exposure = archived_exposure(psf)
    buffer = io.BytesIO()
    write_exposure(exposure, buffer)
    buffer.seek(0)
    back = read_exposure(buffer)
    assert back.info.provenance["psf"] == "skyphot PSF extension (PIXEL)"
    buffer.seek(0)
    with fits.open(buffer) as hdul:
        archive = ArchiveReader(hdul, hdul[0].header)
        assert archive.name_of(archive.ids["PSF"]) == "PsfexPsf"
        decoded = decode_psf(archive, archive.ids["PSF"], (40, 60), (1500, 2200))
    for x, y in [(0.0, 0.0), (59.0, 39.0), (13.0, 31.0)]:
        np.testing.assert_array_equal(back.psf.kernel(x, y), psf.kernel(x, y))
        np.testing.assert_allclose(decoded.kernel(x, y), psf.kernel(x, y), atol=3e-8)


def test_archived_psf_and_apcorr_measure_the_small_calexp():
    """A star of the archived PSF's sigma added to the real 64×32 calexp: with doMeasurePsf
    off, its PSF flux is measured with the archived PSF and corrected by the archived
    base_PsfFlux field at its position, and calibrated by the archived PhotoCalib."""
    from app.engine.config import DetectConfig, apply_overrides
    from app.engine.pipeline import run_detect
    from app.engine.psf import pixel_gaussian

    exposure = read_exposure(CALEXP)
    star = 40000.0 * pixel_gaussian(25, 4.0, 0.3, -0.2)
    exposure.image[4:29, 28:53] += star.astype(np.float32)
    # per-pixel noise from the variance plane: on 4 unbordered rows a star would dominate
    # a noise level measured from the image
    config = apply_overrides(DetectConfig(), ["characterize.doMeasurePsf=false",
                                              "detection.thresholdType=pixel_stdev",
                                              "detection.reEstimateBackground=false"])
    result = run_detect(exposure, config)
    assert result.exposure.psf is exposure.psf
    assert result.exposure.info.provenance["psf"] == "archive GaussianPsf"
    cat = result.catalog
    brightest = cat[np.argmax(cat["base_PsfFlux_instFlux"])]
    x, y = brightest["base_SdssCentroid_x"], brightest["base_SdssCentroid_y"]
    assert (x, y) == pytest.approx((40.3, 15.8), abs=0.3)
    field = exposure.ap_corr["base_PsfFlux"]
    assert brightest["base_PsfFlux_apCorr"] == pytest.approx(field(np.array([x]),
                                                                   np.array([y]))[0], rel=1e-9)
    assert not brightest["base_PsfFlux_flag_apCorr"]
    assert brightest["base_PsfFlux_flux"] == pytest.approx(
        brightest["base_PsfFlux_instFlux"] * 1.9940875054616918, rel=1e-12)
