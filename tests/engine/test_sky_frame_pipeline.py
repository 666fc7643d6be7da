"""The pipeline and forced photometry on images whose WCS is not ICRS.

The simulator writes its TAN-SIP WCS in galactic, ecliptic or FK5 coordinates on request
(``SimulationConfig.sky_frame``): the same pixels ↔ sky mapping, so its ICRS truth holds and
the frame is the only thing that changed. Each exposure is written to FITS and read back, in
a parent frame (xy0 ≠ 0), as a user's file would be.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table
from scipy.spatial import cKDTree

from app.engine.config import DetectConfig
from app.engine.forced import run_forced
from app.engine.pipeline import DetectResult, run_detect
from app.engine.simulate import SimulatedExposure, SimulationConfig, simulate_exposure
from app.io.fits_exposure import read_exposure, write_exposure

XY0 = (3000, 1200)
FRAMES = {"galactic": ("galactic", {}),
          "ecliptic": ("barycentricmeanecliptic", {"equinox": "J2000"}),
          "fk5": ("fk5", {"equinox": "J2000"})}


def field(sky_frame: str) -> SimulatedExposure:
    """400² px of bright isolated stars, the WCS written in ``sky_frame``."""
    return simulate_exposure(SimulationConfig(
        width=400, height=400, n_stars=70, star_mag_range=(17.0, 21.5), n_galaxies=5,
        n_pairs=0, n_saturated=0, min_separation_px=20.0, ra0=262.0, dec0=-28.5, seed=7,
        sip=True, sky_frame=sky_frame))


def through_file(sim: SimulatedExposure) -> DetectResult:
    """The exposure written and read back (as a user's file would be), then detected."""
    exposure = sim.exposure.copy()
    exposure.xy0 = XY0
    buffer = io.BytesIO()
    write_exposure(exposure, buffer)
    buffer.seek(0)
    return run_detect(read_exposure(buffer), DetectConfig())


@pytest.fixture(scope="module")
def galactic() -> tuple[SimulatedExposure, DetectResult]:
    sim = field("galactic")
    return sim, through_file(sim)


@pytest.mark.parametrize("kind", list(FRAMES))
def test_the_simulated_sky_is_the_same_in_every_frame(kind: str) -> None:
    """The test's premise: a simulation written in another frame maps its pixels to the
    same ICRS sky as the ICRS one (so its ICRS truth holds), to 1 µas; its numbers are not
    ICRS RA, Dec at all."""
    icrs = field("icrs").exposure.wcs
    wcs = field(kind).exposure.wcs
    x, y = np.meshgrid(np.linspace(-0.5, 399.5, 6), np.linspace(-0.5, 399.5, 6))
    want = icrs.pixel_to_world(x.ravel(), y.ravel())
    lon, lat = wcs.all_pix2world(x.ravel(), y.ravel(), 0)
    frame, attrs = FRAMES[kind]
    got = SkyCoord(lon * u.deg, lat * u.deg, frame=frame, **attrs).icrs
    assert got.separation(want).to_value(u.mas).max() < 1e-3
    off = SkyCoord(lon * u.deg, lat * u.deg).separation(want).to_value(u.mas).min()
    assert off > (10 if kind == "fk5" else 3.6e7)  # FK5 J2000 is ~20 mas from ICRS


def catalog_coords_match_truth(sim: SimulatedExposure, result: DetectResult, kind: str
                               ) -> None:
    wcs = sim.exposure.wcs
    frame, attrs = FRAMES[kind]
    catalog = result.catalog
    x = np.asarray(catalog["base_SdssCentroid_x"], float)
    y = np.asarray(catalog["base_SdssCentroid_y"], float)
    ra = np.asarray(catalog["coord_ra"], float)
    dec = np.asarray(catalog["coord_dec"], float)
    good = np.isfinite(x) & np.isfinite(ra)
    # coord_ra/coord_dec are astropy's ICRS of the catalog's own (parent-frame) x, y
    lon, lat = wcs.all_pix2world(x[good] - XY0[0], y[good] - XY0[1], 0)
    want = SkyCoord(lon * u.deg, lat * u.deg, frame=frame, **attrs).icrs
    got = SkyCoord(ra[good] * u.deg, dec[good] * u.deg)
    assert got.separation(want).to_value(u.mas).max() < 1.0
    # ... and land on the simulator's ICRS truth (to the centroid's noise)
    truth = sim.truth
    stars = np.asarray(truth["kind"]) == "star"
    tree = cKDTree(np.column_stack([truth["x"][stars] + XY0[0], truth["y"][stars] + XY0[1]]))
    dist, k = tree.query(np.column_stack([x[good], y[good]]))
    matched = dist < 1.0
    assert matched.sum() >= 40
    true = SkyCoord(np.asarray(truth["ra"])[stars][k[matched]] * u.deg,
                    np.asarray(truth["dec"])[stars][k[matched]] * u.deg)
    sep = got[matched].separation(true).to(u.arcsec).value
    assert np.median(sep) < 0.02  # 0.1 px; a frame mix-up would be degrees


def test_galactic_wcs_catalog_is_icrs(galactic) -> None:
    sim, result = galactic
    assert result.exposure.xy0 == XY0 and result.exposure.sky_frame.name == "galactic"
    catalog_coords_match_truth(sim, result, "galactic")


@pytest.mark.parametrize("kind", ["ecliptic", "fk5"])
def test_ecliptic_and_fk5_wcs_catalogs_are_icrs(kind: str) -> None:
    sim = field(kind)
    catalog_coords_match_truth(sim, through_file(sim), kind)


def test_forced_at_icrs_positions_on_a_galactic_image(galactic) -> None:
    """ICRS positions from a client are converted to galactic before the WCS: every bright
    star is found on the image with its true flux."""
    sim, result = galactic
    truth = sim.truth
    bright = ((np.asarray(truth["kind"]) == "star") & (np.asarray(truth["psf_sn"]) > 50)
              & (np.asarray(truth["nearest_px"]) > 20))
    assert bright.sum() >= 20
    out = run_forced(result.exposure, Table({"ra": truth["ra"][bright],
                                             "dec": truth["dec"][bright]}))
    assert not np.asarray(out["base_PixelFlags_flag_offimage"]).any()
    np.testing.assert_allclose(out["base_TransformedCentroid_x"], truth["x"][bright] + XY0[0],
                               atol=1e-4)
    np.testing.assert_allclose(out["base_TransformedCentroid_y"], truth["y"][bright] + XY0[1],
                               atol=1e-4)
    flux = np.asarray(out["base_PsfFlux_instFlux"])
    err = np.asarray(out["base_PsfFlux_instFluxErr"])
    # PSF fluxes are tied to slot_CalibFlux: a star's light within 12 px
    ee12 = np.array([sim.psf.encircled_energy(x, y, 12.0) for x, y in
                     zip(truth["x"][bright], truth["y"][bright], strict=True)])
    expected = np.asarray(truth["flux"][bright]) * ee12
    assert abs(np.median(flux / expected) - 1) < 0.02
    pull = (flux - expected) / err
    assert np.abs(pull).max() < 6
