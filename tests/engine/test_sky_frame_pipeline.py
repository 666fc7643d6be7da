"""The pipeline and forced photometry on images whose WCS is not ICRS.

A simulated exposure's ICRS TAN WCS is replaced by its twin in another frame: the same
tangent point and the same pixels ↔ sky mapping, written in galactic (or ecliptic)
coordinates. So the simulator's ICRS truth is the truth of the twin too, and the frame is the
only thing that changed.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.wcs import WCS
from scipy.spatial import cKDTree

from app.engine.config import DetectConfig
from app.engine.forced import run_forced
from app.engine.pipeline import DetectResult, run_detect
from app.engine.simulate import SimulatedExposure, SimulationConfig, simulate_exposure
from app.io.fits_exposure import read_exposure, write_exposure

XY0 = (3000, 1200)
TWINS = {
    "galactic": (("GLON-TAN", "GLAT-TAN"), "galactic", {}),
    "ecliptic": (("ELON-TAN", "ELAT-TAN"), "barycentricmeanecliptic", {"equinox": "J2000"}),
}


def twin(wcs: WCS, kind: str) -> WCS:
    """``wcs`` (TAN, ICRS) written in another frame: the tangent point converted and the CD
    matrix fitted to the rotated tangent plane (exact: both are gnomonic about one point)."""
    ctype, frame, attrs = TWINS[kind]
    ref = SkyCoord(*wcs.wcs.crval, unit="deg", frame="icrs").transform_to(frame)
    ref = ref.represent_as("unitspherical")

    def tangent_plane(cd: np.ndarray, crpix: np.ndarray) -> WCS:
        out = WCS(naxis=2)
        out.wcs.ctype = list(ctype)
        out.wcs.crval = [ref.lon.deg, ref.lat.deg]
        out.wcs.crpix, out.wcs.cd = crpix, cd
        out.wcs.set()
        return out

    probe = tangent_plane(np.eye(2), np.array([0.0, 0.0]))  # pixel = intermediate coords
    offsets = np.array([[0, 0], [400, 0], [0, 400], [400, 400], [-300, 200.0]])
    pix = wcs.wcs.crpix + offsets
    icrs = wcs.pixel_to_world(pix[:, 0] - 1, pix[:, 1] - 1)
    native = icrs.transform_to(frame).represent_as("unitspherical")
    iwc = np.column_stack(probe.all_world2pix(native.lon.deg, native.lat.deg, 1))
    cd = np.linalg.lstsq(offsets, iwc, rcond=None)[0].T
    return tangent_plane(cd, wcs.wcs.crpix.copy())


@pytest.fixture(scope="module")
def field() -> SimulatedExposure:
    return simulate_exposure(SimulationConfig(
        width=400, height=400, n_stars=70, star_mag_range=(17.0, 21.5), n_galaxies=5,
        n_pairs=0, n_saturated=0, min_separation_px=20.0, ra0=262.0, dec0=-28.5, seed=7))


def through_file(sim: SimulatedExposure, kind: str) -> tuple[WCS, DetectResult]:
    """The twin-WCS exposure written and read back (as a user's file would be), detected."""
    exposure = sim.exposure.copy()
    exposure.wcs = twin(sim.exposure.wcs, kind)
    exposure.xy0 = XY0
    buffer = io.BytesIO()
    write_exposure(exposure, buffer)
    buffer.seek(0)
    read = read_exposure(buffer)
    return exposure.wcs, run_detect(read, DetectConfig())


@pytest.fixture(scope="module")
def galactic(field: SimulatedExposure) -> tuple[WCS, DetectResult]:
    return through_file(field, "galactic")


@pytest.mark.parametrize("kind", list(TWINS))
def test_twin_is_the_same_mapping(field: SimulatedExposure, kind: str) -> None:
    """The test's premise: the twin WCS maps pixels to the same ICRS sky, to 1 µas."""
    wcs = twin(field.exposure.wcs, kind)
    x, y = np.meshgrid(np.linspace(-0.5, 399.5, 6), np.linspace(-0.5, 399.5, 6))
    want = field.exposure.wcs.pixel_to_world(x.ravel(), y.ravel())
    lon, lat = wcs.all_pix2world(x.ravel(), y.ravel(), 0)
    _, frame, attrs = TWINS[kind]
    got = SkyCoord(lon * u.deg, lat * u.deg, frame=frame, **attrs).icrs
    assert got.separation(want).to_value(u.mas).max() < 1e-3
    # ... while its numbers are not RA, Dec at all
    assert SkyCoord(lon * u.deg, lat * u.deg).separation(want).deg.min() > 10


def catalog_coords_match_truth(sim: SimulatedExposure, wcs: WCS, result: DetectResult,
                               frame: str, attrs: dict) -> None:
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


def test_galactic_wcs_catalog_is_icrs(field: SimulatedExposure, galactic) -> None:
    wcs, result = galactic
    assert result.exposure.xy0 == XY0
    catalog_coords_match_truth(field, wcs, result, "galactic", {})


def test_ecliptic_wcs_catalog_is_icrs(field: SimulatedExposure) -> None:
    wcs, result = through_file(field, "ecliptic")
    catalog_coords_match_truth(field, wcs, result, "barycentricmeanecliptic",
                               {"equinox": "J2000"})


def test_forced_at_icrs_positions_on_a_galactic_image(field: SimulatedExposure,
                                                      galactic) -> None:
    """ICRS positions from a client are converted to galactic before the WCS: every bright
    star is found on the image with its true flux."""
    _, result = galactic
    truth = field.truth
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
    ratio = flux / np.asarray(truth["flux"][bright])
    assert abs(np.median(ratio) - 1) < 0.02
    pull = (flux - np.asarray(truth["flux"][bright])) / err
    assert np.abs(pull).max() < 6
