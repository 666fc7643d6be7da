"""Adding, listing and deleting exposures for one owner."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.exposures import ExposureRepository, new_exposure
from app.db.jobs import JobRepository
from app.db.models import ExposureRecord, JobRecord
from app.io.errors import ExposureReadError
from app.io.fits_exposure import read_exposure_metadata
from app.jobs.fetch import UnsafeUrlError, check_public_url
from app.jobs.runner import Sender
from app.services.errors import InvalidInputError, NotFoundError
from app.services.jobs import JobService
from app.storage.blobs import BlobStore, StagedBlob, exposure_key, job_prefix


class ExposureService:
    """Exposures of one owner, each stored once per content hash."""

    def __init__(self, session: Session, store: BlobStore, queue: Sender, owner: str) -> None:
        self._session = session
        self._store = store
        self._queue = queue
        self._owner = owner

    def add_upload(self, staged: StagedBlob, filename: str | None) -> tuple[ExposureRecord, bool]:
        """Register an uploaded file; returns the exposure and whether it is new.

        The same content uploaded again gives back the stored exposure. A file the reader
        cannot use is refused with its reason, and nothing is kept.
        """
        staged.close()
        existing = self._by_hash(staged.sha256)
        if existing is not None:
            return existing, False
        try:
            metadata = read_exposure_metadata(staged.path)
        except ExposureReadError as error:
            raise InvalidInputError(
                f"{filename or 'the upload'} is not a usable exposure: {error.message}",
                code="invalid_exposure",
                detail={"reason": error.code},
            ) from error
        key = exposure_key(staged.sha256)
        self._store.publish(staged, key)
        record = new_exposure(
            owner=self._owner,
            sha256=staged.sha256,
            size=staged.size,
            storage_key=key,
            filename=filename,
            metadata=metadata,
        )
        try:
            with self._session.begin():
                ExposureRepository(self._session).add(record)
        except IntegrityError:  # the same file, uploaded at the same moment
            existing = self._by_hash(staged.sha256)
            if existing is None:
                raise
            return existing, False
        return record, True

    def submit_url(self, url: str) -> JobRecord:
        """Queue a ``fetch`` job for a public http(s) URL."""
        try:
            check_public_url(url)
        except UnsafeUrlError as error:
            raise InvalidInputError(str(error), code="unsafe_url") from error
        return JobService(self._session, self._store, self._queue, self._owner).submit(
            "fetch", None, {"url": url}
        )

    def get(self, exposure_id: str) -> ExposureRecord:
        with self._session.begin():
            record = ExposureRepository(self._session).get(self._owner, exposure_id)
        if record is None:
            raise NotFoundError(f"no exposure {exposure_id!r}", code="exposure_not_found")
        return record

    def page(self, *, limit: int, offset: int) -> tuple[list[ExposureRecord], int]:
        with self._session.begin():
            return ExposureRepository(self._session).page(self._owner, limit=limit, offset=offset)

    def delete(self, exposure_id: str) -> None:
        """Delete the exposure, its jobs and their results, then the files no one else uses."""
        with self._session.begin():
            exposures = ExposureRepository(self._session)
            record = exposures.get(self._owner, exposure_id)
            if record is None:
                raise NotFoundError(f"no exposure {exposure_id!r}", code="exposure_not_found")
            job_ids = JobRepository(self._session).ids_for_exposure(exposure_id)
            exposures.delete(record)
            orphaned = not exposures.key_in_use(record.storage_key)
        for job_id in job_ids:
            self._store.delete_prefix(job_prefix(job_id))
        if orphaned:
            self._store.delete(record.storage_key)

    def _by_hash(self, sha256: str) -> ExposureRecord | None:
        with self._session.begin():
            return ExposureRepository(self._session).by_hash(self._owner, sha256)
