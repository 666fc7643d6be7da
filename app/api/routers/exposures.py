"""``/v1/exposures``: upload (multipart, streamed) or fetch by URL, list, read, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app.api.dependencies import ExposureServiceDep, RuntimeDep
from app.api.schemas import Exposure, ExposureList, ExposureUrl, Job
from app.api.uploads import receive_file
from app.services.errors import InvalidInputError, PayloadTooLargeError
from app.services.jobs import describe_validation, validation_detail

router = APIRouter(prefix="/v1/exposures", tags=["exposures"])

MAX_JSON_BYTES = 16 * 1024

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/json": {"schema": ExposureUrl.model_json_schema()},
        },
    }
}


@router.post(
    "",
    summary="Add an exposure: upload a FITS file, or give a URL for a worker to fetch",
    openapi_extra=UPLOAD_BODY,
    responses={
        200: {"model": Exposure, "description": "Already stored: the same content"},
        201: {"model": Exposure, "description": "Stored"},
        202: {"model": Job, "description": "URL accepted: a fetch job will store it"},
        413: {"description": "Larger than the upload limit"},
        422: {"description": "Not a usable FITS exposure, or a refused URL"},
    },
)
async def add_exposure(
    request: Request, service: ExposureServiceDep, runtime: RuntimeDep
) -> JSONResponse:
    if request.headers.get("content-type", "").startswith("application/json"):
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_JSON_BYTES:
            raise PayloadTooLargeError('a URL request is a small JSON object: {"url": ...}')
        try:
            body = ExposureUrl.model_validate_json(await request.body())
        except ValidationError as error:
            detail = validation_detail(error, ("body",))
            raise InvalidInputError(describe_validation(detail), detail=detail) from error
        job = await run_in_threadpool(service.submit_url, body.url)
        return JSONResponse(
            Job.from_record(job).model_dump(mode="json"),
            status_code=202,
            headers={"Location": f"/v1/jobs/{job.id}"},
        )
    limit = runtime.settings.max_upload_bytes
    with runtime.store.stage(limit=limit) as staged:
        filename = await receive_file(request, staged, limit)
        record, created = await run_in_threadpool(service.add_upload, staged, filename)
    return JSONResponse(
        Exposure.from_record(record).model_dump(mode="json"),
        status_code=201 if created else 200,
        headers={"Location": f"/v1/exposures/{record.id}"},
    )


@router.get("", response_model=ExposureList, summary="The caller's exposures, newest first")
def list_exposures(
    service: ExposureServiceDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ExposureList:
    records, total = service.page(limit=limit, offset=offset)
    return ExposureList(
        exposures=[Exposure.from_record(r) for r in records],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/{exposure_id}", response_model=Exposure, summary="One exposure")
def get_exposure(exposure_id: str, service: ExposureServiceDep) -> Exposure:
    return Exposure.from_record(service.get(exposure_id))


@router.delete(
    "/{exposure_id}", status_code=204, summary="Delete an exposure, its jobs and their results"
)
def delete_exposure(exposure_id: str, service: ExposureServiceDep) -> Response:
    service.delete(exposure_id)
    return Response(status_code=204)
