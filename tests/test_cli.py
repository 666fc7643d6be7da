"""The CLI on real files: simulate a calexp, detect on it, read back what was written."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage

from app.cli import main
from app.io.catalogs import read_catalog
from app.io.fits_exposure import read_exposure
from app.io.footprints import read_footprints


@pytest.fixture(scope="module")
def calexp(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "field.fits"
    assert main(["simulate", str(path), "--width", "768", "--height", "768", "--stars", "250",
                 "--galaxies", "60", "--pairs", "3", "--seed", "2"]) == 0
    return path


def test_simulate_writes_calexp_and_truth(calexp):
    exposure = read_exposure(calexp)
    truth = read_catalog(calexp.with_name("field_truth.fits"))
    assert exposure.shape == (768, 768)
    assert exposure.photo_calib is not None and exposure.wcs is not None
    assert len(truth) == 250 + 60 + 2 * 3 + 3  # stars, galaxies, pair members, saturated


def test_detect_writes_catalog_footprints_and_mask(calexp, tmp_path, capsys):
    out = tmp_path / "cat.parquet"
    fps = tmp_path / "fp.fits"
    masked = tmp_path / "masked.fits"
    code = main(["detect", str(calexp), "--output", str(out), "--footprints", str(fps),
                 "--mask-output", str(masked), "--set", "detection.thresholdValue=10",
                 "--set", "detection.thresholdType=stdev", "--quiet"])
    assert code == 0
    line = capsys.readouterr().out.strip()
    cat = read_catalog(out)
    assert f"{len(cat)} sources" in line and "PSF FWHM" in line
    assert len(cat) > 50
    assert cat["base_PsfFlux_instFlux"].unit == "ct"
    footprints = read_footprints(fps)
    assert set(footprints) == set(np.asarray(cat["id"]).tolist())
    fp = footprints[int(cat["id"][0])]
    assert fp.is_heavy and len(fp.image) == fp.area
    mask = read_exposure(masked).mask
    # DETECTED is the detection footprints, one 8-connected region each: an unblended
    # source's footprint is its region; a deblended parent lies in its region, less the
    # pixels no child claimed (strayFluxRule 'trim' drops them)
    regions, n = ndimage.label((mask & 32) != 0, structure=np.ones((3, 3), bool))
    top = [i for i in footprints if cat["parent"][cat["id"] == i][0] == 0]
    assert n == len(top)
    for i in top:
        own = regions[footprints[i].indices()]
        assert (own == own[0]).all() and own[0] > 0
        if cat["deblend_nChild"][cat["id"] == i][0] == 0:
            assert (regions == own[0]).sum() == footprints[i].area


def test_detect_reports_bad_config_and_bad_file(calexp, tmp_path, capsys):
    assert main(["detect", str(calexp), "-o", str(tmp_path / "c.fits"),
                 "--set", "detection.thresholdVlue=3"]) == 2
    assert "thresholdVlue" in capsys.readouterr().err
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"not a fits file at all")
    assert main(["detect", str(bad), "-o", str(tmp_path / "c.fits")]) == 2
    assert "FITS" in capsys.readouterr().err


def test_forced_at_a_plain_csv_of_positions(calexp, tmp_path, capsys):
    truth = read_catalog(calexp.with_name("field_truth.fits"))
    # isolated stars: a forced PSF flux includes any neighbour's light within the PSF
    stars = truth[(truth["kind"] == "star") & (truth["psf_sn"] > 30) & ~truth["saturated"]
                  & ~truth["is_pair"] & (truth["nearest_px"] > 20)]
    assert len(stars) >= 10
    csv = tmp_path / "positions.csv"
    lines = ["ra,dec,name,type_flag"] + [f"{r['ra']:.10f},{r['dec']:.10f},s{i},0"
                                         for i, r in enumerate(stars)]
    csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "forced.fits"
    assert main(["forced", str(calexp), "--positions", str(csv), "-o", str(out), "-q"]) == 0
    n = len(stars)
    assert f"{n} positions, {n} measured" in capsys.readouterr().out
    table = read_catalog(out)
    assert table["name"].tolist() == [f"s{i}" for i in range(n)]
    ratio = np.asarray(table["base_PsfFlux_instFlux"]) / np.asarray(stars["flux"])
    # a 768² field holds ~30 PSF stars: the PSF model and its aperture correction are
    # good to a couple of percent here (the engine tests check 0.5 % on full fields)
    assert abs(np.median(ratio) - 1) < 0.03

    wide = tmp_path / "wide.fits"
    assert main(["forced", str(calexp), "--positions", str(csv), "-o", str(wide), "-q",
                 "--plugins", "base_CircularApertureFlux", "--aperture-radii", "20",
                 "--set", "psfSpatialOrder=0", "--set", "background.binSize=256"]) == 0
    table = read_catalog(wide)
    assert "base_CircularApertureFlux_20_0_instFlux" in table.colnames
    ratio = np.asarray(table["base_CircularApertureFlux_20_0_instFlux"]) / stars["flux"]
    assert abs(np.median(ratio) - 1) < 0.03


def test_forced_refuses_positions_without_coordinates(calexp, tmp_path, capsys):
    csv = tmp_path / "bad.csv"
    csv.write_text("a,b\n1,2\n")
    assert main(["forced", str(calexp), "--positions", str(csv), "-o",
                 str(tmp_path / "o.fits")]) == 2
    assert "ra and dec" in capsys.readouterr().err
    assert main(["forced", str(calexp), "--positions", str(csv), "-o",
                 str(tmp_path / "o.fits"), "--aperture-radii", "5"]) == 2
    assert "add it to plugins" in capsys.readouterr().err
    assert main(["forced", str(calexp), "--positions", str(csv), "-o",
                 str(tmp_path / "o.fits"), "--set", "psfOrder=1"]) == 2
    assert "unknown config key 'psfOrder'" in capsys.readouterr().err
    # the exposure has no PSF: characterized with the settings given, here ones that fail
    assert main(["forced", str(calexp), "--positions", str(tmp_path / "bad.csv"), "-o",
                 str(tmp_path / "o.fits"), "--set", "psfCandidateThreshold=1e9"]) == 2
    err = capsys.readouterr().err
    assert "none could be measured" in err and "psfCandidateThreshold" in err


def test_detect_on_the_obs_base_calexp_uses_its_archive(tmp_path, capsys):
    """The 64×32 HSC calexp is too small to characterize: with doMeasurePsf off it is
    measured with its archived GaussianPsf (sigma 4, FWHM 9.42 px) and ApCorrMap, and the
    CLI says where each came from. It holds only sky noise, so the catalog is empty."""
    from pathlib import Path

    calexp = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / (
        "hsc_obsbase_calexp.fits")
    out = tmp_path / "cat.fits"
    assert main(["detect", str(calexp), "-o", str(out), "--set",
                 "characterize.doMeasurePsf=false", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "0 sources" in text and "PSF FWHM 9.42 px" in text
    for line in ("psf: archive GaussianPsf", "photo_calib: archive PhotoCalib",
                 "ap_corr: archive ApCorrMap", "filter: archive FilterLabel"):
        assert f"  {line}\n" in text
    assert len(read_catalog(out)) == 0


# ----- reading options: --hdu and companion planes -------------------------------------------

LSST_BITS = "1=BAD,2=SAT,4=INTRP,8=CR,16=EDGE,32=DETECTED,64=DETECTED_NEGATIVE,128=SUSPECT," \
            "256=NO_DATA"


@pytest.fixture(scope="module")
def split_calexp(calexp, tmp_path_factory):
    """The calexp's planes as a survey publishes them: an image in a multi-extension file
    beside a decoy HDU, and variance, weight and data-quality maps in files of their own."""
    from astropy.io import fits

    root = tmp_path_factory.mktemp("split")
    with fits.open(calexp) as hdul:
        image, mask, variance = (hdul[n] for n in ("IMAGE", "MASK", "VARIANCE"))
        header = image.header.copy()
        del header["EXTNAME"], header["EXTTYPE"]
        fits.HDUList([fits.PrimaryHDU(),
                      fits.ImageHDU(np.zeros((5, 5), np.float32), name="DECOY"),
                      fits.ImageHDU(image.data, header=header, name="SCI")]
                     ).writeto(root / "sci.fits")
        fits.PrimaryHDU(variance.data).writeto(root / "var.fits")
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(1 / variance.data, name="SCI")]
                     ).writeto(root / "wht.fits")
        fits.PrimaryHDU(mask.data).writeto(root / "dq.fits")
    return root


def test_detect_on_split_planes_equals_the_calexp(calexp, split_calexp, tmp_path):
    base = ["--set", "detection.thresholdValue=10", "-q"]
    whole, split, weighted = (tmp_path / f"{n}.fits" for n in ("whole", "split", "weighted"))
    assert main(["detect", str(calexp), "-o", str(whole), *base]) == 0
    sci = str(split_calexp / "sci.fits")
    assert main(["detect", sci, "--hdu", "SCI", "--variance", str(split_calexp / "var.fits"),
                 "--mask", str(split_calexp / "dq.fits"), "--mask-bits", LSST_BITS,
                 "-o", str(split), *base]) == 0
    assert main(["detect", sci, "--hdu", "2", "--weight", str(split_calexp / "wht.fits"),
                 "--mask", str(split_calexp / "dq.fits"), "--mask-bits", LSST_BITS,
                 "-o", str(weighted), *base]) == 0
    a, b, c = read_catalog(whole), read_catalog(split), read_catalog(weighted)
    assert len(a) > 50 and len(a) == len(b) == len(c)
    for column in ("base_SdssCentroid_x", "base_PsfFlux_instFlux", "base_PsfFlux_instFluxErr",
                   "coord_ra"):
        np.testing.assert_array_equal(b[column], a[column])
        # 1/(1/v) in float32 is v to a rounding: the errors follow the weight to 1e-6
        np.testing.assert_allclose(c[column], a[column], rtol=2e-6)


def test_forced_reads_companions_too(calexp, split_calexp, tmp_path, capsys):
    csv = tmp_path / "xy.csv"
    csv.write_text("x,y\n300.0,300.0\n400.5,120.25\n")
    plain, whole = tmp_path / "plain.fits", tmp_path / "whole.fits"
    assert main(["forced", str(calexp), "--positions", str(csv), "-o", str(whole), "-q"]) == 0
    assert main(["forced", str(split_calexp / "sci.fits"), "--hdu", "SCI",
                 "--weight", str(split_calexp / "wht.fits"), "--mask",
                 str(split_calexp / "dq.fits"), "--mask-bits", LSST_BITS,
                 "--positions", str(csv), "-o", str(plain), "-q"]) == 0
    a, b = read_catalog(whole), read_catalog(plain)
    np.testing.assert_allclose(b["base_PsfFlux_instFluxErr"], a["base_PsfFlux_instFluxErr"],
                               rtol=2e-6)


def test_reading_options_are_refused_with_their_cause(split_calexp, tmp_path, capsys):
    sci, out = str(split_calexp / "sci.fits"), str(tmp_path / "c.fits")
    assert main(["detect", sci, "--hdu", "NOPE", "-o", out]) == 2
    err = capsys.readouterr().err
    assert "no HDU is named 'NOPE'" in err and "#2 image SCI" in err
    assert main(["detect", sci, "--mask", str(split_calexp / "dq.fits"),
                 "--mask-bits", "3=BAD", "-o", out]) == 2
    assert "3 is not a single bit" in capsys.readouterr().err
    assert main(["detect", sci, "--hdu", "SCI", "--weight", "[DECOY]", "-o", out]) == 2
    assert "the weight map the image file[DECOY]: it has shape (5, 5)" in \
        capsys.readouterr().err
    assert main(["detect", sci, "--mask-codes", "decam", "-o", out]) == 2
    assert "needs a data-quality map" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: one of --variance and --weight
        main(["detect", sci, "--variance", "a.fits", "--weight", "b.fits", "-o", out])
    assert "not allowed with argument" in capsys.readouterr().err


def test_simulate_writes_plain_frames_and_variants(tmp_path, capsys):
    path = tmp_path / "raw.fits.fz"
    assert main(["simulate", str(path), "--width", "256", "--height", "256", "--stars", "40",
                 "--galaxies", "10", "--psf", "moffat", "--beta", "2.5", "--ellipticity",
                 "0.05", "--sky-in", "--sky-gradient", "200", "--encoding", "rice"]) == 0
    assert "plain image (sky in), moffat PSF" in capsys.readouterr().out
    frame = read_exposure(path)
    assert frame.background is None and not frame.mask.any()
    assert np.median(frame.image) > 800
    assert len(read_catalog(tmp_path / "raw_truth.fits")) == 40 + 10 + 3
    scaled = tmp_path / "scaled.fits"
    assert main(["simulate", str(scaled), "--width", "256", "--height", "256", "--stars", "40",
                 "--galaxy-fraction", "0.5", "--encoding", "int16"]) == 0
    with fits.open(scaled) as hdul:
        assert hdul["IMAGE"].header["BITPIX"] == 16 and "BSCALE" in hdul["IMAGE"].header
    assert main(["simulate", str(scaled), "--psf", "kolmogorov", "--ellipticity", "0.1"]) == 2
    assert "psf_ellipticity needs" in capsys.readouterr().err
