"""Job rows: owner-scoped queries, and the guarded updates the workers use.

Every worker update names the claim token it got when it started the job, so a worker that
lost its job (cancelled, or taken over after its heartbeat went stale) can no longer touch it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, literal, or_, select, update
from sqlalchemy.orm import Session

from app.db.base import UTCDateTime, utcnow
from app.db.models import JobPhase, JobRecord


def _at(moment: datetime) -> ColumnElement[datetime]:
    return literal(moment, UTCDateTime())


class JobRepository:
    """Queries on ``jobs`` (and their artifacts) over a session the caller owns."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, job: JobRecord) -> None:
        self._session.add(job)
        self._session.flush()

    def get(self, owner: str, job_id: str) -> JobRecord | None:
        return self._session.scalar(
            select(JobRecord).where(JobRecord.owner == owner, JobRecord.id == job_id)
        )

    def get_any(self, job_id: str) -> JobRecord | None:
        """The job whoever owns it: for workers, which act on ids from the queue."""
        return self._session.get(JobRecord, job_id, populate_existing=True)

    def page(
        self,
        owner: str,
        *,
        phase: JobPhase | None,
        kind: str | None,
        exposure_id: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[JobRecord], int]:
        """Newest first, filtered, with the total count."""
        query = select(JobRecord).where(JobRecord.owner == owner)
        if phase is not None:
            query = query.where(JobRecord.phase == phase)
        if kind is not None:
            query = query.where(JobRecord.kind == kind)
        if exposure_id is not None:
            query = query.where(JobRecord.exposure_id == exposure_id)
        total = self._session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = self._session.scalars(
            query.order_by(JobRecord.created_at.desc(), JobRecord.id).limit(limit).offset(offset)
        )
        return list(rows), total

    def latest_completed(self, owner: str, exposure_id: str, kind: str) -> JobRecord | None:
        """The newest COMPLETED job of ``kind`` on an exposure."""
        query = (
            select(JobRecord)
            .where(JobRecord.owner == owner, JobRecord.exposure_id == exposure_id,
                   JobRecord.kind == kind, JobRecord.phase == JobPhase.COMPLETED)
            .order_by(JobRecord.created_at.desc(), JobRecord.id)
            .limit(1)
        )
        return self._session.scalar(query)

    def by_request_key(self, owner: str, request_key: str, limit: int = 20,
                       failed_with: str | None = None) -> list[JobRecord]:
        """The owner's jobs made for this request (`JobRecord.request_key`) that have not
        been aborted or failed (except, when given, with the error code ``failed_with``: a
        failure the stored data make certain, which asking again would repeat), newest
        first."""
        usable = JobRecord.phase.not_in([JobPhase.ERROR, JobPhase.ABORTED])
        if failed_with is not None:
            usable = usable | ((JobRecord.phase == JobPhase.ERROR)
                               & (JobRecord.error_code == failed_with))
        query = (
            select(JobRecord)
            .where(JobRecord.owner == owner, JobRecord.request_key == request_key, usable)
            .order_by(JobRecord.created_at.desc(), JobRecord.id)
            .limit(limit)
        )
        return list(self._session.scalars(query))

    def ids_for_exposure(self, exposure_id: str) -> list[str]:
        query = select(JobRecord.id).where(JobRecord.exposure_id == exposure_id)
        return list(self._session.scalars(query))

    def delete(self, job: JobRecord) -> None:
        self._session.delete(job)
        self._session.flush()

    def abort(self, job_id: str) -> bool:
        """Move an unfinished job to ABORTED; its worker sees it at the next heartbeat."""
        result = self._session.execute(
            update(JobRecord)
            .where(JobRecord.id == job_id, JobRecord.phase.not_in(_FINAL))
            .values(phase=JobPhase.ABORTED, ended_at=_at(utcnow()), worker_id=None)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    # -- worker side -------------------------------------------------------------------

    def claim(
        self, job_id: str, token: str, *, stale_before: datetime, max_attempts: int
    ) -> JobRecord | None:
        """Start an attempt: QUEUED (or EXECUTING by a dead worker) → EXECUTING under ``token``.

        None when another worker holds the job, it is finished, or its attempts are used up.
        """
        now = utcnow()
        result = self._session.execute(
            update(JobRecord)
            .where(
                JobRecord.id == job_id,
                JobRecord.attempt < max_attempts,
                _claimable(stale_before),
            )
            .values(
                phase=JobPhase.EXECUTING,
                attempt=JobRecord.attempt + 1,
                worker_id=token,
                heartbeat_at=_at(now),
                started_at=func.coalesce(JobRecord.started_at, _at(now)),
                progress=0.0,
                step="starting",
            )
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
        return self.get_any(job_id)

    def beat(self, job_id: str, token: str, progress: float, step: str | None) -> bool:
        """Record liveness and progress; False if the job is no longer this worker's."""
        return self._guarded(
            job_id, token, heartbeat_at=_at(utcnow()), progress=progress, step=step
        )

    def finish(self, job_id: str, token: str, phase: JobPhase, **values: Any) -> bool:
        """End this worker's attempt in ``phase``; False, writing nothing, if it lost the job."""
        if phase.is_final:
            values.setdefault("ended_at", _at(utcnow()))
        return self._guarded(job_id, token, phase=phase, worker_id=None, **values)

    def _guarded(self, job_id: str, token: str, **values: Any) -> bool:
        result = self._session.execute(
            update(JobRecord)
            .where(
                JobRecord.id == job_id,
                JobRecord.worker_id == token,
                JobRecord.phase == JobPhase.EXECUTING,
            )
            .values(**values)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    # -- reconciler side ---------------------------------------------------------------

    def stale(self, executing_before: datetime, queued_before: datetime) -> list[JobRecord]:
        """Jobs no live worker holds: EXECUTING without a recent heartbeat, or long QUEUED."""
        return list(
            self._session.scalars(
                select(JobRecord).where(
                    or_(
                        _stale_executing(executing_before),
                        and_(
                            JobRecord.phase == JobPhase.QUEUED,
                            JobRecord.heartbeat_at < _at(queued_before),
                        ),
                    )
                )
            )
        )

    def requeue(self, job: JobRecord, stale_before: datetime) -> bool:
        """Put a stale job back to QUEUED if it is still stale (no one claimed it meanwhile)."""
        result = self._session.execute(
            update(JobRecord)
            .where(
                JobRecord.id == job.id,
                JobRecord.phase == job.phase,
                JobRecord.heartbeat_at < _at(stale_before),
            )
            .values(phase=JobPhase.QUEUED, worker_id=None, heartbeat_at=_at(utcnow()))
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    def give_up(self, job: JobRecord, message: str) -> bool:
        """Mark a stale job ERROR once it has used all its attempts."""
        result = self._session.execute(
            update(JobRecord)
            .where(JobRecord.id == job.id, JobRecord.phase == job.phase)
            .values(
                phase=JobPhase.ERROR,
                worker_id=None,
                ended_at=_at(utcnow()),
                error_code="attempts_exhausted",
                error_message=message,
            )
        )
        return result.rowcount == 1  # type: ignore[attr-defined]


_FINAL = [JobPhase.COMPLETED, JobPhase.ERROR, JobPhase.ABORTED]


def _stale_executing(before: datetime) -> ColumnElement[bool]:
    return and_(JobRecord.phase == JobPhase.EXECUTING, JobRecord.heartbeat_at < _at(before))


def _claimable(stale_before: datetime) -> ColumnElement[bool]:
    return or_(JobRecord.phase == JobPhase.QUEUED, _stale_executing(stale_before))
