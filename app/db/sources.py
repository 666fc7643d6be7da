"""Source rows of detect jobs: idempotent replacement, filtered and cursor-paged queries."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, insert, select
from sqlalchemy.orm import Session

from app.db.models import ArtifactRecord, SourceFlagRecord, SourceRecord


@dataclass(frozen=True)
class Cone:
    """A circle on the sky, degrees."""

    ra: float
    dec: float
    radius: float


@dataclass(frozen=True)
class PixelBox:
    """Inclusive pixel ranges on the centroid; None leaves a side open."""

    x_min: float | None = None
    x_max: float | None = None
    y_min: float | None = None
    y_max: float | None = None


@dataclass(frozen=True)
class SourceFilter:
    """What a client may ask of a job's sources; every condition is ANDed."""

    parents_only: bool = False
    children_only: bool = False
    deblend_nchild: int | None = None
    min_psf_snr: float | None = None
    max_psf_snr: float | None = None
    box: PixelBox | None = None
    cone: Cone | None = None
    flags_set: Sequence[str] = field(default_factory=tuple)
    flags_unset: Sequence[str] = field(default_factory=tuple)

    def conditions(self) -> list[ColumnElement[bool]]:
        """SQL conditions on ``sources`` (the caller adds the job and owner)."""
        s = SourceRecord
        out: list[ColumnElement[bool]] = []
        if self.parents_only:
            out.append(s.parent == 0)
        if self.children_only:
            out.append(s.parent != 0)
        if self.deblend_nchild is not None:
            out.append(s.deblend_nchild == self.deblend_nchild)
        # S/N bounds are exclusive (4 < S/N < 5, as the tutorial picks faint detections);
        # written as products so the (job, ...) scan needs no division
        if self.min_psf_snr is not None or self.max_psf_snr is not None:
            out.append(s.psf_inst_flux_err > 0)
        if self.min_psf_snr is not None:
            out.append(s.psf_inst_flux > self.min_psf_snr * s.psf_inst_flux_err)
        if self.max_psf_snr is not None:
            out.append(s.psf_inst_flux < self.max_psf_snr * s.psf_inst_flux_err)
        if self.box is not None:
            for column, low, high in (
                (s.x, self.box.x_min, self.box.x_max),
                (s.y, self.box.y_min, self.box.y_max),
            ):
                if low is not None:
                    out.append(column >= low)
                if high is not None:
                    out.append(column <= high)
        if self.cone is not None:
            out.append(_in_cone(self.cone))
        for flag in self.flags_set:
            out.append(_has_flag(flag))
        for flag in self.flags_unset:
            out.append(~_has_flag(flag))
        return out


def _has_flag(flag: str) -> ColumnElement[bool]:
    f = SourceFlagRecord
    return exists().where(
        f.job_id == SourceRecord.job_id, f.source_id == SourceRecord.id, f.flag == flag
    )


def unit_vector(ra: float, dec: float) -> tuple[float, float, float]:
    """Cartesian unit vector of a sky position in degrees."""
    a, d = math.radians(ra), math.radians(dec)
    return math.cos(d) * math.cos(a), math.cos(d) * math.sin(a), math.sin(d)


def _in_cone(cone: Cone) -> ColumnElement[bool]:
    """Exact test on the unit vectors, behind a Dec band the (job, ra, dec) index can use."""
    s = SourceRecord
    cx, cy, cz = unit_vector(cone.ra, cone.dec)
    exact = s.coord_cx * cx + s.coord_cy * cy + s.coord_cz * cz >= math.cos(
        math.radians(cone.radius)
    )
    band = and_(s.coord_dec >= cone.dec - cone.radius, s.coord_dec <= cone.dec + cone.radius)
    return and_(band, exact)


class SourceRepository:
    """Queries on one owner's ``sources``, ``source_flags`` and ``artifacts``, job by job."""

    def __init__(self, session: Session, owner: str) -> None:
        self._session = session
        self._owner = owner

    def replace(
        self,
        job_id: str,
        rows: Iterable[dict[str, Any]],
        flags: Iterable[tuple[int, str]],
        artifacts: Iterable[tuple[str, str, str, int]],
    ) -> None:
        """Delete the job's results and insert these, in the caller's transaction.

        ``artifacts`` are (name, storage key, media type, size). A re-run of the job therefore
        replaces its results and never duplicates them.
        """
        for table in (SourceFlagRecord, SourceRecord, ArtifactRecord):
            self._session.execute(delete(table).where(table.job_id == job_id))
        rows = [dict(row, job_id=job_id, owner=self._owner) for row in rows]
        if rows:
            self._session.execute(insert(SourceRecord), rows)
        flag_rows = [{"job_id": job_id, "source_id": i, "flag": f} for i, f in flags]
        if flag_rows:
            self._session.execute(insert(SourceFlagRecord), flag_rows)
        self._session.add_all(
            ArtifactRecord(
                job_id=job_id,
                owner=self._owner,
                name=name,
                storage_key=key,
                media_type=media_type,
                size=size,
            )
            for name, key, media_type, size in artifacts
        )
        self._session.flush()

    def page(
        self, job_id: str, where: SourceFilter, *, after: int | None, limit: int
    ) -> list[SourceRecord]:
        """Sources in id order after the cursor ``after``."""
        query = select(SourceRecord).where(*self._conditions(job_id, where))
        if after is not None:
            query = query.where(SourceRecord.id > after)
        return list(self._session.scalars(query.order_by(SourceRecord.id).limit(limit)))

    def ids(self, job_id: str, where: SourceFilter) -> list[int]:
        query = select(SourceRecord.id).where(*self._conditions(job_id, where))
        return list(self._session.scalars(query.order_by(SourceRecord.id)))

    def leaves(self, job_id: str) -> list[tuple[int, float, float, float | None, float | None]]:
        """(id, x, y, PSF flux, its error) of the objects (deblend_nChild = 0) with a centroid.

        Only the typed core columns are read, so matching against thousands of sources stays
        cheap.
        """
        s = SourceRecord
        query = select(s.id, s.x, s.y, s.psf_inst_flux, s.psf_inst_flux_err).where(
            *self._conditions(job_id), s.deblend_nchild == 0, s.x.is_not(None),
            s.y.is_not(None))
        return [tuple(row) for row in self._session.execute(query.order_by(s.id))]

    def get(self, job_id: str, source_id: int) -> SourceRecord | None:
        return self._session.scalar(
            select(SourceRecord).where(*self._conditions(job_id), SourceRecord.id == source_id)
        )

    def children(self, job_id: str, source_id: int) -> list[int]:
        query = select(SourceRecord.id).where(
            *self._conditions(job_id), SourceRecord.parent == source_id
        )
        return list(self._session.scalars(query.order_by(SourceRecord.id)))

    def artifact(self, job_id: str, name: str) -> ArtifactRecord | None:
        return self._session.scalar(
            select(ArtifactRecord).where(
                ArtifactRecord.job_id == job_id,
                ArtifactRecord.owner == self._owner,
                ArtifactRecord.name == name,
            )
        )

    def _conditions(
        self, job_id: str, where: SourceFilter | None = None
    ) -> list[ColumnElement[bool]]:
        scope = [SourceRecord.job_id == job_id, SourceRecord.owner == self._owner]
        return scope if where is None else scope + where.conditions()
