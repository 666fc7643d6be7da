"""Job kinds: what a job computes in its child process and how the result is stored.

The compute function runs in a separate process, so it takes and returns plain picklable
values; the finalize function runs in the worker, in the transaction that marks the job
COMPLETED.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy.orm import Session

from app.db.forced_sources import ForcedRows
from app.db.models import JobRecord
from app.storage.blobs import attempt_prefix

Progress = Callable[[float, str], None]
"""Report progress: fraction done in [0, 1] and the name of the current step."""

BUILTIN_KIND_MODULES = ("app.jobs.detect", "app.jobs.fetch", "app.jobs.forced")


@dataclass(frozen=True)
class JobContext:
    """What the child process needs to run one attempt of a job."""

    job_id: str
    owner: str
    attempt: int
    parameters: dict[str, Any]
    exposure_id: str | None
    exposure_key: str | None
    storage_url: str
    max_bytes: int
    inputs: dict[str, Any] = field(default_factory=dict)
    """What the kind's ``inputs`` hook found for the child to read (storage keys, …)."""

    @property
    def artifact_prefix(self) -> str:
        """Where this attempt writes its files; attempts never overwrite each other's."""
        return attempt_prefix(self.job_id, self.attempt)


@dataclass(frozen=True)
class Artifact:
    """A file an attempt wrote to blob storage."""

    name: str
    key: str
    media_type: str
    size: int


@dataclass
class JobOutput:
    """What a compute function returns to the worker."""

    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    flags: list[tuple[int, str]] = field(default_factory=list)
    exposure: dict[str, Any] | None = None
    forced_rows: ForcedRows | None = None


@dataclass(frozen=True)
class InspectedUpload:
    """What a kind learnt of an uploaded file: recorded in the job's parameters."""

    extension: str
    """Stored under this file name extension."""
    description: dict[str, Any]


@dataclass(frozen=True)
class UploadSpec:
    """A file a kind takes beside its parameters: a part of a multipart ``POST /v1/jobs``."""

    part: str
    """The multipart part's name."""
    parameter: str
    """The parameter the service fills with the file's description and storage key (a
    client may not set it)."""
    inspect: Callable[[Path, str | None], InspectedUpload]
    """(staged file, client's file name) → its description; a `UsageError` (the message
    says what to fix) refuses the file with a 422."""


@dataclass(frozen=True)
class JobKind:
    """A kind of job the service runs."""

    name: str
    parameters: type[BaseModel]
    compute: Callable[[JobContext, Progress], JobOutput]
    finalize: Callable[[Session, JobRecord, JobOutput], None]
    exposure: Literal["required", "optional", "none"] = "required"
    """Whether a job names an exposure (``optional``: it may, e.g. forced photometry on
    every covering exposure when it does not)."""
    prepare: Callable[[Session, str, str | None, dict[str, Any]], dict[str, Any]] | None = None
    """At submission, in its transaction: (session, owner, exposure id, parameters) → the
    parameters to store, completed from the database (e.g. which detect job's calexp to use);
    a `UsageError` refuses the job: 422, or 404 / 409 for its `MissingError` /
    `NotReadyError` subclasses."""
    inputs: Callable[[Session, JobRecord], dict[str, Any]] | None = None
    """When an attempt starts, in the worker: (session, job) → plain values for the child
    (``JobContext.inputs``), such as the storage keys of files other jobs left."""
    upload: UploadSpec | None = None


_KINDS: dict[str, JobKind] = {}


def register_kind(kind: JobKind) -> JobKind:
    """Make ``kind`` known to the API and the workers of this process."""
    _KINDS[kind.name] = kind
    return kind


def _load_builtins() -> None:
    for module in BUILTIN_KIND_MODULES:
        importlib.import_module(module)


def get_kind(name: str) -> JobKind | None:
    _load_builtins()
    return _KINDS.get(name)


def kind_names() -> list[str]:
    _load_builtins()
    return sorted(_KINDS)


def upload_parts() -> set[str]:
    """The multipart file parts some kind takes."""
    _load_builtins()
    return {k.upload.part for k in _KINDS.values() if k.upload is not None}
