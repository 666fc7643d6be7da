"""Light curves: forced PSF flux at one sky position on every stored exposure covering it.

Exposures are found through the indexed sky bounds of their footprints (not by scanning),
checked exactly through their WCS, and measured on the characterized exposure their newest
detect job left, with the same forced photometry as ``POST /v1/forced``. Points are kept in
memory per (exposure's detect job, position), so asking again costs nothing.

Above ``max_exposures`` covering exposures, or when one of them has no detect job (no PSF:
characterizing it takes seconds, too long for an answer), the light curve becomes a job: a
forced job in covering mode at the one position, restricted to the same band and MJD window,
which characterizes such exposures itself (one it cannot is listed in the job's
``skipped_exposures``, with why) and whose rows are one per exposure in MJD order. A client
may ask for the job directly. Asked again for the same exposures, the same job answers,
even one that failed because no covering exposure could be measured: asking again would
fail again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from sqlalchemy.orm import Session

from app.db.exposures import ExposureRepository, ExposureWindow
from app.db.jobs import JobRepository
from app.db.models import ExposureRecord, JobRecord
from app.engine.forced import run_forced
from app.jobs.calexp_jobs import DetectCalexp
from app.services.calexps import CalexpService
from app.services.errors import ConflictError, InvalidInputError
from app.services.jobs import JobService

logger = logging.getLogger(__name__)

POINT_COLUMNS = [
    ("exposure_id", None, "Exposure the point was measured on."),
    ("visit", None, "Visit of the exposure."),
    ("detector", None, "Detector of the exposure."),
    ("band", None, "Band of the exposure."),
    ("mjd", "d", "Modified Julian date of the observation."),
    ("detect_job_id", None, "Detect job whose characterized exposure was measured."),
    ("base_PsfFlux_flux", "nJy", "Forced PSF flux at the position."),
    ("base_PsfFlux_fluxErr", "nJy", "1σ uncertainty of the forced PSF flux."),
    ("snr", None, "Forced PSF flux over its uncertainty."),
    ("x", "pix", "Position on the exposure, x."),
    ("y", "pix", "Position on the exposure, y."),
    ("base_PsfFlux_flag", None, "No PSF flux could be measured here."),
    ("base_PixelFlags_flag_edge", None, "EDGE or NO_DATA pixels within one PSF FWHM."),
    ("base_PixelFlags_flag_saturated", None, "Saturated pixels within one PSF FWHM."),
]


class PointCache:
    """Light-curve points by (detect job, position to 1e-7°); a small thread-safe LRU."""

    def __init__(self, max_items: int = 10000) -> None:
        self._items: OrderedDict[tuple[str, float, float], dict[str, object]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_items = max_items

    def get(self, key: tuple[str, float, float]) -> dict[str, object] | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return None

    def put(self, key: tuple[str, float, float], point: dict[str, object]) -> None:
        with self._lock:
            self._items[key] = point
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)


@dataclass(frozen=True)
class LightCurveQuery:
    """A position and the exposures to take: in one band, between two MJDs."""

    ra: float
    dec: float
    window: ExposureWindow = ExposureWindow()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ra) and math.isfinite(self.dec) and -90 <= self.dec <= 90):
            raise InvalidInputError("ra must be finite and dec within [-90, 90] degrees",
                                    code="bad_position")
        if (self.window.start is not None and self.window.end is not None
                and self.window.start > self.window.end):
            raise InvalidInputError(f"start (MJD {self.window.start}) is after end "
                                    f"(MJD {self.window.end})", code="bad_window")

    def job_config(self) -> dict[str, object]:
        """The config of the forced job that measures this light curve."""
        return {"positions": [{"ra": self.ra % 360.0, "dec": self.dec}],
                "band": self.window.band, "start": self.window.start, "end": self.window.end}

    def request_key(self) -> str:
        """This light curve's `JobRecord.request_key`: the job config, hashed."""
        config = json.dumps({"lightcurve": self.job_config()}, sort_keys=True)
        return hashlib.sha256(config.encode()).hexdigest()


