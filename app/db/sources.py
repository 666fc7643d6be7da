"""Source rows of detect jobs: idempotent replacement, filtered and cursor-paged queries."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, insert, select
from sqlalchemy.orm import Session

from app.db.filters import SourceFilter, in_box, in_cone, snr_between
from app.db.models import ArtifactRecord, SourceFlagRecord, SourceRecord


def source_conditions(where: SourceFilter) -> list[ColumnElement[bool]]:
    """SQL conditions on ``sources`` (the caller adds the job and owner)."""
    s = SourceRecord
    out: list[ColumnElement[bool]] = []
    if where.parents_only:
        out.append(s.parent == 0)
    if where.children_only:
        out.append(s.parent != 0)
    if where.deblend_nchild is not None:
        out.append(s.deblend_nchild == where.deblend_nchild)
    out += snr_between(s.psf_inst_flux, s.psf_inst_flux_err, where.min_psf_snr,
                       where.max_psf_snr)
    out += in_box(s.x, s.y, where.box)
    if where.cone is not None:
        out.append(in_cone(s.coord_cx, s.coord_cy, s.coord_cz, s.coord_dec, where.cone))
    for flag in where.flags_set:
        out.append(_has_flag(flag))
    for flag in where.flags_unset:
        out.append(~_has_flag(flag))
    return out


def _has_flag(flag: str) -> ColumnElement[bool]:
    f = SourceFlagRecord
    return exists().where(
        f.job_id == SourceRecord.job_id, f.source_id == SourceRecord.id, f.flag == flag
    )


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
        return scope if where is None else scope + source_conditions(where)
