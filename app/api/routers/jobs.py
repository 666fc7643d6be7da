"""``/v1/jobs``: submit, read, list, cancel and delete jobs."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app.api.dependencies import JobServiceDep, RuntimeDep
from app.api.job_responses import job_response
from app.api.schemas import Job, JobCreate, JobList
from app.api.uploads import receive_multipart
from app.db.models import JobPhase
from app.jobs.kinds import upload_parts
from app.services.errors import InvalidInputError
from app.services.jobs import JobUpload, describe_validation, validation_detail

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JOB_PART = "job"

SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": JobCreate.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        JOB_PART: {
                            "type": "string",
                            "description": "The job as JSON, as the application/json body.",
                        },
                        "positions": {
                            "type": "string",
                            "format": "binary",
                            "description": "A forced job's positions: a CSV, FITS, VOTable or "
                            "Parquet table of up to 10^6 rows with columns ra and dec "
                            "(degrees) or x and y (pixels); every other column is a tag that "
                            "comes back unchanged, in input order.",
                        },
                    },
                    "required": [JOB_PART],
                },
                "encoding": {JOB_PART: {"contentType": "application/json"}},
            },
        },
    }
}


@router.post(
    "",
    status_code=201,
    response_model=Job,
    summary="Submit a job; it is queued at once",
    description=(
        "A JSON body, or multipart/form-data with the job's JSON in the part `job` and a file "
        "beside it: a forced job takes its positions as the table in the part `positions` "
        "(CSV, FITS, VOTable or Parquet, at most SKYPHOT_MAX_JOB_UPLOAD_BYTES), streamed to "
        "storage and checked before the job is queued."
    ),
    openapi_extra=SUBMIT_BODY,
    responses={
        413: {"description": "The uploaded file is larger than the limit"},
        422: {"description": "Unknown kind, bad config (the key is named), unreadable table "
                             "or one without coordinate columns"},
    },
)
async def submit_job(
    request: Request, service: JobServiceDep, runtime: RuntimeDep
) -> JSONResponse:
    if not request.headers.get("content-type", "").startswith("multipart/"):
        body = _job_create(await request.body())
        job = await run_in_threadpool(service.submit, body.kind, body.exposure_id, body.config)
    else:
        limit = runtime.settings.max_job_upload_bytes
        with ExitStack() as stack:
            staged = {part: stack.enter_context(runtime.store.stage(limit=limit))
                      for part in sorted(upload_parts())}
            received = await receive_multipart(
                request, staged, limit, "SKYPHOT_MAX_JOB_UPLOAD_BYTES", frozenset({JOB_PART}))
            if JOB_PART not in received.fields:
                raise InvalidInputError(
                    f"the multipart body has no '{JOB_PART}' part: send the job's JSON in it",
                    code="missing_job")
            body = _job_create(received.fields[JOB_PART])
            uploads = [JobUpload(part, staged[part], name)
                       for part, name in received.filenames.items()]
            if len(uploads) > 1:
                raise InvalidInputError("send one file with a job", code="unexpected_file")
            job = await run_in_threadpool(service.submit, body.kind, body.exposure_id,
                                          body.config, uploads[0] if uploads else None)
    return job_response(job, 201)


def _job_create(data: bytes) -> JobCreate:
    try:
        return JobCreate.model_validate_json(data)
    except ValidationError as error:
        detail = validation_detail(error, ("body",))
        raise InvalidInputError(describe_validation(detail), code="invalid_request",
                                detail=detail) from error


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
