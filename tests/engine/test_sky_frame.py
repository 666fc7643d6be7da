"""Celestial frames: every pixel ↔ sky conversion gives ICRS, against astropy's own answers.

Each WCS (frame × projection) is checked on a grid over its image: ``Exposure.pixel_to_sky``
against astropy's ``WCS.pixel_to_world(...).icrs`` where astropy names the frame right, and
always against ``SkyCoord(lon, lat, frame=F).icrs`` with ``F`` written out here; and
``Exposure.sky_to_pixel`` of those ICRS positions against astropy's inverse, all to 1 mas.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import (
    FK4,
    FK5,
    ICRS,
    BarycentricMeanEcliptic,
    BaseCoordinateFrame,
    Galactic,
    SkyCoord,
    Supergalactic,
)
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS, FITSFixedWarning

from app.engine.exposure import Exposure
from app.engine.sky_frame import UnsupportedSkyFrame, frame_of, named_frame

WIDTH, HEIGHT = 120, 90
XY0 = (1000, -40)  # a parent frame, so the shift is checked too
SCALE = 0.2 / 3600  # deg per pixel
MAS = 1e-3 / 3600  # deg
REF = (201.37, -25.71)  # reference (lon, lat): generic, away from poles and RA = 0

# (name, header cards, the frame of the WCS's world coordinates, whether astropy's own
# pixel_to_world names it right)
FRAMES: list[tuple[str, dict[str, object], BaseCoordinateFrame, bool]] = [
    ("icrs", {"RADESYS": "ICRS"}, ICRS(), True),
    ("icrs-by-default", {}, ICRS(), True),
    ("fk5-j2000", {"RADESYS": "FK5", "EQUINOX": 2000.0}, FK5(equinox="J2000"), True),
    ("fk5-default-equinox", {"RADESYS": "FK5"}, FK5(equinox="J2000"), True),
    ("fk5-j1975", {"RADESYS": "FK5", "EQUINOX": 1975.0}, FK5(equinox="J1975"), True),
    ("fk4-b1950", {"RADESYS": "FK4"}, FK4(equinox="B1950", obstime="B1950"), True),
    ("fk4-by-equinox", {"EQUINOX": 1950.0}, FK4(equinox="B1950", obstime="B1950"), True),
    ("fk4-by-epoch", {"EPOCH": 1950.0}, FK4(equinox="B1950", obstime="B1950"), True),
    # astropy's pixel_to_world leaves the observation date out of FK4; the FITS standard
    # (Paper II §3.1) and AST use it
    ("fk4-observed", {"RADESYS": "FK4", "EQUINOX": 1950.0, "MJD-OBS": 57828.26},
     FK4(equinox="B1950", obstime=Time(57828.26, format="mjd", scale="utc")), False),
    ("galactic", {"CTYPE": ("GLON", "GLAT")}, Galactic(), True),
    ("galactic-with-radesys", {"CTYPE": ("GLON", "GLAT"), "RADESYS": "ICRS"}, Galactic(),
     True),
    # astropy calls ecliptic WCSs ICRS
    ("ecliptic", {"CTYPE": ("ELON", "ELAT")}, BarycentricMeanEcliptic(equinox="J2000"), False),
    ("ecliptic-j2020", {"CTYPE": ("ELON", "ELAT"), "EQUINOX": 2020.0},
     BarycentricMeanEcliptic(equinox="J2020"), False),
    ("supergalactic", {"CTYPE": ("SLON", "SLAT")}, Supergalactic(), False),
]

# projection code → extra cards (distortion or projection parameters)
SIP = {"A_ORDER": 2, "B_ORDER": 2, "A_2_0": 3e-6, "A_1_1": -2e-6, "A_0_2": 1.5e-6,
       "B_2_0": -1e-6, "B_1_1": 2.5e-6, "B_0_2": 2e-6}
TPV = {"PV1_0": 0.0, "PV1_1": 1.0, "PV1_2": 0.0, "PV1_4": 0.004, "PV1_5": 0.002,
       "PV1_7": 0.03, "PV2_0": 0.0, "PV2_1": 1.0, "PV2_2": 0.0, "PV2_4": -0.003,
       "PV2_6": 0.002, "PV2_8": 0.02}
PROJECTIONS: dict[str, dict[str, object]] = {
    "TAN": {}, "TAN-SIP": SIP, "TPV": TPV,
    "ZPN": {"PV2_0": 0.0, "PV2_1": 1.0, "PV2_2": 0.0, "PV2_3": 20.0},
    "CEA": {"PV2_1": 1.0}, "CAR": {}, "SIN": {}, "AIT": {}, "STG": {},
}


def make_wcs(cards: dict[str, object], projection: str = "TAN",
             ctype: tuple[str, str] = ("RA", "DEC"), swap: bool = False) -> WCS:
    """A WCS with reference point REF at the image centre, 0.2″ pixels, rotated 30°."""
    cards = dict(cards)
    lon, lat = cards.pop("CTYPE", ctype)  # type: ignore[misc]
    header = fits.Header()
    header["NAXIS"], header["NAXIS1"], header["NAXIS2"] = 2, WIDTH, HEIGHT
    axes = [(f"{lon:-<4}-{projection}", REF[0]), (f"{lat:-<4}-{projection}", REF[1])]
    if swap:
        axes.reverse()
    for i, (ctype_i, crval) in enumerate(axes, start=1):
        header[f"CTYPE{i}"], header[f"CRVAL{i}"] = ctype_i, crval
        header[f"CRPIX{i}"] = (WIDTH if i == 1 else HEIGHT) / 2 + 0.3
    th = np.deg2rad(30.0)
    cd = SCALE * np.array([[-np.cos(th), np.sin(th)], [np.sin(th), np.cos(th)]])
    if swap:
        cd = cd[::-1]
    for i in range(2):
        for j in range(2):
            header[f"CD{i + 1}_{j + 1}"] = cd[i, j]
    header.update({**PROJECTIONS[projection], **cards})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def grid() -> tuple[np.ndarray, np.ndarray]:
    """Array-frame pixel positions over the image, edges and corners included."""
    x, y = np.meshgrid(np.linspace(-0.5, WIDTH - 0.5, 9), np.linspace(-0.5, HEIGHT - 0.5, 7))
    return x.ravel(), y.ravel()


def exposure_with(wcs: WCS) -> Exposure:
    shape = (HEIGHT, WIDTH)
    return Exposure(np.zeros(shape, np.float32), np.zeros(shape, np.int32),
                    np.ones(shape, np.float32), wcs=wcs, xy0=XY0)


def separation_mas(ra: np.ndarray, dec: np.ndarray, want: SkyCoord) -> np.ndarray:
    return SkyCoord(ra * u.deg, dec * u.deg).separation(want.icrs).to_value(u.mas)


@pytest.mark.parametrize("projection", list(PROJECTIONS))
@pytest.mark.parametrize(("name", "cards", "frame", "astropy_right"), FRAMES,
                         ids=[f[0] for f in FRAMES])
def test_pixel_to_sky_is_icrs_per_frame_and_projection(
        name: str, cards: dict, frame: BaseCoordinateFrame, astropy_right: bool,
        projection: str) -> None:
    wcs = make_wcs(cards, projection)
    exposure = exposure_with(wcs)
    ax, ay = grid()
    ra, dec = exposure.pixel_to_sky(ax + XY0[0], ay + XY0[1])
    lon, lat = wcs.all_pix2world(ax, ay, 0)
    want = SkyCoord(lon * u.deg, lat * u.deg, frame=frame)
    assert separation_mas(ra, dec, want).max() < 1.0
    if astropy_right:
        assert separation_mas(ra, dec, wcs.pixel_to_world(ax, ay)).max() < 1.0
    if name not in ("icrs", "icrs-by-default"):
        # the conversion matters: naive lon, lat would be off by more than 1 mas
        assert separation_mas(lon, lat, want).max() > 1.0

    # ICRS positions back to pixels: astropy transforms to the WCS's frame, then inverts
    x, y = exposure.sky_to_pixel(ra, dec)
    native = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs").transform_to(frame)
    sph = native.represent_as("unitspherical")
    wx, wy = wcs.all_world2pix(sph.lon.deg, sph.lat.deg, 0)
    tolerance = 1.0 * MAS / SCALE  # 1 mas in pixels
    np.testing.assert_allclose(x - XY0[0], wx, rtol=0, atol=tolerance)
    np.testing.assert_allclose(y - XY0[1], wy, rtol=0, atol=tolerance)
    np.testing.assert_allclose(x - XY0[0], ax, rtol=0, atol=tolerance)
    np.testing.assert_allclose(y - XY0[1], ay, rtol=0, atol=tolerance)
    if astropy_right:
        px, py = wcs.world_to_pixel(SkyCoord(ra * u.deg, dec * u.deg, frame="icrs"))
        np.testing.assert_allclose(x - XY0[0], px, rtol=0, atol=tolerance)
        np.testing.assert_allclose(y - XY0[1], py, rtol=0, atol=tolerance)


@pytest.mark.parametrize(("name", "conversion", "equinox"), [
    ("icrs", "none", None), ("fk5-j2000", "rotation", "J2000.000"),
    ("fk5-j1975", "rotation", "J1975.000"), ("galactic", "rotation", None),
    ("ecliptic", "rotation", "J2000.000"), ("ecliptic-j2020", "rotation", "J2020.000"),
    ("supergalactic", "rotation", None), ("fk4-b1950", "astropy", "B1950.000"),
    ("fk4-observed", "astropy", "B1950.000"),
])
def test_fixed_rotations_are_matrices_and_fk4_is_astropy(
        name: str, conversion: str, equinox: str | None) -> None:
    """FK5 at an equinox, galactic and the barycentric ecliptic are fixed rotations of ICRS
    (the matrix reproduces astropy to 1 µas everywhere); FK4's E-terms are not."""
    cards, frame = next((c, f) for n, c, f, _ in FRAMES if n == name)
    sky = frame_of(make_wcs(cards))
    assert (sky.conversion, sky.equinox) == (conversion, equinox)
    if sky.rotation is not None:
        np.testing.assert_allclose(sky.rotation @ sky.rotation.T, np.eye(3), atol=1e-15)
    rng = np.random.default_rng(5)
    lon = rng.uniform(0, 360, 2000)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 2000)))
    ra, dec = sky.to_icrs(lon, lat)
    want = SkyCoord(lon * u.deg, lat * u.deg, frame=frame)
    assert separation_mas(ra, dec, want).max() < 1e-3  # 1 µas
    back_lon, back_lat = sky.from_icrs(ra, dec)
    back = SkyCoord(back_lon * u.deg, back_lat * u.deg, frame=frame)
    assert back.separation(want).to_value(u.mas).max() < 1e-3