class LightCurveService:
    def __init__(self, session: Session, calexps: CalexpService, jobs: JobService,
                 points: PointCache, owner: str, max_exposures: int) -> None:
        self._session = session
        self._calexps = calexps
        self._jobs = jobs
        self._points = points
        self._owner = owner
        self._max_exposures = max_exposures

    def light_curve(self, query: LightCurveQuery) -> Table | JobRecord:
        """One row per covering exposure, ordered by MJD; or, above the synchronous limit or
        with an exposure to characterize first, the job submitted to measure them."""
        with self._session.begin():
            records = [r for r in ExposureRepository(self._session).covering(
                self._owner, query.ra, query.dec) if query.window.holds(r)]
            over = len(records) > self._max_exposures
            detects = {} if over else {r.id: self._detect_job(r.id) for r in records}
            uncharacterized = sum(d is None for d in detects.values())
            as_job = over or uncharacterized > 0
            job = self._current_job(query, {r.id for r in records}) if as_job else None
        if as_job:
            if job is None:
                job = self.submit(query)
                logger.info("light curve measured as a job", extra={
                    "job_id": job.id, "exposures": len(records), "limit": self._max_exposures,
                    "uncharacterized": uncharacterized})
            return job
        rows = [p for p in (self._point(r, detects[r.id], query.ra, query.dec) for r in records)
                if p is not None]
        rows.sort(key=lambda p: (p["mjd"] is None, p["mjd"] or 0.0))
        return _table(rows, query.ra, query.dec)

    def _detect_job(self, exposure_id: str) -> DetectCalexp | None:
        """The detect job whose calexp the exposure is measured on; None without one."""
        try:
            return self._calexps.detect_job(exposure_id)
        except ConflictError:
            return None

    def submit(self, query: LightCurveQuery) -> JobRecord:
        """The forced job that measures the light curve on every covering exposure."""
        return self._jobs.submit("forced", None, query.job_config(),
                                 request_key=query.request_key())

    def _current_job(self, query: LightCurveQuery, covering: set[str]) -> JobRecord | None:
        """The newest job already measuring this light curve on exactly these exposures
        (queued, running or done, or failed for want of a measurable exposure): asked
        again, the same light curve is not measured again; once an exposure is stored or
        deleted there, it is."""
        for job in JobRepository(self._session).by_request_key(
                self._owner, query.request_key(), failed_with="no_covering_exposure"):
            taken = [*job.parameters.get("exposures", []),
                     *job.parameters.get("skipped_exposures", [])]
            if {entry["exposure_id"] for entry in taken} == covering:
                return job
        return None

    def _point(self, record: ExposureRecord, detect: DetectCalexp, ra: float, dec: float
               ) -> dict[str, object] | None:
        base: dict[str, object] = {
            "exposure_id": record.id, "visit": record.meta.get("visit"),
            "detector": record.meta.get("detector"), "band": record.meta.get("band"),
            "mjd": record.meta.get("mjd"),
        }
        key = (detect.job_id, round(ra % 360.0, 7), round(dec, 7))
        cached = self._points.get(key)
        if cached is not None:
            return cached
        exposure = self._calexps.exposure(detect)
        x, y = exposure.sky_to_pixel(np.array([ra]), np.array([dec]))
        ox, oy = exposure.xy0
        if not exposure.on_pixels(x - ox, y - oy)[0]:
            return None  # in the bounding box but not on the pixels
        measured = run_forced(exposure, Table({"ra": [ra], "dec": [dec]}))
        row = {name: measured[name][0] for name in measured}
        flux = float(row.get("base_PsfFlux_flux", np.nan))
        err = float(row.get("base_PsfFlux_fluxErr", np.nan))
        point = base | {
            "detect_job_id": detect.job_id, "base_PsfFlux_flux": flux, "base_PsfFlux_fluxErr": err,
            "snr": flux / err if err > 0 else np.nan, "x": float(x[0]), "y": float(y[0]),
            "base_PsfFlux_flag": bool(row["base_PsfFlux_flag"]),
            "base_PixelFlags_flag_edge": bool(row["base_PixelFlags_flag_edge"]),
            "base_PixelFlags_flag_saturated": bool(row["base_PixelFlags_flag_saturated"]),
        }
        self._points.put(key, point)
        return point


def _table(rows: list[dict[str, object]], ra: float, dec: float) -> Table:
    """The points as a table with units and descriptions, missing values as NaN/False/''."""
    table = Table(meta={"RA": ra, "DEC": dec})
    for name, unit, description in POINT_COLUMNS:
        values = [r.get(name) for r in rows]
        if name.startswith(("base_PsfFlux_flux", "snr", "x", "y", "mjd")):
            data = np.array([np.nan if v is None else v for v in values], dtype=float)
        elif "flag" in name:
            data = np.array([bool(v) for v in values], dtype=bool)
        elif name in ("visit", "detector"):
            data = np.array([-1 if v is None else v for v in values], dtype=np.int64)
        else:
            data = np.array(["" if v is None else str(v) for v in values], dtype=str)
        table[name] = data
        table[name].unit = unit
        table[name].description = description
    return table
