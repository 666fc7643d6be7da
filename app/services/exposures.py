"""Adding, listing and deleting exposures for one owner."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.exposures import ExposureRepository, new_exposure
from app.db.jobs import JobRepository
from app.db.models import ExposureRecord, JobRecord
from app.io.errors import ExposureReadError
from app.io.intake import assemble_exposure, check_exposure
from app.io.read_options import OptionError, ReadOptions
from app.io.read_request import COMPANIONS, ReadRequest
from app.jobs.fetch import UnsafeUrlError, check_public_url
from app.jobs.runner import Sender
from app.services.errors import InvalidInputError, NotFoundError, PayloadTooLargeError
from app.services.jobs import JobService
from app.storage.blobs import BlobStore, StagedBlob, exposure_key, job_prefix


class ExposureService:
    """Exposures of one owner, each stored once per content hash."""

    def __init__(self, session: Session, store: BlobStore, queue: Sender, owner: str) -> None:
        self._session = session
        self._store = store
        self._queue = queue
        self._owner = owner

    def add_upload(
        self, staged: StagedBlob, filename: str | None,
        companions: Mapping[str, tuple[StagedBlob, str | None]] | None = None,
        request: ReadRequest | None = None, *, limit: int | None = None,
    ) -> tuple[ExposureRecord, bool]:
        """Register an uploaded file; returns the exposure and whether it is new.

        ``companions`` are the uploaded companion planes by name (variance, weight, mask,
        background) with their client file names; ``request`` the reading options. A file
        read as it is is stored as it came; with options, the exposure they assemble is
        stored (see :mod:`app.io.intake`). The same content uploaded again gives back the
        stored exposure. A file the reader cannot use is refused with its reason, and nothing
        is kept; ``limit`` bounds the memory its pixels may take.
        """
        staged.close()
        files = {name: (blob.path, label) for name, (blob, label) in (companions or {}).items()}
        for blob, _ in (companions or {}).values():
            blob.close()
        options = _options(request or ReadRequest(), files)
        if options.is_default:
            existing = self._by_hash(staged.sha256)
            if existing is not None:
                return existing, False
            metadata = _taken_in(filename, lambda: check_exposure(staged.path, max_bytes=limit))
            return self._register(staged, filename, metadata)
        with self._store.stage() as assembled:
            metadata = _taken_in(filename, lambda: assemble_exposure(
                staged.path, options, assembled, filename, max_bytes=limit))
            existing = self._by_hash(assembled.sha256)
            if existing is not None:
                return existing, False
            return self._register(assembled, filename, metadata)

    def _register(self, blob: StagedBlob, filename: str | None,
                  metadata: dict[str, Any]) -> tuple[ExposureRecord, bool]:
        """Store ``blob`` under its content hash and add its exposure row."""
        key = exposure_key(blob.sha256)
        self._store.publish(blob, key)
        record = new_exposure(
            owner=self._owner,
            sha256=blob.sha256,
            size=blob.size,
            storage_key=key,
            filename=filename,
            metadata=metadata,
        )
        try:
            with self._session.begin():
                ExposureRepository(self._session).add(record)
        except IntegrityError:  # the same file, uploaded at the same moment
            existing = self._by_hash(blob.sha256)
            if existing is None:
                raise
            return existing, False
        return record, True

    def submit_url(self, parameters: Mapping[str, Any]) -> JobRecord:
        """Queue a ``fetch`` job for a public http(s) URL (and its companions' URLs), once the
        URLs and reading options are checked."""
        request = ReadRequest.model_validate(
            {k: v for k, v in parameters.items() if k in ReadRequest.model_fields})
        _options(request, {c: (Path(c), None) for c in COMPANIONS
                           if parameters.get(f"{c}_url") is not None})
        for name in ("url", *(f"{c}_url" for c in COMPANIONS)):
            url = parameters.get(name)
            if url is None:
                continue
            try:
                check_public_url(url)
            except UnsafeUrlError as error:
                raise InvalidInputError(str(error), code="unsafe_url") from error
        return JobService(self._session, self._store, self._queue, self._owner).submit(
            "fetch", None, dict(parameters)
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


def _options(request: ReadRequest, files: Mapping[str, tuple[Path, str | None]]) -> ReadOptions:
    try:
        return request.options(files)
    except OptionError as error:
        raise InvalidInputError(str(error), code="invalid_option") from error


def _taken_in(filename: str | None, read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``read()``, its refusals as the client's errors: 413 for a file whose pixels need more
    memory than allowed, 422 with the reason for one that cannot be used."""
    try:
        return read()
    except ExposureReadError as error:
        message = f"{filename or 'the upload'} is not a usable exposure: {error.message}"
        if error.code == "too_large":
            raise PayloadTooLargeError(message, detail={"reason": error.code}) from error
        raise InvalidInputError(message, code="invalid_exposure",
                                detail={"reason": error.code}) from error
