"""The characterized exposure behind forced photometry and image products.

A detect job leaves the exposure it worked on (PSF, aperture corrections, re-estimated
background, DETECTED mask) as its ``calexp`` artifact; this service finds the right one for
an exposure (a given detect job's, or the newest completed one) and serves it from memory.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.db.exposures import ExposureRepository
from app.db.models import ArtifactRecord, JobRecord
from app.engine.exposure import Exposure
from app.jobs.calexp_jobs import calexp_job
from app.jobs.errors import UsageError
from app.services.errors import NotFoundError, refused
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
        """The detect job whose calexp describes this exposure (given, or the newest)."""
        return self._calexp(exposure_id, job_id)[0]

    def characterized(self, exposure_id: str, job_id: str | None = None
                      ) -> tuple[Exposure, JobRecord]:
        """The exposure as its detect job left it, and that job."""
        job, artifact = self._calexp(exposure_id, job_id)
        return self._cache.get(self._store, artifact.storage_key), job

    def _calexp(self, exposure_id: str, job_id: str | None) -> tuple[JobRecord, ArtifactRecord]:
        if ExposureRepository(self._session).get(self._owner, exposure_id) is None:
            raise NotFoundError(f"no exposure {exposure_id!r}", code="exposure_not_found")
        try:
            return calexp_job(self._session, self._owner, exposure_id, job_id)
        except UsageError as error:
            raise refused(error) from error
