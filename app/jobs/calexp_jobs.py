"""Which detect job's stored calexp (PSF, aperture corrections) describes an exposure.

Shared by the forced job's submission and the synchronous services, so both refuse the same
cases with the same words: a detect job that is not there is a `MissingError`, one that has
not finished (or none at all) a `NotReadyError`.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.db.jobs import JobRepository
from app.db.models import ArtifactRecord, JobPhase, JobRecord
from app.db.sources import SourceRepository
from app.jobs.errors import MissingError, NotReadyError

RUN_DETECT = 'run one first: POST /v1/jobs {"kind": "detect", "exposure_id": …}'


def calexp_job(session: Session, owner: str, exposure_id: str, job_id: str | None = None
               ) -> tuple[JobRecord, ArtifactRecord]:
    """The detect job (``job_id``, or the newest completed one) and its ``calexp`` artifact."""
    jobs = JobRepository(session)
    if job_id is None:
        job = jobs.latest_completed(owner, exposure_id, "detect")
        if job is None:
            raise NotReadyError(f"exposure {exposure_id} has no completed detect job, so no "
                                f"PSF yet; {RUN_DETECT}", code="not_characterized")
    else:
        job = jobs.get(owner, job_id)
        if job is None or job.kind != "detect" or job.exposure_id != exposure_id:
            raise MissingError(f"no detect job {job_id!r} on exposure {exposure_id}",
                               code="job_not_found")
        if job.phase != JobPhase.COMPLETED:
            raise NotReadyError(f"detect job {job_id} is {job.phase.value}; wait until it is "
                                "COMPLETED", code="job_not_completed")
    artifact = SourceRepository(session, owner).artifact(job.id, "calexp")
    if artifact is None:
        raise NotReadyError(f"detect job {job.id} predates stored calexps; run a new detect "
                            "job", code="not_characterized")
    return job, artifact
