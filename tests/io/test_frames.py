"""Frames as files state them: xy0 from afw's keys (IRAF LTV only where it is afw's
convention, stated otherwise), and the WCS's celestial frame reaching ICRS through the reader.

The real files are read as published. hsc_afw_small.fits stores its MASK as uint16 through
BZERO, which the reader cannot load yet, so its frames are checked through
`read_exposure_metadata` (headers only).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS, FITSFixedWarning

from app.engine.exposure import Exposure
from app.io.fits_exposure import read_exposure, read_exposure_metadata, write_exposure
from app.io.frames import celestial_header, read_pixel_frame, xy0_cards

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
MAS = u.mas


def header_wcs(header: fits.Header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.meshgrid(np.linspace(-0.5, width - 0.5, 5), np.linspace(-0.5, height - 0.5, 4))
    return x.ravel(), y.ravel()


def corners_of(shape: tuple[int, int]) -> tuple[list[float], list[float]]:
    h, w = shape
    return [-0.5, w - 0.5, w - 0.5, -0.5], [-0.5, -0.5, h - 0.5, h - 0.5]


def assert_icrs(got: list | tuple, want: SkyCoord, tolerance_mas: float = 1.0) -> None:
    ra, dec = np.asarray(got, dtype=float).T if isinstance(got, list) else got
    sep = SkyCoord(ra * u.deg, dec * u.deg).separation(want.icrs).to_value(MAS)
    assert sep.max() < tolerance_mas, sep


# ----- pixel frame rules ------------------------------------------------------------------


def frame_of(cards: dict, afw_layout: bool = False):
    return read_pixel_frame(fits.Header(list(cards.items())), afw_layout=afw_layout)


AFW_A = {"CTYPE1A": "LINEAR", "CTYPE2A": "LINEAR", "CRPIX1A": 1, "CRPIX2A": 1,
         "CRVAL1A": 100, "CRVAL2A": 250}


def test_afw_a_wcs_is_xy0_and_agreeing_ltv_is_silent() -> None:
    frame = frame_of({**AFW_A, "LTV1": -100, "LTV2": -250})
    assert frame.xy0 == (100, 250) and frame.note is None
    assert frame.source.startswith("afw A WCS")


def test_afw_a_wcs_wins_over_disagreeing_ltv_with_a_note() -> None:
    frame = frame_of({**AFW_A, "LTV1": -3, "LTV2": -4})
    assert frame.xy0 == (100, 250)
    assert "LTV1, LTV2 = (-3, -4)" in frame.note and "(x + 4, y + 5)" in frame.note


def test_a_wcs_not_at_crpix_1_is_not_afw_xy0() -> None:
    """afw reads xy0 from the A keys only when CRPIX1A = CRPIX2A = 1; a celestial
    alternate WCS named A is not an origin either."""
    assert frame_of({**AFW_A, "CRPIX1A": 5}).xy0 == (0, 0)
    assert frame_of({**AFW_A, "CTYPE1A": "RA---TAN", "CTYPE2A": "DEC--TAN"}).xy0 == (0, 0)


def test_ltv_alone_is_xy0_only_in_an_lsst_layout() -> None:
    assert frame_of({"LTV1": -7, "LTV2": -11}, afw_layout=True).xy0 == (7, 11)
    plain = frame_of({"LTV1": -7, "LTV2": -11})
    assert plain.xy0 == (0, 0)
    assert "not applied" in plain.note and "(x + 8, y + 12)" in plain.note


def test_iraf_ltm_is_stated_with_its_conversion() -> None:
    binned = frame_of({"LTV1": 0.25, "LTV2": 0.25, "LTM1_1": 0.5, "LTM2_2": 0.5},
                      afw_layout=True)
    assert binned.xy0 == (0, 0)  # a binned frame is no xy0, even in an LSST layout
    assert "LTM = [[0.5, 0], [0, 0.5]]" in binned.note
    assert "((x + 0.75) / 0.5, (y + 0.75) / 0.5)" in binned.note
    rotated = frame_of({"LTV1": 0, "LTV2": 0, "LTM1_2": 1.0, "LTM2_1": 1.0, "LTM1_1": 0.0,
                        "LTM2_2": 0.0})
    assert "LTM⁻¹" in rotated.note


def test_no_keys_and_zero_ltv_are_the_array_index_without_a_note() -> None:
    for cards in ({}, {"LTV1": 0.0, "LTV2": 0.0}, {"LTM1_1": 1.0, "LTM2_2": 1.0}):
        frame = frame_of(cards)
        assert frame.xy0 == (0, 0) and frame.note is None


def test_xy0_cards_read_back_as_afw_writes_them() -> None:
    header = fits.Header(xy0_cards(231324, -5))
    frame = read_pixel_frame(header, afw_layout=False)
    assert frame.xy0 == (231324, -5) and frame.note is None


# ----- real files -------------------------------------------------------------------------


def test_decam_cutout_xy_are_array_indices_and_ltv_is_stated() -> None:
    """LTV1 = LTV2 = -1 in a plain DECam image: not applied (x, y were array index + 1)."""
    path = REAL / "decam_ooi.fits"
    exposure = read_exposure(path)
    assert exposure.xy0 == (0, 0)
    meta = read_exposure_metadata(path)
    assert meta["xy0"] == (0, 0) and meta["pixel_frame"]["xy0"] == [0, 0]
    note = meta["pixel_frame"]["note"]
    assert "LTV1, LTV2 = (-1, -1)" in note and "(x + 2, y + 2)" in note
    assert note in exposure.info.notes
    assert exposure.info.provenance["pixel_frame"].startswith("parent frame, xy0 = (0, 0)")
    # The extension inherits RADESYS = 'FK5' and EQUINOX = 2000 from the primary header
    # (INHERIT = T); the primary's deprecated RADECSYS = 'ICRS' disagrees, and is named.
    sky = meta["sky_frame"]
    assert (sky["frame"], sky["equinox"], sky["conversion"]) == ("fk5", "J2000.000", "rotation")
    assert any("RADECSYS" in n for n in sky["notes"])
    with fits.open(path) as hdul:
        header = hdul[1].header.copy()
    header["RADESYS"], header["EQUINOX"] = "FK5", 2000.0
    wcs = header_wcs(header)
    x, y = grid(*exposure.shape[::-1])
    assert_icrs(exposure.pixel_to_sky(x, y), wcs.pixel_to_world(x, y))
    assert_icrs(meta["corners"], wcs.pixel_to_world(*corners_of(exposure.shape)))


def test_hsc_afw_cutout_xy0_and_fk5_corners_from_headers() -> None:
    """xy0 = (100, 100) from the A WCS (LTV agrees); its TAN-SIP WCS is FK5 J2000, so the
    stored corners carry the FK5 → ICRS shift (reading its pixels waits for the uint16 MASK
    fix; these are the headers)."""
    path = REAL / "hsc_afw_small.fits"
    meta = read_exposure_metadata(path)
    assert meta["xy0"] == (100, 100)
    assert meta["pixel_frame"]["source"].startswith("afw A WCS") and not meta["pixel_frame"][
        "note"]
    assert (meta["sky_frame"]["frame"], meta["sky_frame"]["equinox"]) == ("fk5", "J2000.000")
    with fits.open(path) as hdul:
        wcs = header_wcs(hdul[1].header)
    want = wcs.pixel_to_world(*corners_of(meta["shape"]))
    assert_icrs(meta["corners"], want)
    naive = SkyCoord(want.ra, want.dec, frame="icrs")  # FK5 numbers called ICRS
    assert_icrs(meta["corners"], naive, tolerance_mas=30)
    with pytest.raises(AssertionError):
        assert_icrs(meta["corners"], naive)  # ... which is more than 1 mas off


def test_sdss_coadd_xy0_from_afw_keys_and_cea_sky() -> None:
    path = REAL / "sdss_mini-r-3-113_0.fits.gz"
    exposure = read_exposure(path)
    assert exposure.xy0 == (231324, 0)
    assert read_exposure_metadata(path)["xy0"] == (231324, 0)
    with fits.open(path) as hdul:
        wcs = header_wcs(hdul[1].header)
    x, y = grid(*exposure.shape[::-1])
    assert_icrs(exposure.pixel_to_sky(x + 231324, y), wcs.pixel_to_world(x, y))


# ----- celestial frames through the reader ------------------------------------------------


def small_exposure(wcs: WCS, xy0: tuple[int, int] = (40, 60)) -> Exposure:
    rng = np.random.default_rng(1)
    shape = (50, 70)
    return Exposure(rng.normal(0, 1, shape).astype(np.float32), np.zeros(shape, np.int32),
                    np.ones(shape, np.float32), wcs=wcs, xy0=xy0)


def celestial_wcs(ctype: tuple[str, str], **cards: object) -> WCS:
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = ctype
    header["CRPIX1"], header["CRPIX2"] = 35.0, 25.0
    header["CRVAL1"], header["CRVAL2"] = 305.2, 40.8
    header["CD1_1"], header["CD2_2"] = -0.2 / 3600, 0.2 / 3600
    header.update({key.replace("_", "-"): value for key, value in cards.items()})
    return header_wcs(header)


@pytest.mark.parametrize(("ctype", "cards", "frame", "description"), [
    (("GLON-TAN", "GLAT-TAN"), {}, "galactic", ("galactic", None, None, "rotation")),
    (("RA---TAN", "DEC--TAN"), {"RADESYS": "FK5", "EQUINOX": 1975.0},
     "fk5", ("fk5", "J1975.000", None, "rotation")),
    (("RA---TAN", "DEC--TAN"), {"RADESYS": "FK4", "MJD_OBS": 50000.0},
     "fk4", ("fk4", "B1950.000", "1995-10-10T00:00:00.000", "astropy")),
    (("ELON-SIN", "ELAT-SIN"), {}, "barycentricmeanecliptic",
     ("barycentricmeanecliptic", "J2000.000", None, "rotation")),
])
def test_written_and_read_back_the_frame_holds(
        tmp_path: Path, ctype: tuple[str, str], cards: dict, frame: str,
        description: tuple) -> None:
    """write_exposure keeps the WCS in its frame; reading it gives ICRS corners, the frame
    in the metadata and the provenance, and the same ICRS positions as before."""
    exposure = small_exposure(celestial_wcs(ctype, **cards))
    path = tmp_path / "calexp.fits"
    write_exposure(exposure, path)
    back = read_exposure(path)
    meta = read_exposure_metadata(path)
    sky = meta["sky_frame"]
    assert (sky["frame"], sky["equinox"], sky["obstime"], sky["conversion"]) == description
    assert back.info.provenance["sky_frame"].startswith(f"WCS in {frame}")
    x, y = grid(70, 50)
    want = exposure.pixel_to_sky(x + 40, y + 60)
    np.testing.assert_allclose(back.pixel_to_sky(x + 40, y + 60), want, rtol=0, atol=1e-10)
    lon, lat = exposure.wcs.all_pix2world(*corners_of((50, 70)), 0)
    native = {"galactic": "galactic", "fk5": "fk5", "fk4": "fk4",
              "barycentricmeanecliptic": "barycentricmeanecliptic"}[frame]
    coord = SkyCoord(lon * u.deg, lat * u.deg, frame=native, **(
        {"equinox": "J1975"} if frame == "fk5" else
        {"obstime": Time(50000.0, format="mjd", scale="utc")} if frame == "fk4" else {}))
    assert_icrs(meta["corners"], coord)


def test_inherit_takes_the_primary_frame_keys() -> None:
    primary = fits.Header([("RADESYS", "FK5"), ("EQUINOX", 1990.0), ("MJD-OBS", 57000.0)])
    image = celestial_wcs(("RA---TAN", "DEC--TAN")).to_header()
    for key in ("RADESYS", "EQUINOX", "MJD-OBS", "DATE-OBS"):
        image.remove(key, ignore_missing=True)
    image["INHERIT"] = True
    header, notes = celestial_header(image, primary)
    assert (header["RADESYS"], header["EQUINOX"], header["MJD-OBS"]) == ("FK5", 1990.0, 57000.0)
    assert "RADESYS" not in image and not notes  # the image's own header is left alone
    image["INHERIT"] = False
    assert "EQUINOX" not in celestial_header(image, primary)[0]


def test_a_frame_that_does_not_convert_drops_the_wcs_with_a_note() -> None:
    wcs = celestial_wcs(("HPLN-TAN", "HPLT-TAN"))
    hdu = fits.PrimaryHDU(np.zeros((50, 70), np.float32), header=wcs.to_header())
    buffer = io.BytesIO()
    hdu.writeto(buffer)
    exposure = read_exposure(io.BytesIO(buffer.getvalue()))
    assert exposure.wcs is None
    assert any("HPLN" in n and "not used" in n for n in exposure.info.notes)
    meta = read_exposure_metadata(io.BytesIO(buffer.getvalue()))
    assert meta["corners"] is None and meta["sky_frame"]["frame"] is None
    assert "HPLN" in meta["sky_frame"]["notes"][0]
