"""``/v1/jobs``: submit, read, list, cancel and delete jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from app.api.dependencies import JobServiceDep
from app.api.schemas import Job, JobCreate, JobList
from app.db.models import JobPhase

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post(
    "",
    status_code=201,
    response_model=Job,
    summary="Submit a job; it is queued at once",
    responses={422: {"description": "Unknown kind, bad config (the key is named)"}},
)
def submit_job(body: JobCreate, service: JobServiceDep) -> JSONResponse:
    job = service.submit(body.kind, body.exposure_id, body.config)
    return JSONResponse(
        Job.from_record(job).model_dump(mode="json"),
        status_code=201,
        headers={"Location": f"/v1/jobs/{job.id}"},
    )


@router.get("", response_model=JobList, summary="The caller's jobs, newest first")
def list_jobs(
    service: JobServiceDep,
    phase: JobPhase | None = None,
    kind: str | None = None,
    exposure_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JobList:
    records, total = service.page(
        phase=phase, kind=kind, exposure_id=exposure_id, limit=limit, offset=offset
    )
    return JobList(
        jobs=[Job.from_record(r) for r in records], total=total, limit=limit, offset=offset
    )


@router.get("/{job_id}", response_model=Job, summary="A job: phase, progress, timings, error")
def get_job(job_id: str, service: JobServiceDep) -> Job:
    return Job.from_record(service.get(job_id))


@router.post(
    "/{job_id}/cancel",
    response_model=Job,
    summary="Cancel a queued or running job (its process is killed)",
    responses={409: {"description": "The job has already finished"}},
)
def cancel_job(job_id: str, service: JobServiceDep) -> Job:
    return Job.from_record(service.cancel(job_id))


@router.delete("/{job_id}", status_code=204, summary="Delete a job and its results")
def delete_job(job_id: str, service: JobServiceDep) -> Response:
    service.delete(job_id)
    return Response(status_code=204)
