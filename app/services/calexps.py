"""The characterized exposure behind forced photometry and image products.

A detect job leaves the exposure it worked on (PSF, aperture corrections, re-estimated
background, DETECTED mask) as its ``calexp`` artifact; this service finds the right one for
an exposure (a given detect job's, or the newest completed one) and serves it from memory.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.db.exposures import ExposureRepository
from app.db.jobs import JobRepository
from app.db.models import JobPhase, JobRecord
from app.db.sources import SourceRepository
from app.engine.exposure import Exposure
from app.services.errors import ConflictError, NotFoundError
from app.storage.blobs import BlobStore
from app.storage.exposure_cache import ExposureCache


class CalexpService:
    def __init__(self, session: Session, store: BlobStore, cache: ExposureCache,
                 owner: str) -> None:
        self._session = session
        self._store = store
        self._cache = cache
        self._owner = owner

    def detect_job(self, exposure_id: str, job_id: str | None = None) -> JobRecord:
        """The detect job whose results describe this exposure (given, or the newest)."""
        if ExposureRepository(self._session).get(self._owner, exposure_id) is None:
            raise NotFoundError(f"no exposure {exposure_id!r}", code="exposure_not_found")
        jobs = JobRepository(self._session)
        if job_id is None:
            job = jobs.latest_completed(self._owner, exposure_id, "detect")
            if job is None:
                raise ConflictError(
                    f"exposure {exposure_id} has no completed detect job, so no PSF yet; run "
                    'one first: POST /v1/jobs {"kind": "detect", "exposure_id": …}',
                    code="not_characterized",
                )
            return job
        job = jobs.get(self._owner, job_id)
        if job is None or job.kind != "detect" or job.exposure_id != exposure_id:
            raise NotFoundError(f"no detect job {job_id!r} on exposure {exposure_id}",
                                code="job_not_found")
        if job.phase != JobPhase.COMPLETED:
            raise ConflictError(f"detect job {job_id} is {job.phase.value}; wait until it is "
                                "COMPLETED", code="job_not_completed")
        return job

    def characterized(self, exposure_id: str, job_id: str | None = None
                      ) -> tuple[Exposure, JobRecord]:
        """The exposure as its detect job left it, and that job."""
        job = self.detect_job(exposure_id, job_id)
        artifact = SourceRepository(self._session, self._owner).artifact(job.id, "calexp")
        if artifact is None:
            raise ConflictError(
                f"detect job {job.id} predates stored calexps; run a new detect job",
                code="not_characterized")
        return self._cache.get(self._store, artifact.storage_key), job