def test_fk4_e_terms_are_not_a_rotation() -> None:
    """Why FK4 goes through astropy: the best matrix misses by far more than 1 mas."""
    sky = frame_of(make_wcs({"RADESYS": "FK4"}))
    fk5 = frame_of(make_wcs({"RADESYS": "FK5"}))
    lon = np.array([0.0, 90.0, 200.0, 300.0])
    lat = np.array([0.0, 45.0, -60.0, 10.0])
    ra, dec = sky.to_icrs(lon, lat)
    # the E-terms alone move positions by up to 0.34″, differently in each direction
    no_e = SkyCoord(lon * u.deg, lat * u.deg, frame="fk4noeterms").icrs
    shift = separation_mas(ra, dec, no_e)
    assert shift.max() > 100 and np.ptp(shift) > 10
    assert fk5.rotation is not None and sky.rotation is None


def test_icrs_adds_nothing() -> None:
    """An ICRS WCS's answers are the WCS's own numbers, untouched."""
    wcs = make_wcs({"RADESYS": "ICRS"})
    exposure = exposure_with(wcs)
    ax, ay = grid()
    ra, dec = exposure.pixel_to_sky(ax + XY0[0], ay + XY0[1])
    want_ra, want_dec = wcs.all_pix2world(ax, ay, 0)
    np.testing.assert_array_equal(ra, want_ra)
    np.testing.assert_array_equal(dec, want_dec)
    assert exposure.sky_frame.rotation is not None and exposure.sky_frame.conversion == "none"


