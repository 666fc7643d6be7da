"""Request and response bodies of the API, converted explicitly from the database rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.db.models import ExposureRecord, JobPhase, JobRecord
from app.io.read_request import ReadRequest
from app.services.results import SourceDetail


class Exposure(BaseModel):
    """A stored exposure and what its headers say."""

    id: str
    filename: str | None
    size: int = Field(description="Bytes.")
    sha256: str
    created_at: datetime
    shape: list[int] | None = Field(None, description="(height, width) in pixels.")
    band: str | None = None
    visit: int | None = None
    detector: int | None = None
    mjd: float | None = None
    njy_per_count: float | None = Field(None, description="Calibration: nJy per count.")
    corners: list[list[float]] | None = Field(None, description="ICRS (RA, Dec) of corners, deg.")
    ra_min: float | None = None
    ra_max: float | None = None
    dec_min: float | None = None
    dec_max: float | None = None
    mask_planes: dict[str, int] | None = None
    metadata: dict[str, Any] = Field(description="Everything read from the headers, WCS included.")

    @classmethod
    def from_record(cls, r: ExposureRecord) -> Exposure:
        m = r.meta
        return cls(
            id=r.id,
            filename=r.filename,
            size=r.size,
            sha256=r.sha256,
            created_at=r.created_at,
            shape=m.get("shape"),
            band=m.get("band"),
            visit=m.get("visit"),
            detector=m.get("detector"),
            mjd=m.get("mjd"),
            njy_per_count=m.get("njy_per_count"),
            corners=m.get("corners"),
            ra_min=r.ra_min,
            ra_max=r.ra_max,
            dec_min=r.dec_min,
            dec_max=r.dec_max,
            mask_planes=m.get("mask_planes"),
            metadata=m,
        )


class ExposureList(BaseModel):
    exposures: list[Exposure]
    total: int
    limit: int
    offset: int


class ExposureUrl(ReadRequest):
    """An exposure for the service to fetch, with its companion planes and reading options."""

    url: str = Field(max_length=2048, description="http or https URL of a FITS file.")
    variance_url: str | None = Field(None, max_length=2048, description="URL of a variance map.")
    weight_url: str | None = Field(
        None, max_length=2048, description="URL of an inverse-variance (weight) map; 0 = no data.")
    mask_url: str | None = Field(
        None, max_length=2048, description="URL of a data-quality map (see mask_bits).")
    background_url: str | None = Field(
        None, max_length=2048, description="URL of the full-resolution subtracted background.")


class JobCreate(BaseModel):
    """A job to run; ``config`` uses the LSST task config names."""

    model_config = ConfigDict(extra="forbid")
    kind: str = Field("detect", description="What to run: detect, or forced (positions in config).")
    exposure_id: str | None = None
    config: dict[str, Any] = Field(
        default_factory=dict,
        description='e.g. {"detection": {"thresholdValue": 4, "thresholdType": "stdev"}}',
    )


class JobError(BaseModel):
    code: str | None
    message: str | None


class Job(BaseModel):
    """A job and where it is in its life (IVOA UWS phases)."""

    id: str
    kind: str
    phase: JobPhase
    exposure_id: str | None
    config: dict[str, Any]
    progress: float = Field(description="Fraction done, 0 to 1.")
    step: str | None = Field(description="What the job is doing now.")
    attempt: int
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    error: JobError | None
    summary: dict[str, Any] | None

    @classmethod
    def from_record(cls, r: JobRecord) -> Job:
        duration = None
        if r.started_at is not None and r.ended_at is not None:
            duration = (r.ended_at - r.started_at).total_seconds()
        has_error = r.error_code is not None or r.error_message is not None
        return cls(
            id=r.id,
            kind=r.kind,
            phase=r.phase,
            exposure_id=r.exposure_id,
            config=r.parameters,
            progress=r.progress,
            step=r.step,
            attempt=r.attempt,
            created_at=r.created_at,
            started_at=r.started_at,
            ended_at=r.ended_at,
            duration_seconds=duration,
            error=JobError(code=r.error_code, message=r.error_message) if has_error else None,
            summary=r.summary,
        )


class JobList(BaseModel):
    jobs: list[Job]
    total: int
    limit: int
    offset: int


class SourcePage(BaseModel):
    job_id: str
    sources: list[dict[str, Any]]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null at the end."
    )


class Peak(BaseModel):
    id: int
    x: int
    y: int
    value: float


class FootprintOut(BaseModel):
    """Spans are (y, x0, x1) with x1 inclusive; bbox is (x0, y0, x1, y1) inclusive."""

    bbox: list[int]
    area: int
    spans: list[list[int]]
    peaks: list[Peak]
    heavy: bool


class SourceOut(BaseModel):
    job_id: str
    id: int
    parent: int | None = Field(description="Parent source id; null for a parent.")
    children: list[int]
    source: dict[str, Any] = Field(description="The full catalog row.")
    footprint: FootprintOut | None

    @classmethod
    def from_detail(cls, job_id: str, d: SourceDetail) -> SourceOut:
        fp = d.footprint
        footprint = None
        if fp is not None:
            footprint = FootprintOut(
                bbox=list(fp.bbox),
                area=fp.area,
                spans=fp.spans.tolist(),
                peaks=[Peak(id=p[0], x=p[1], y=p[2], value=p[3]) for p in fp.peaks.tolist()],
                heavy=fp.is_heavy,
            )
        return cls(
            job_id=job_id,
            id=d.source.id,
            parent=d.source.parent or None,
            children=d.children,
            source=d.source.row,
            footprint=footprint,
        )


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
