"""The exposures a forced job measures on, fixed at submission, and the columns a row
measured on one of them gets.

With an ``exposure_id`` the job measures on that exposure's detect job's calexp. Without one
("covering mode") it measures on every stored exposure whose sky bounds overlap the
positions (through the index on the bounds) and that lies in the band and MJD window asked
for: on the calexp of its newest completed detect job, or, when it has none, on the exposure
characterized by the job itself (background, PSF, aperture corrections: the first step of a
detect job), so a light curve has a point on every epoch stored. A ``match`` needs each
exposure's detection catalog: with it, exposures without a detect job are skipped, with the
reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.table import Column
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from app.db.exposures import ExposureRepository, ExposureWindow
from app.db.models import ExposureRecord
from app.jobs.calexp_jobs import calexp_job
from app.jobs.errors import NotReadyError

ON_DEMAND = "on-demand"
"""``characterized_by`` of rows measured on an exposure the job characterized itself."""

EXPOSURE_COLUMNS = {
    "exposure_id": "Exposure the row was measured on.",
    "visit": "Visit of the exposure (-1 if unknown).",
    "detector": "Detector of the exposure (-1 if unknown).",
    "band": "Band of the exposure.",
    "mjd": "Modified Julian date of the exposure.",
    "characterized_by": "Detect job whose calexp (PSF, aperture corrections) was measured, "
                        f'or "{ON_DEMAND}": characterized by this job.',
}
"""Columns a row measured in covering mode carries, and what they mean."""


class MeasuredExposure(BaseModel):
    """An exposure the job measures on, and what gives it its PSF."""

    exposure_id: str
    job_id: str | None = Field(
        description="Detect job whose calexp is measured; null: characterized on demand.")
    visit: int | None = None
    detector: int | None = None
    band: str | None = None
    mjd: float | None = None

    @property
    def characterized_by(self) -> str:
        return self.job_id or ON_DEMAND


def measured(record: ExposureRecord, detect_job_id: str | None) -> MeasuredExposure:
    meta = record.meta
    return MeasuredExposure(exposure_id=record.id, job_id=detect_job_id,
                            visit=meta.get("visit"), detector=meta.get("detector"),
                            band=meta.get("band"), mjd=meta.get("mjd"))


def covering_exposures(session: Session, owner: str, box: dict[str, float],
                       window: ExposureWindow, match: bool
                       ) -> tuple[list[MeasuredExposure], list[dict[str, str]]]:
    """The exposures in ``window`` whose bounds overlap ``box``, and those left out (why).

    Raises `NotReadyError` when none is left to measure on.
    """
    chosen, skipped = [], []
    records = [r for r in ExposureRepository(session).overlapping(owner, box)
               if window.holds(r)]
    for record in records:
        try:
            detect = calexp_job(session, owner, record.id)
        except NotReadyError:
            if match:
                skipped.append({"exposure_id": record.id, "reason": "match needs a detection "
                                "catalog and this exposure has no completed detect job; run "
                                "one and submit again to include it"})
            else:
                chosen.append(measured(record, None))
        else:
            chosen.append(measured(record, detect.job_id))
    if not chosen:
        raise NotReadyError(
            "no stored exposure " + ("with a completed detect job " if match else "")
            + "overlaps these positions" + _window_words(window)
            + (f" ({len(skipped)} overlapping exposure(s) have no detect job yet: run one, "
               "or leave match out)" if skipped
               else "; upload one that covers them: POST /v1/exposures"),
            code="no_covering_exposure")
    return chosen, skipped


def _window_words(window: ExposureWindow) -> str:
    words = [f"{name} {value}" for name, value in (
        ("in band", window.band), ("from MJD", window.start), ("to MJD", window.end))
        if value is not None]
    return f" ({', '.join(words)})" if words else ""


def exposure_columns(entry: MeasuredExposure, n: int) -> list[Column]:
    """The `EXPOSURE_COLUMNS` of ``n`` rows measured on ``entry``."""
    columns = []
    for name, description in EXPOSURE_COLUMNS.items():
        value: Any = (entry.characterized_by if name == "characterized_by"
                      else getattr(entry, name))
        if name in ("visit", "detector"):
            data = np.full(n, -1 if value is None else value, dtype=np.int64)
        elif name == "mjd":
            data = np.full(n, np.nan if value is None else value, dtype=float)
        else:
            data = np.full(n, "" if value is None else str(value))
        columns.append(Column(data, name=name, unit="d" if name == "mjd" else None,
                              description=description))
    return columns