def test_latitude_first_axes() -> None:
    """CTYPE1 = DEC, CTYPE2 = RA: world coordinates come back in axis order."""
    wcs = make_wcs({"RADESYS": "FK5"}, swap=True)
    assert (wcs.wcs.lng, wcs.wcs.lat) == (1, 0)
    exposure = exposure_with(wcs)
    ax, ay = grid()
    ra, dec = exposure.pixel_to_sky(ax + XY0[0], ay + XY0[1])
    assert separation_mas(ra, dec, wcs.pixel_to_world(ax, ay)).max() < 1.0
    x, y = exposure.sky_to_pixel(ra, dec)
    np.testing.assert_allclose(x - XY0[0], ax, atol=MAS / SCALE)
    np.testing.assert_allclose(y - XY0[1], ay, atol=MAS / SCALE)


def test_nan_positions_stay_nan_in_every_conversion() -> None:
    for cards in ({"RADESYS": "FK5"}, {"RADESYS": "FK4"}):
        exposure = exposure_with(make_wcs(cards))
        ra, dec = exposure.pixel_to_sky(np.array([np.nan, XY0[0]]), np.array([1.0, XY0[1]]))
        assert np.isnan(ra[0]) and np.isfinite(ra[1])
        x, _ = exposure.sky_to_pixel(np.array([np.nan, ra[1]]), np.array([0.0, dec[1]]))
        assert np.isnan(x[0]) and x[1] == pytest.approx(XY0[0], abs=1e-6)


def test_frames_that_do_not_convert_say_so() -> None:
    with pytest.raises(UnsupportedSkyFrame, match="GAPPT"):
        frame_of(make_wcs({"RADESYS": "GAPPT"}))
    with pytest.raises(UnsupportedSkyFrame, match="HPLN"):
        frame_of(make_wcs({"CTYPE": ("HPLN", "HPLT")}))


def test_named_frame_converts_icrs_to_fk5_as_astropy() -> None:
    ra, dec = np.array([10.0, 250.0]), np.array([-30.0, 60.0])
    lon, lat = named_frame("fk5", 2000.0).from_icrs(ra, dec)
    want = SkyCoord(ra * u.deg, dec * u.deg).fk5
    np.testing.assert_allclose(lon, want.ra.deg, atol=1e-9)
    np.testing.assert_allclose(lat, want.dec.deg, atol=1e-9)
