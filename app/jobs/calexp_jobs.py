"""Which detect job's stored calexp (PSF, aperture corrections) describes an exposure.

Shared by the forced job's submission and the synchronous services, so both refuse the same
cases with the same words: an exposure or a detect job that is not there is a
`MissingError`, a detect job that has not finished (or none at all) a `NotReadyError`.
Every synchronous forced request asks this, so it is one indexed query: the exposure, its
detect job and that job's calexp artifact, outer-joined.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from sqlalchemy import Connection, Select, and_, bindparam, select
from sqlalchemy.orm import Session

from app.db.models import ArtifactRecord, ExposureRecord, JobPhase, JobRecord
from app.jobs.errors import MissingError, NotReadyError

RUN_DETECT = 'run one first: POST /v1/jobs {"kind": "detect", "exposure_id": …}'


@dataclass(frozen=True)
class DetectCalexp:
    """A detect job and the blob key of the calexp it left."""

    job_id: str
    key: str


def calexp_job(session: Session | Connection, owner: str, exposure_id: str,
               job_id: str | None = None) -> DetectCalexp:
    """The detect job (``job_id``, or the newest completed one) and its calexp; a bare
    connection serves as well as a session, for a caller that needs nothing else."""
    params = {"owner": owner, "exposure_id": exposure_id}
    if job_id is not None:
        params["job_id"] = job_id
    row = session.execute(_statement(job_id is not None), params).first()
    if row is None:
        raise MissingError(f"no exposure {exposure_id!r}", code="exposure_not_found")
    found, kind, phase, key = row
    if job_id is None and found is None:
        raise NotReadyError(f"exposure {exposure_id} has no completed detect job, so no "
                            f"PSF yet; {RUN_DETECT}", code="not_characterized")
    if job_id is not None:
        if found is None or kind != "detect":
            raise MissingError(f"no detect job {job_id!r} on exposure {exposure_id}",
                               code="job_not_found")
        if phase != JobPhase.COMPLETED:
            raise NotReadyError(f"detect job {job_id} is {JobPhase(phase).value}; wait until "
                                "it is COMPLETED", code="job_not_completed")
    if key is None:
        raise NotReadyError(f"detect job {found} predates stored calexps; run a new detect "
                            "job", code="not_characterized")
    return DetectCalexp(found, key)


@cache
def _statement(given_job: bool) -> Select[tuple[str, str, JobPhase, str]]:
    """The exposure's row joined to its detect job (the one given, or the newest
    completed) and that job's calexp artifact; no row when the exposure is not the owner's."""
    e, j, a = ExposureRecord.__table__, JobRecord.__table__, ArtifactRecord.__table__
    on_job = and_(j.c.exposure_id == e.c.id, j.c.owner == e.c.owner)
    on_job = (and_(on_job, j.c.id == bindparam("job_id")) if given_job
              else and_(on_job, j.c.kind == "detect", j.c.phase == JobPhase.COMPLETED))
    on_artifact = and_(a.c.job_id == j.c.id, a.c.owner == e.c.owner, a.c.name == "calexp")
    return (select(j.c.id, j.c.kind, j.c.phase, a.c.storage_key)
            .select_from(e.outerjoin(j, on_job).outerjoin(a, on_artifact))
            .where(e.c.owner == bindparam("owner"), e.c.id == bindparam("exposure_id"))
            .order_by(j.c.created_at.desc(), j.c.id)
            .limit(1))
