"""Submitting, reading, cancelling and deleting jobs for one owner."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.db.base import utcnow
from app.db.exposures import ExposureRepository
from app.db.jobs import JobRepository
from app.db.models import JobPhase, JobRecord
from app.jobs.errors import UsageError
from app.jobs.kinds import JobKind, get_kind, kind_names
from app.jobs.runner import Sender
from app.services.errors import ConflictError, InvalidInputError, NotFoundError, refused
from app.storage.blobs import BlobStore, StagedBlob, job_prefix

logger = logging.getLogger(__name__)


def validation_detail(error: ValidationError, prefix: tuple[str, ...]) -> list[dict[str, Any]]:
    """Pydantic errors as ``{"loc", "message"}``, the location naming the offending key."""
    return [
        {"loc": [*prefix, *map(str, e["loc"])], "message": e["msg"], "type": e["type"]}
        for e in error.errors(include_url=False)
    ]


def describe_validation(detail: list[dict[str, Any]]) -> str:
    """One line naming every bad key: ``config.detection.foo: Extra inputs are not permitted``."""
    return "; ".join(f"{'.'.join(d['loc'])}: {d['message']}" for d in detail)


@dataclass(frozen=True)
class JobUpload:
    """A file sent with a job (a multipart part), staged and not yet stored."""

    part: str
    staged: StagedBlob
    filename: str | None


SubmissionCheck = Callable[[str | None, dict[str, Any]], dict[str, Any]]
"""A check at submission that needs more than the database, e.g. a calexp's pixels:
(exposure id, validated parameters) → the parameters, with what it checked pinned; raises
the service's errors to refuse the job. It runs before the job's transaction, so no
connection waits on it."""


class JobService:
    """Jobs of one owner; the queue gets a job's id only after the job is committed."""

    def __init__(self, session: Session, store: BlobStore, queue: Sender, owner: str,
                 checks: Mapping[str, SubmissionCheck] | None = None) -> None:
        self._session = session
        self._store = store
        self._queue = queue
        self._owner = owner
        self._checks = dict(checks or {})

    def submit(self, kind_name: str, exposure_id: str | None, config: dict[str, Any],
               upload: JobUpload | None = None, request_key: str | None = None) -> JobRecord:
        """Validate, store as QUEUED, commit, then send the id to the workers.

        An uploaded file is checked by its kind first and stored under the job, in the
        same step as the job row: a refused job leaves no file, and no file is lost.
        ``request_key`` marks a job that later identical requests may be answered by.
        """
        kind = get_kind(kind_name)
        if kind is None:
            raise InvalidInputError(
                f"unknown job kind {kind_name!r}; known kinds: {', '.join(kind_names())}",
                code="unknown_kind",
            )
        job_id = uuid.uuid4().hex
        key = None
        if upload is not None:
            config, key = self._attach(kind, job_id, config, upload)
        try:
            parameters = kind.parameters.model_validate(config).model_dump(mode="json")
        except ValidationError as error:
            detail = validation_detail(error, ("config",))
            raise InvalidInputError(
                f"invalid config: {describe_validation(detail)}",
                code="invalid_config",
                detail=detail,
            ) from error
        check = self._checks.get(kind_name)
        if check is not None:
            parameters = check(exposure_id, parameters)
        try:
            with self._session.begin():
                if kind.exposure == "none":
                    exposure_id = None
                elif exposure_id is None and kind.exposure == "required":
                    raise InvalidInputError(f"a {kind_name} job needs an exposure_id")
                if exposure_id is not None:
                    if ExposureRepository(self._session).get(self._owner, exposure_id) is None:
                        raise NotFoundError(
                            f"no exposure {exposure_id!r}; upload one with POST /v1/exposures",
                            code="exposure_not_found",
                        )
                if kind.prepare is not None:
                    try:
                        parameters = kind.prepare(self._session, self._owner, exposure_id,
                                                  parameters)
                    except UsageError as error:
                        raise refused(error) from error
                job = JobRecord(
                    id=job_id,
                    owner=self._owner,
                    kind=kind_name,
                    exposure_id=exposure_id,
                    parameters=parameters,
                    phase=JobPhase.QUEUED,
                    heartbeat_at=utcnow(),
                    request_key=request_key,
                )
                JobRepository(self._session).add(job)
                if upload is not None and key is not None:
                    self._store.publish(upload.staged, key)
        except BaseException:
            if key is not None:
                self._store.delete(key)
            raise
        logger.info("job submitted", extra={"job_id": job.id})
        try:
            self._queue.send(job.id)
        except Exception:  # the reconciler sends it again once the broker is back
            logger.exception("could not queue job; it stays QUEUED", extra={"job_id": job.id})
        return job

    @staticmethod
    def _attach(kind: JobKind, job_id: str, config: dict[str, Any], upload: JobUpload
                ) -> tuple[dict[str, Any], str]:
        """The config with the kind's description of the uploaded file, and its storage key."""
        spec = kind.upload
        if spec is None or spec.part != upload.part:
            raise InvalidInputError(f"a {kind.name} job takes no file part {upload.part!r}",
                                    code="unexpected_file")
        if spec.parameter in config:
            raise InvalidInputError(
                f"config.{spec.parameter} is filled in from the uploaded {spec.part!r} part; "
                "leave it out", code="invalid_config")
        upload.staged.close()
        try:
            inspected = spec.inspect(upload.staged.path, upload.filename)
        except UsageError as error:
            name = upload.filename or f"the {spec.part!r} part"
            raise InvalidInputError(f"{name}: {error}", code=error.code) from error
        key = f"{job_prefix(job_id)}/{spec.part}{inspected.extension}"
        description = {**inspected.description, "key": key, "filename": upload.filename,
                       "size": upload.staged.size, "sha256": upload.staged.sha256}
        return {**config, spec.parameter: description}, key

    def get(self, job_id: str) -> JobRecord:
        with self._session.begin():
            job = JobRepository(self._session).get(self._owner, job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id!r}", code="job_not_found")
        return job

    def page(
        self,
        *,
        phase: JobPhase | None,
        kind: str | None,
        exposure_id: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[JobRecord], int]:
        with self._session.begin():
            return JobRepository(self._session).page(
                self._owner,
                phase=phase,
                kind=kind,
                exposure_id=exposure_id,
                limit=limit,
                offset=offset,
            )

    def cancel(self, job_id: str) -> JobRecord:
        """ABORTED now; the worker kills the job's process at its next heartbeat."""
        with self._session.begin():
            jobs = JobRepository(self._session)
            job = jobs.get(self._owner, job_id)
            if job is None:
                raise NotFoundError(f"no job {job_id!r}", code="job_not_found")
            if not jobs.abort(job_id):
                raise ConflictError(
                    f"job {job_id} is already {job.phase.value}; only a queued or running job "
                    "can be cancelled",
                    code="job_finished",
                )
            self._session.refresh(job)
        return job

    def delete(self, job_id: str) -> None:
        """Delete the job, its results and its files (a running one is stopped first)."""
        with self._session.begin():
            jobs = JobRepository(self._session)
            job = jobs.get(self._owner, job_id)
            if job is None:
                raise NotFoundError(f"no job {job_id!r}", code="job_not_found")
            jobs.delete(job)
        self._store.delete_prefix(job_prefix(job_id))
