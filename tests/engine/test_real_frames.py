"""The real frames of ../shared/data/real at default settings: every exposure gives a catalog,
and on the HSC, SDSS and DECam frames the centroids and aperture fluxes agree with photutils'
own measurement of the same pixels (a Gaussian fit for the centroid, exact circular apertures
at photutils' centroid on the background-subtracted image for the fluxes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from photutils.aperture import CircularAperture, aperture_photometry
from photutils.centroids import centroid_2dg, centroid_sources

from app.engine.config import radius_name
from app.engine.pipeline import DetectResult, run_detect
from app.io.fits_exposure import read_exposure
from app.io.read_options import MaskMap, PlaneRef, ReadOptions

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
DECAM = ReadOptions(weight=PlaneRef(REAL / "decam_oow.fits"),
                    mask=PlaneRef(REAL / "decam_ood.fits"),
                    mask_map=MaskMap.parse("codes", "decam"))
# each exposure (DECam's weight and data-quality maps are its companions): the fewest
# sources it must give, and where its PSF must come from
EXPOSURES = {
    "decam_ooi.fits": (DECAM, 10, ("measured", "simple")),
    "hsc_afw_small.fits": (None, 10, ("measured", "simple")),
    "hsc_obsbase_calexp.fits": (None, 0, ("exposure",)),  # 64×32 of sky: its archived PSF
    "ipdiffim_scienceMI.fits": (None, 5, ("measured", "simple")),
    "m51_kpno.fits": (None, 100, ("measured",)),
    "piff_sim_exp.fits": (None, 5, ("measured", "simple")),
    "sdss_mini-r-3-113_0.fits.gz": (None, 50, ("measured", "simple")),
}
RADII = (3.0, 4.5, 6.0, 9.0, 12.0)
_RUNS: dict[str, DetectResult] = {}


def detected(name: str) -> DetectResult:
    if name not in _RUNS:
        _RUNS[name] = run_detect(read_exposure(REAL / name, EXPOSURES[name][0]))
    return _RUNS[name]


def test_every_image_of_the_folder_is_an_exposure_here_or_a_companion():
    companions = {"decam_oow.fits", "decam_ood.fits"}
    assert {p.name for p in REAL.glob("*.fits*")} == set(EXPOSURES) | companions


@pytest.mark.parametrize("name", sorted(EXPOSURES))
def test_default_settings_give_a_catalog(name: str) -> None:
    _, fewest, sources = EXPOSURES[name]
    result = detected(name)
    assert len(result.catalog) >= fewest
    assert result.summary["psf_source"] in sources
    assert result.exposure.info.provenance["psf"]


def test_the_obs_base_calexp_is_measured_with_its_archive() -> None:
    info = detected("hsc_obsbase_calexp.fits").exposure.info
    assert info.provenance["psf"].startswith("archive GaussianPsf")
    assert info.provenance["ap_corr"] == "archive ApCorrMap"


def test_an_undecodable_archived_psf_is_named_and_measured() -> None:
    result = detected("piff_sim_exp.fits")
    assert any("PiffPsf not decoded" in note for note in result.exposure.info.notes)
    assert result.summary["psf_source"] != "exposure"


def _bright_isolated(result: DetectResult, min_snr: float) -> np.ndarray:
    cat = result.catalog
    ok = (np.asarray(cat["deblend_nChild"]) == 0) & (np.asarray(cat["parent"]) == 0)
    for flag in ("base_PixelFlags_flag_edge", "base_PixelFlags_flag_saturated",
                 "base_PixelFlags_flag_interpolatedCenter", "base_SdssCentroid_flag",
                 "base_PsfFlux_flag"):
        ok &= ~np.asarray(cat[flag])
    snr = np.asarray(cat["base_PsfFlux_instFlux"]) / np.asarray(cat["base_PsfFlux_instFluxErr"])
    return ok & (snr > min_snr)


@pytest.mark.parametrize(("name", "min_snr", "n_min", "centroid_px"), [
    ("sdss_mini-r-3-113_0.fits.gz", 50.0, 6, 0.1),
    ("decam_ooi.fits", 50.0, 3, 0.1),
    ("hsc_afw_small.fits", 20.0, 2, 0.1),  # its two isolated sources have S/N 20-28
])
def test_centroids_and_aperture_fluxes_agree_with_photutils(name, min_snr, n_min,
                                                            centroid_px) -> None:
    result = detected(name)
    exposure, cat = result.exposure, result.catalog
    ox, oy = exposure.xy0
    chosen = _bright_isolated(result, min_snr)
    assert chosen.sum() >= n_min
    x = np.asarray(cat["base_SdssCentroid_x"])[chosen] - ox
    y = np.asarray(cat["base_SdssCentroid_y"])[chosen] - oy
    image = exposure.image.astype(np.float64)
    box = 2 * int(np.ceil(result.summary["psf_fwhm_pixels"])) + 1
    px, py = centroid_sources(image, x, y, box_size=box, centroid_func=centroid_2dg)
    offset = np.hypot(px - x, py - y)
    assert np.median(offset) < centroid_px / 2, offset
    assert np.quantile(offset, 0.9) < centroid_px, offset
    for r in RADII:
        theirs = aperture_photometry(image, CircularAperture(np.column_stack([px, py]), r),
                                     method="exact")["aperture_sum"]
        ours = np.asarray(cat[f"base_CircularApertureFlux_{radius_name(r)}_instFlux"])[chosen]
        ratio = ours / np.asarray(theirs)
        assert np.median(np.abs(ratio - 1)) < 0.02, (r, ratio)
