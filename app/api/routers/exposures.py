"""``/v1/exposures``: upload (multipart, streamed) or fetch by URL, list, read, delete."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app.api.dependencies import ExposureServiceDep, RuntimeDep
from app.api.schemas import Exposure, ExposureList, ExposureUrl, Job
from app.api.uploads import FIELD, Multipart, receive_exposure
from app.io.read_request import COMPANIONS, ReadRequest
from app.services.errors import InvalidInputError, PayloadTooLargeError
from app.services.jobs import describe_validation, validation_detail

router = APIRouter(prefix="/v1/exposures", tags=["exposures"])

MAX_JSON_BYTES = 16 * 1024

UPLOAD_FIELDS = frozenset(ReadRequest.model_fields)
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        FIELD: {"type": "string", "format": "binary",
                                "description": "The FITS file: a calexp or an image."},
                        **{name: {"type": "string", "format": "binary",
                                  "description": f"Optional {name} plane (FITS)."}
                           for name in COMPANIONS},
                        **{name: {"type": "string", "description": field.description}
                           for name, field in ReadRequest.model_fields.items()},
                    },
                    "required": [FIELD],
                }
            },
            "application/json": {"schema": ExposureUrl.model_json_schema()},
        },
    }
}


@router.post(
    "",
    summary="Add an exposure: upload a FITS file, or give a URL for a worker to fetch",
    description=(
        "Multipart: the FITS file in the part `file` (a calexp, or any FITS image: every "
        "BITPIX, BZERO/BSCALE/BLANK, tile-compressed, gzip), optionally its companion planes "
        "as parts `variance`, `weight` (inverse variance), `mask` (data quality) and "
        "`background`, and the fields `hdu`, `variance_hdu`, `weight_hdu`, `mask_hdu` (an "
        "HDU of that part, or of `file` when the part is absent), `mask_bits` or `mask_codes`. "
        "With any of them the exposure they assemble is stored, in the calexp layout. JSON: "
        "`url` and the same options, companions as `variance_url`, `weight_url`, "
        "`mask_url`, `background_url`. A file that cannot be used at all is a 422 naming the "
        "reason (a failed fetch job for a URL)."
    ),
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
        job = await run_in_threadpool(service.submit_url, body.model_dump(exclude_none=True))
        return JSONResponse(
            Job.from_record(job).model_dump(mode="json"),
            status_code=202,
            headers={"Location": f"/v1/jobs/{job.id}"},
        )
    limit = runtime.settings.max_upload_bytes
    with ExitStack() as stack:
        staged = {part: stack.enter_context(runtime.store.stage(limit=limit))
                  for part in (FIELD, *COMPANIONS)}
        body = await receive_exposure(request, staged, limit, UPLOAD_FIELDS)
        companions = {name: (staged[name], body.filenames[name])
                      for name in COMPANIONS if name in body.filenames}
        record, created = await run_in_threadpool(
            service.add_upload, staged[FIELD], body.filenames[FIELD], companions,
            _read_request(body), limit=limit)
    return JSONResponse(
        Exposure.from_record(record).model_dump(mode="json"),
        status_code=201 if created else 200,
        headers={"Location": f"/v1/exposures/{record.id}"},
    )


def _read_request(body: Multipart) -> ReadRequest:
    """The reading options of the form's small fields (empty ones left out)."""
    fields = {name: value.decode("utf-8", "replace").strip()
              for name, value in body.fields.items()}
    try:
        return ReadRequest.model_validate({k: v for k, v in fields.items() if v})
    except ValidationError as error:
        detail = validation_detail(error, ("body",))
        raise InvalidInputError(describe_validation(detail), detail=detail) from error


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
