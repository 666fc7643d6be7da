"""The celestial frame of a WCS, and every conversion between pixels and ICRS.

A FITS WCS gives world coordinates in its own frame: equatorial (``RA``/``DEC``) in the
``RADESYS`` ICRS, FK5 or FK4 at an ``EQUINOX``, galactic (``GLON``/``GLAT``), ecliptic
(``ELON``/``ELAT``) or supergalactic (``SLON``/``SLAT``). skyphot's catalogs, requests and
stored sky bounds are ICRS, as LSST's are: afw's SkyWcs maps the sky frame of every FITS WCS
it reads to ICRS (``geom/detail/frameSetUtils.cc``, ``readLsstSkyWcs``). Every pixel ↔ sky
conversion goes through `pixel_to_icrs` and `icrs_to_pixel` here (``Exposure.pixel_to_sky`` /
``sky_to_pixel`` wrap them), so no path can forget the frame.

FITS defaults (WCS Paper II §3.1, applied by wcslib and astropy alike): no ``RADESYS`` and no
``EQUINOX`` is ICRS; an ``EQUINOX`` (or the older ``EPOCH``) before 1984 alone is FK4, from
1984 FK5; FK4 without ``EQUINOX`` is B1950, FK5 J2000. FK4's conversion depends on the epoch
of observation (its frame rotates): that is ``MJD-AVG``/``MJD-OBS``/``DATE-OBS`` when the
header gives one, else the equinox (astropy's default). Departures from astropy's own
``WCS.pixel_to_world``, each because astropy is wrong there: it ignores the observation date
for FK4, and calls an ``ELON``/``ELAT`` WCS ICRS and an ``SLON``/``SLAT`` one nothing; here
ecliptic coordinates are astropy's ``BarycentricMeanEcliptic`` at the ``EQUINOX`` (J2000 by
default) and supergalactic ones ``Supergalactic``.

Speed: an ICRS WCS costs nothing more. A frame that is a fixed rotation of ICRS (FK5 at an
equinox, galactic, supergalactic, barycentric mean ecliptic) is converted with a 3 × 3 matrix
taken once per frame from astropy's own transformation, and kept only if it reproduces that
transformation to 1 µas at a spread of test points; any other frame (FK4, whose E-terms of
aberration are not a rotation) goes through astropy directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from astropy import units as u
from astropy.coordinates import (
    FK4,
    FK5,
    ICRS,
    BarycentricMeanEcliptic,
    BaseCoordinateFrame,
    FK4NoETerms,
    Galactic,
    Supergalactic,
    UnitSphericalRepresentation,
)
from astropy.time import Time
from astropy.wcs import WCS

ROTATION_TOLERANCE_RAD = np.deg2rad(1e-6 / 3600.0)  # 1 µas: a matrix must be this exact
_CHECK_POINTS = 48  # directions on which a rotation matrix is checked against astropy


class UnsupportedSkyFrame(ValueError):
    """A WCS whose world coordinates are in no frame that converts to ICRS here."""


@dataclass(frozen=True, eq=False)
class SkyFrame:
    """The frame of a WCS's world coordinates and how they convert to and from ICRS."""

    name: str
    """astropy's name: "icrs", "fk5", "fk4", "fk4noeterms", "galactic", "supergalactic",
    "barycentricmeanecliptic"."""
    frame: BaseCoordinateFrame
    rotation: np.ndarray | None
    """3 × 3: ICRS unit vector = ``rotation @`` native unit vector; None when the conversion
    is not a fixed rotation (astropy is called). The identity for ICRS."""
    obstime: str | None = None
    """The epoch of observation the conversion uses (FK4 only): "B1950.000" (the equinox,
    when the header gives no date) or an ISO UTC date."""

    @property
    def is_icrs(self) -> bool:
        return self.name == "icrs"

    @property
    def equinox(self) -> str | None:
        """E.g. "J2000.000", "B1950.000"; None for frames without one."""
        value = getattr(self.frame, "equinox", None)
        if value is None:
            return None
        return value.byear_str if self.name.startswith("fk4") else value.jyear_str

    @property
    def conversion(self) -> str:
        """"none" (ICRS), "rotation" (a fixed matrix) or "astropy" (per call)."""
        if self.is_icrs:
            return "none"
        return "rotation" if self.rotation is not None else "astropy"

    def describe(self) -> dict[str, Any]:
        """For an exposure's metadata: ``frame``, ``equinox``, ``obstime``, ``conversion``."""
        return {"frame": self.name, "equinox": self.equinox, "obstime": self.obstime,
                "conversion": self.conversion}

    def to_icrs(self, lon: Any, lat: Any) -> tuple[np.ndarray, np.ndarray]:
        """ICRS RA, Dec (degrees, RA in [0, 360)) of the frame's longitude, latitude."""
        lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
        if self.is_icrs:
            return lon, lat
        if self.rotation is not None:
            return _rotate(self.rotation, lon, lat)
        coord = self.frame.realize_frame(_unit(lon, lat)).transform_to(ICRS())
        return _lonlat(coord)

    def from_icrs(self, ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
        """The frame's longitude (in [0, 360)), latitude of ICRS RA, Dec (degrees)."""
        ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
        if self.is_icrs:
            return ra, dec
        if self.rotation is not None:
            return _rotate(self.rotation.T, ra, dec)
        coord = ICRS(_unit(ra, dec)).transform_to(self.frame)
        return _lonlat(coord)


def pixel_to_icrs(wcs: WCS, frame: SkyFrame, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """ICRS RA, Dec (degrees) of 0-based pixel positions of ``wcs`` (frame `frame_of(wcs)`)."""
    world = wcs.all_pix2world(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 0)
    return frame.to_icrs(world[wcs.wcs.lng], world[wcs.wcs.lat])


def icrs_to_pixel(wcs: WCS, frame: SkyFrame, ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixel positions of ``wcs`` at ICRS RA, Dec (degrees)."""
    lon, lat = frame.from_icrs(ra, dec)
    world = [lat, lat]
    world[wcs.wcs.lng] = lon
    x, y = wcs.all_world2pix(*world, 0)
    return np.asarray(x), np.asarray(y)


def frame_of(wcs: WCS) -> SkyFrame:
    """The celestial frame of a 2-d celestial WCS, with its conversion to ICRS.

    Raises
    ------
    UnsupportedSkyFrame
        When the axes are not celestial, or are in a frame not converted here (planetary,
        helioprojective, geocentric apparent, ...).
    """
    c = wcs.wcs
    if c.lng < 0 or c.lat < 0:
        raise UnsupportedSkyFrame(f"the WCS axes {list(c.ctype)} are not celestial")
    lng, lat = c.ctype[c.lng][:4].upper(), c.ctype[c.lat][:4].upper()
    equinox = float(c.equinox) if np.isfinite(c.equinox) else None
    if (lng, lat) == ("RA--", "DEC-"):
        radesys = c.radesys.strip().upper()
        if not radesys:  # wcslib fills this in; the FITS rule again for a WCS built by hand
            radesys = "ICRS" if equinox is None else "FK4" if equinox < 1984.0 else "FK5"
        if radesys == "ICRS":
            return _frame("icrs")
        if radesys == "FK5":
            return _frame("fk5", equinox or 2000.0)
        if radesys in ("FK4", "FK4-NO-E"):
            name = "fk4" if radesys == "FK4" else "fk4noeterms"
            return _frame(name, equinox or 1950.0, _observed_mjd(wcs))
        raise UnsupportedSkyFrame(
            f"RADESYS = {c.radesys!r} is not converted to ICRS here (ICRS, FK5, FK4 and "
            "FK4-NO-E are)")
    if (lng, lat) == ("GLON", "GLAT"):
        return _frame("galactic")
    if (lng, lat) == ("SLON", "SLAT"):
        return _frame("supergalactic")
    if (lng, lat) == ("ELON", "ELAT"):
        return _frame("barycentricmeanecliptic", equinox or 2000.0)
    raise UnsupportedSkyFrame(
        f"the celestial axes {c.ctype[c.lng]!r}, {c.ctype[c.lat]!r} are in no frame converted "
        "to ICRS here (RA/DEC, GLON/GLAT, ELON/ELAT and SLON/SLAT are)")


def named_frame(name: str, equinox: float | None = None) -> SkyFrame:
    """A frame by astropy's name (as `SkyFrame.name`), e.g. ``named_frame("fk5", 2000.0)``
    for converting ICRS positions to FK5 J2000."""
    return _frame(name, equinox)


# frame name → celestial axis types, RADESYS and EQUINOX of a WCS in that frame
WCS_FRAMES: dict[str, tuple[str, str, str, float | None]] = {
    "icrs": ("RA--", "DEC-", "ICRS", None),
    "fk5": ("RA--", "DEC-", "FK5", 2000.0),
    "galactic": ("GLON", "GLAT", "", None),
    "ecliptic": ("ELON", "ELAT", "", 2000.0),
}


def reframed(wcs: WCS, frame: str) -> WCS:
    """``wcs`` with its world coordinates in another frame (a name of `WCS_FRAMES`) and the
    same pixel ↔ sky mapping.

    For a zenithal projection (TAN, SIN, ..., optionally with SIP distortion) centred on its
    reference point: the reference pixel and distortion are kept, the reference point is
    converted, and the linear matrix is turned by the angle between the two frames' norths
    there (a zenithal projection about one point differs between frames by that turn of the
    tangent plane only). The turn is fitted from the frames' own conversions, so the mapping
    holds to rounding (≪ 1 µas); the simulator uses this to write a known sky in any frame.
    """
    lng, lat, radesys, equinox = WCS_FRAMES[frame]
    code = wcs.wcs.ctype[0][5:].replace("-SIP", "")
    source = frame_of(wcs)

    def plain(axes: tuple[str, str], crval: Any, crpix: Any, cd: np.ndarray,
              system: str, year: float | None) -> WCS:
        out = WCS(naxis=2)
        out.wcs.ctype = [f"{axes[0]:-<4}-{code}", f"{axes[1]:-<4}-{code}"]
        out.wcs.crval, out.wcs.crpix, out.wcs.cd = crval, crpix, cd
        out.wcs.radesys = system
        if year is not None:
            out.wcs.equinox = year
        out.wcs.set()
        return out

    old_axes = (wcs.wcs.ctype[0][:4].rstrip("-"), wcs.wcs.ctype[1][:4].rstrip("-"))
    old = plain(old_axes, wcs.wcs.crval, [0.0, 0.0], np.eye(2), wcs.wcs.radesys,
                wcs.wcs.equinox if np.isfinite(wcs.wcs.equinox) else None)
    target = frame_of(plain((lng, lat), [0.0, 0.0], [0.0, 0.0], np.eye(2), radesys, equinox))
    crval = [float(v) for v in target.from_icrs(*source.to_icrs(*wcs.wcs.crval))]
    new = plain((lng, lat), crval, [0.0, 0.0], np.eye(2), radesys, equinox)
    # intermediate world coordinates (degrees) of a few directions, in both frames
    iwc = np.array([[0.0, 0.0], [0.05, 0.0], [0.0, 0.05], [-0.03, 0.04], [0.02, -0.06]])
    ra, dec = source.to_icrs(*old.wcs_pix2world(iwc[:, 0], iwc[:, 1], 1))
    turned = np.column_stack(new.wcs_world2pix(*target.from_icrs(ra, dec), 1))
    turn = np.linalg.lstsq(iwc, turned, rcond=None)[0].T
    out = plain((lng, lat), crval, wcs.wcs.crpix, turn @ wcs.pixel_scale_matrix, radesys,
                equinox)
    if wcs.sip is not None:
        out.wcs.ctype = [f"{t}-SIP" for t in out.wcs.ctype]
        out.sip = wcs.sip
        out.wcs.set()
    out.pixel_shape = wcs.pixel_shape
    return out


def _observed_mjd(wcs: WCS) -> float | None:
    """The epoch of observation from the header (MJD-AVG, else MJD-OBS or DATE-OBS)."""
    for value in (wcs.wcs.mjdavg, wcs.wcs.mjdobs):
        if np.isfinite(value):
            return round(float(value), 3)  # ~1 min: a cache key, far finer than FK4 needs
    return None


@lru_cache(maxsize=64)
def _frame(name: str, equinox: float | None = None, mjd: float | None = None) -> SkyFrame:
    """A `SkyFrame`, built once per (frame, equinox, epoch): the rotation costs ~10 ms."""
    if name == "icrs":
        return SkyFrame(name, ICRS(), np.eye(3))
    frame: BaseCoordinateFrame
    if name in ("fk4", "fk4noeterms"):
        cls = FK4 if name == "fk4" else FK4NoETerms
        when = Time(equinox, format="byear")
        obstime = when if mjd is None else Time(mjd, format="mjd", scale="utc")
        frame = cls(equinox=when, obstime=obstime)
        return SkyFrame(name, frame, _rotation_of(frame),
                        when.byear_str if mjd is None else obstime.isot)
    elif name == "fk5":
        frame = FK5(equinox=Time(equinox, format="jyear"))
    elif name == "barycentricmeanecliptic":
        frame = BarycentricMeanEcliptic(equinox=Time(equinox, format="jyear"))
    elif name == "galactic":
        frame = Galactic()
    elif name == "supergalactic":
        frame = Supergalactic()
    else:  # pragma: no cover - frame_of names only the frames above
        raise ValueError(name)
    return SkyFrame(name, frame, _rotation_of(frame))


def _rotation_of(frame: BaseCoordinateFrame) -> np.ndarray | None:
    """The matrix taking the frame's unit vectors to ICRS ones, from astropy's own
    transformation of the three axes; None unless it reproduces astropy to 1 µas."""
    axes = frame.realize_frame(_unit(np.array([0.0, 90.0, 0.0]), np.array([0.0, 0.0, 90.0])))
    matrix = axes.transform_to(ICRS()).cartesian.xyz.value  # columns: images of x, y, z
    # Orthonormalise (the images are exact to ~1e-16; this keeps the inverse the transpose).
    uu, _, vt = np.linalg.svd(matrix)
    matrix = uu @ vt
    lon, lat = _check_directions()
    want = frame.realize_frame(_unit(lon, lat)).transform_to(ICRS())
    ra, dec = _rotate(matrix, lon, lat)
    got = ICRS(_unit(ra, dec))
    if float(np.max(got.separation(want).rad)) > ROTATION_TOLERANCE_RAD:
        return None
    return matrix


@lru_cache(maxsize=1)
def _check_directions() -> tuple[np.ndarray, np.ndarray]:
    """Evenly spread directions (a Fibonacci sphere), degrees."""
    k = np.arange(_CHECK_POINTS) + 0.5
    lat = np.degrees(np.arcsin(1.0 - 2.0 * k / _CHECK_POINTS))
    lon = (k * 180.0 * (3.0 - np.sqrt(5.0))) % 360.0
    return lon, lat


def _unit(lon: np.ndarray, lat: np.ndarray) -> UnitSphericalRepresentation:
    return UnitSphericalRepresentation(lon * u.deg, lat * u.deg, copy=False)


def _lonlat(coord: BaseCoordinateFrame) -> tuple[np.ndarray, np.ndarray]:
    sph = coord.represent_as(UnitSphericalRepresentation)
    return np.asarray(sph.lon.deg, dtype=float), np.asarray(sph.lat.deg, dtype=float)


def _rotate(matrix: np.ndarray, lon: np.ndarray, lat: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Longitude (in [0, 360)), latitude in degrees of ``matrix @`` the unit vectors."""
    lon_r, lat_r = np.deg2rad(lon), np.deg2rad(lat)
    cos_lat = np.cos(lat_r)
    v = (cos_lat * np.cos(lon_r), cos_lat * np.sin(lon_r), np.sin(lat_r))
    x = matrix[0, 0] * v[0] + matrix[0, 1] * v[1] + matrix[0, 2] * v[2]
    y = matrix[1, 0] * v[0] + matrix[1, 1] * v[1] + matrix[1, 2] * v[2]
    z = matrix[2, 0] * v[0] + matrix[2, 1] * v[1] + matrix[2, 2] * v[2]
    return np.degrees(np.arctan2(y, x)) % 360.0, np.degrees(np.arctan2(z, np.hypot(x, y)))
