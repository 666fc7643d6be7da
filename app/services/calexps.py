"""The characterized exposure behind forced photometry and image products.

A detect job leaves the exposure it worked on (PSF, aperture corrections, re-estimated
background, DETECTED mask) as its ``calexp`` artifact; this service finds the right one for
an exposure (a given detect job's, or the newest completed one) and serves it from memory.
"""

from __future__ import annotations

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from app.engine.exposure import Exposure
from app.jobs.calexp_jobs import DetectCalexp, calexp_job
from app.jobs.errors import UsageError
from app.services.errors import refused
from app.storage.blobs import BlobStore
from app.storage.exposure_cache import ExposureCache


class CalexpService:
    def __init__(self, session: Session | Connection, store: BlobStore, cache: ExposureCache,
                 owner: str) -> None:
        self._session = session
        self._store = store
        self._cache = cache
        self._owner = owner

    def detect_job(self, exposure_id: str, job_id: str | None = None) -> DetectCalexp:
        """The detect job whose calexp describes this exposure (given, or the newest)."""
        try:
            return calexp_job(self._session, self._owner, exposure_id, job_id)
        except UsageError as error:
            raise refused(error) from error

    def characterized(self, exposure_id: str, job_id: str | None = None, *, load: bool = True
                      ) -> tuple[Exposure, DetectCalexp]:
        """The exposure as its detect job left it, and that job; with ``load`` false only
        if it is in memory already (`NotInMemory` otherwise)."""
        calexp = self.detect_job(exposure_id, job_id)
        return self.exposure(calexp, load=load), calexp

    def exposure(self, calexp: DetectCalexp, *, load: bool = True) -> Exposure:
        """The calexp a detect job found earlier left (from memory once read)."""
        return self._cache.get(self._store, calexp.key, load=load)
