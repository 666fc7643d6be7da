"""The tables: exposures, jobs, sources (with their set flags), forced sources and artifacts.

Exposure, job, source and artifact rows carry their owner so every query can be scoped by
it (a source's flag rows belong to it through their foreign key). Sources keep typed, indexed
core columns for filtering plus the whole catalog row as JSON for rendering.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Enum,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, utcnow


class JobPhase(StrEnum):
    """IVOA UWS execution phases, as far as skyphot uses them."""

    PENDING = "PENDING"
    QUEUED = "QUEUED"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"
    ABORTED = "ABORTED"

    @property
    def is_final(self) -> bool:
        return self in (JobPhase.COMPLETED, JobPhase.ERROR, JobPhase.ABORTED)


class ExposureRecord(Base):
    """An exposure file, stored once per owner and content hash."""

    __tablename__ = "exposures"
    __table_args__ = (
        UniqueConstraint("owner", "sha256", name="uq_exposures_owner_sha256"),
        Index("ix_exposures_owner_created", "owner", "created_at"),
        Index("ix_exposures_sky", "dec_min", "dec_max", "ra_min", "ra_max"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(255), index=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata")
    ra_min: Mapped[float | None] = mapped_column(Float)
    ra_max: Mapped[float | None] = mapped_column(Float)
    dec_min: Mapped[float | None] = mapped_column(Float)
    dec_max: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobRecord(Base):
    """A job: the database is the source of truth for its phase; the queue carries its id."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_owner_created", "owner", "created_at"),
        Index("ix_jobs_phase_heartbeat", "phase", "heartbeat_at"),
        Index("ix_jobs_owner_request_key", "owner", "request_key"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    exposure_id: Mapped[str | None] = mapped_column(
        ForeignKey("exposures.id", ondelete="CASCADE"), index=True
    )
    parameters: Mapped[dict[str, Any]]
    phase: Mapped[JobPhase] = mapped_column(
        Enum(JobPhase, native_enum=False, length=16, validate_strings=True)
    )
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    step: Mapped[str | None] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any] | None]
    request_key: Mapped[str | None] = mapped_column(String(64))
    """What was asked for, hashed, when an identical request may be answered by this job
    (a light curve over the synchronous limit); null otherwise."""


class SourceRecord(Base):
    """One catalog row of a detect job: typed core columns plus the full row."""

    __tablename__ = "sources"
    __table_args__ = (
        Index("ix_sources_job_parent", "job_id", "parent"),
        Index("ix_sources_job_coord", "job_id", "coord_ra", "coord_dec"),
    )

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    owner: Mapped[str] = mapped_column(String(64))
    parent: Mapped[int] = mapped_column(BigInteger)
    deblend_nchild: Mapped[int] = mapped_column(Integer)
    x: Mapped[float | None] = mapped_column(Float)
    y: Mapped[float | None] = mapped_column(Float)
    coord_ra: Mapped[float | None] = mapped_column(Float)
    coord_dec: Mapped[float | None] = mapped_column(Float)
    # unit vector of (coord_ra, coord_dec): an exact cone test is then plain arithmetic
    coord_cx: Mapped[float | None] = mapped_column(Float)
    coord_cy: Mapped[float | None] = mapped_column(Float)
    coord_cz: Mapped[float | None] = mapped_column(Float)
    psf_inst_flux: Mapped[float | None] = mapped_column(Float)
    psf_inst_flux_err: Mapped[float | None] = mapped_column(Float)
    psf_flux: Mapped[float | None] = mapped_column(Float)
    psf_flux_err: Mapped[float | None] = mapped_column(Float)
    ap12_inst_flux: Mapped[float | None] = mapped_column(Float)
    ap12_inst_flux_err: Mapped[float | None] = mapped_column(Float)
    shape_xx: Mapped[float | None] = mapped_column(Float)
    shape_yy: Mapped[float | None] = mapped_column(Float)
    shape_xy: Mapped[float | None] = mapped_column(Float)
    row: Mapped[dict[str, Any]]


class SourceFlagRecord(Base):
    """A flag that is set on a source; absent rows are unset flags."""

    __tablename__ = "source_flags"
    __table_args__ = (
        ForeignKeyConstraint(
            ["job_id", "source_id"], ["sources.job_id", "sources.id"], ondelete="CASCADE"
        ),
        Index("ix_source_flags_job_flag", "job_id", "flag"),
    )

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    source_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    flag: Mapped[str] = mapped_column(String(128), primary_key=True)


class ForcedSourceRecord(Base):
    """One row of a forced job: a position measured on an exposure (typed core columns).

    ``row`` is the row's place in the job's result table (the ``forced`` artifact, which
    holds every measurement column); ``position`` the input row it measures.
    """

    __tablename__ = "forced_sources"
    __table_args__ = (
        Index("ix_forced_sources_job_position", "job_id", "position"),
        Index("ix_forced_sources_job_exposure", "job_id", "exposure_id"),
    )

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    row: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    owner: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(BigInteger)
    exposure_id: Mapped[str] = mapped_column(String(32))
    position_kind: Mapped[str] = mapped_column(String(16))
    client_id: Mapped[str | None] = mapped_column(String(255))
    coord_ra: Mapped[float | None] = mapped_column(Float)
    coord_dec: Mapped[float | None] = mapped_column(Float)
    coord_cx: Mapped[float | None] = mapped_column(Float)
    coord_cy: Mapped[float | None] = mapped_column(Float)
    coord_cz: Mapped[float | None] = mapped_column(Float)
    x: Mapped[float | None] = mapped_column(Float)
    y: Mapped[float | None] = mapped_column(Float)
    psf_inst_flux: Mapped[float | None] = mapped_column(Float)
    psf_inst_flux_err: Mapped[float | None] = mapped_column(Float)
    psf_flux: Mapped[float | None] = mapped_column(Float)
    psf_flux_err: Mapped[float | None] = mapped_column(Float)
    psf_snr: Mapped[float | None] = mapped_column(Float)
    flags: Mapped[int] = mapped_column(BigInteger)
    """Bit i set: the job summary's ``flags[i]`` is set."""
    tags: Mapped[dict[str, Any] | None]


class ArtifactRecord(Base):
    """A result file of a job in blob storage (catalog, footprints, mask)."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    owner: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
