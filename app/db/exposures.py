"""Exposure rows, always read and written for one owner."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from app.db.base import jsonable
from app.db.models import ExposureRecord


class ExposureRepository:
    """Queries on ``exposures`` over a session the caller owns."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, exposure: ExposureRecord) -> None:
        self._session.add(exposure)
        self._session.flush()

    def get(self, owner: str, exposure_id: str) -> ExposureRecord | None:
        return self._session.scalar(
            select(ExposureRecord).where(
                ExposureRecord.owner == owner, ExposureRecord.id == exposure_id
            )
        )

    def storage_key(self, exposure_id: str | None) -> str | None:
        """Blob key of an exposure, for workers (which act on ids, not owners)."""
        if exposure_id is None:
            return None
        return self._session.scalar(
            select(ExposureRecord.storage_key).where(ExposureRecord.id == exposure_id)
        )

    def by_hash(self, owner: str, sha256: str) -> ExposureRecord | None:
        return self._session.scalar(
            select(ExposureRecord).where(
                ExposureRecord.owner == owner, ExposureRecord.sha256 == sha256
            )
        )

    def page(self, owner: str, *, limit: int, offset: int) -> tuple[list[ExposureRecord], int]:
        """Newest first, with the total count for the owner."""
        query = select(ExposureRecord).where(ExposureRecord.owner == owner)
        total = self._session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = self._session.scalars(
            query.order_by(ExposureRecord.created_at.desc(), ExposureRecord.id)
            .limit(limit)
            .offset(offset)
        )
        return list(rows), total

    def covering(self, owner: str, ra: float, dec: float) -> list[ExposureRecord]:
        """Exposures whose sky bounding box holds (ra, dec), oldest first, from the index on
        the bounds (a box wider than 180° in RA is one that wraps through 0°)."""
        ra = ra % 360.0
        r = ExposureRecord
        straight = and_(r.ra_min <= ra, r.ra_max >= ra, r.ra_max - r.ra_min <= 180.0)
        wrapped = and_(r.ra_max - r.ra_min > 180.0, or_(r.ra_max <= ra, r.ra_min >= ra))
        query = select(r).where(
            r.owner == owner, r.dec_min <= dec, r.dec_max >= dec, or_(straight, wrapped)
        ).order_by(r.created_at, r.id)
        return list(self._session.scalars(query))

    def overlapping(self, owner: str, box: dict[str, float]) -> list[ExposureRecord]:
        """Exposures whose sky bounding box may overlap ``box`` (``ra_min/ra_max/dec_min/
        dec_max``, ``ra_min > ra_max`` wrapping through 0°), oldest first, from the index on
        the bounds: a superset, which the WCS of each exposure then narrows exactly."""
        r = ExposureRecord
        conditions = [r.owner == owner, r.dec_min <= box["dec_max"], r.dec_max >= box["dec_min"]]
        if box["ra_min"] <= box["ra_max"]:  # boxes through 0° on either side are kept
            conditions.append(or_(
                and_(r.ra_min <= box["ra_max"], r.ra_max >= box["ra_min"]),
                r.ra_min > r.ra_max, r.ra_max - r.ra_min > 180.0))
        query = select(r).where(*conditions).order_by(r.created_at, r.id)
        return list(self._session.scalars(query))

    def delete(self, exposure: ExposureRecord) -> None:
        """Delete the row; its jobs, sources and artifacts go with it (ON DELETE CASCADE)."""
        self._session.delete(exposure)
        self._session.flush()

    def key_in_use(self, storage_key: str) -> bool:
        """Whether any exposure (of any owner) still points at this blob."""
        return (
            self._session.scalar(
                select(ExposureRecord.id).where(ExposureRecord.storage_key == storage_key).limit(1)
            )
            is not None
        )


@dataclass(frozen=True)
class ExposureWindow:
    """Which exposures a light curve takes: a band, and MJD bounds (inclusive); an
    exposure without a band or an MJD is outside any window that asks for one."""

    band: str | None = None
    start: float | None = None
    end: float | None = None

    def holds(self, record: ExposureRecord) -> bool:
        mjd = record.meta.get("mjd")
        return ((self.band is None or record.meta.get("band") == self.band)
                and (self.start is None or (mjd is not None and mjd >= self.start))
                and (self.end is None or (mjd is not None and mjd <= self.end)))


def sky_bounds(corners: list[list[float]] | None) -> dict[str, float | None]:
    """``ra_min/ra_max/dec_min/dec_max`` of a footprint's corners, in degrees.

    RA is unwrapped around the first corner, so a footprint across RA = 0 has
    ``ra_min > ra_max`` (read it as the interval wrapping through 360°).
    """
    if not corners:
        return dict.fromkeys(("ra_min", "ra_max", "dec_min", "dec_max"))
    ra0 = corners[0][0]
    ras = [ra0 + ((ra - ra0 + 180.0) % 360.0 - 180.0) for ra, _ in corners]
    decs = [dec for _, dec in corners]
    return {
        "ra_min": min(ras) % 360.0,
        "ra_max": max(ras) % 360.0,
        "dec_min": min(decs),
        "dec_max": max(decs),
    }


def new_exposure(
    *,
    owner: str,
    sha256: str,
    size: int,
    storage_key: str,
    filename: str | None,
    metadata: dict[str, Any],
) -> ExposureRecord:
    """An exposure row from the reader's metadata, with its sky bounds filled in."""
    meta = jsonable(metadata)
    return ExposureRecord(
        id=uuid.uuid4().hex,
        owner=owner,
        sha256=sha256,
        size=size,
        storage_key=storage_key,
        filename=filename,
        meta=meta,
        **sky_bounds(meta.get("corners")),
    )
