"""Results of jobs: a detect job's sources (JSON pages or catalog files), footprints, mask and
catalog; a forced job's rows (the same listing) and whole table."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from app.api.dependencies import ResultServiceDep
from app.api.formats import CATALOG_MEDIA_TYPES, attachment, negotiate
from app.api.schemas import SourceOut, SourcePage
from app.db.filters import Cone, PixelBox, SourceFilter
from app.io.catalogs import CatalogFormat
from app.services.errors import InvalidInputError
from app.services.results import Blob, ResultService

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["results"])

NOT_COMPLETED = {409: {"description": "The job is not COMPLETED (yet)"}}


def source_filter(
    parents_only: Annotated[
        bool, Query(description="Only parents (parent = 0); detect jobs.")] = False,
    children_only: Annotated[
        bool, Query(description="Only deblended children; detect jobs.")] = False,
    deblend_nChild: Annotated[  # noqa: N803 - LSST's name
        int | None, Query(ge=0, description="Detect jobs.")] = None,
    min_psf_snr: Annotated[
        float | None, Query(description="slot_PsfFlux (base_PsfFlux) S/N above this "
                                        "(exclusive).")] = None,
    max_psf_snr: Annotated[
        float | None, Query(description="slot_PsfFlux (base_PsfFlux) S/N below this "
                                        "(exclusive).")] = None,
    x_min: float | None = None,
    x_max: float | None = None,
    y_min: float | None = None,
    y_max: float | None = None,
    ra: Annotated[float | None, Query(ge=0, lt=360, description="Cone centre, deg.")] = None,
    dec: Annotated[float | None, Query(ge=-90, le=90, description="Cone centre, deg.")] = None,
    radius: Annotated[float | None, Query(gt=0, le=180, description="Cone radius, deg.")] = None,
    flag: Annotated[list[str], Query(
        description="Flags that must be set (names or aliases: slot_Centroid_flag).")] = [],  # noqa: B006
    noflag: Annotated[list[str], Query(
        description="Flags that must be unset (names or aliases).")] = [],  # noqa: B006
    position_kind: Annotated[
        Literal["input", "random"] | None,
        Query(description="Forced jobs: the client's positions or random blank-sky ones.")] = None,
    exposure_id: Annotated[
        str | None, Query(description="Forced jobs: rows measured on this exposure.")] = None,
) -> SourceFilter:
    """The filters of ``/sources``, from the query string."""
    if parents_only and children_only:
        raise InvalidInputError("parents_only and children_only exclude each other")
    if min_psf_snr is not None and max_psf_snr is not None and min_psf_snr >= max_psf_snr:
        raise InvalidInputError(
            f"min_psf_snr ({min_psf_snr:g}) must be below max_psf_snr ({max_psf_snr:g})")
    cone_parts = (ra, dec, radius)
    if any(p is not None for p in cone_parts) and any(p is None for p in cone_parts):
        raise InvalidInputError("a cone needs all of ra, dec and radius (degrees)")
    box = PixelBox(x_min, x_max, y_min, y_max)
    return SourceFilter(
        parents_only=parents_only,
        children_only=children_only,
        deblend_nchild=deblend_nChild,
        min_psf_snr=min_psf_snr,
        max_psf_snr=max_psf_snr,
        box=None if box == PixelBox() else box,
        cone=None if ra is None or dec is None or radius is None else Cone(ra, dec, radius),
        flags_set=tuple(flag),
        flags_unset=tuple(noflag),
        position_kind=position_kind,
        exposure_id=exposure_id,
    )


FilterDep = Annotated[SourceFilter, Depends(source_filter)]


def _columns(columns: str | None) -> list[str] | None:
    return [c.strip() for c in columns.split(",") if c.strip()] if columns else None


@router.get(
    "/sources",
    summary="A detect job's sources or a forced job's rows: JSON pages (cursor) or a file",
    description=(
        "JSON gives `limit` rows in order (a detect job's by id, a forced job's in input "
        "order); pass `next_cursor` back as `cursor` for the next page. fits, votable, csv "
        "and parquet (by `format=` or Accept) give every matching row in one file, with "
        "units. Filters combine with AND; `flag`/`noflag` may repeat. A forced job's rows "
        "carry the client's tags unchanged and filter by S/N, pixel box, cone, flags, "
        "`position_kind` and `exposure_id`; the deblending filters are for detect jobs."
    ),
    response_model=SourcePage,
    responses={**NOT_COMPLETED, 200: {"content": {t: {} for t in CATALOG_MEDIA_TYPES.values()}}},
)
async def list_sources(
    job_id: str,
    request: Request,
    service: ResultServiceDep,
    where: FilterDep,
    format: Annotated[str | None, Query(description="json, fits, votable, csv, parquet")] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    columns: Annotated[str | None, Query(
        description="Comma-separated column names or aliases (slot_PsfFlux_instFlux, as the "
        "job's summary lists them); an alias comes back under its own name.")] = None,
) -> Response:
    chosen = negotiate(request, format)
    if chosen == "json":
        page = await run_in_threadpool(
            service.sources_page,
            job_id,
            where,
            cursor=cursor,
            limit=limit,
            columns=_columns(columns),
        )
        body = SourcePage(job_id=job_id, sources=page.rows, next_cursor=page.next_cursor)
        return Response(body.model_dump_json(), media_type="application/json")
    content = await run_in_threadpool(
        service.sources_file, job_id, where, columns=_columns(columns), format=chosen
    )
    return attachment(content, chosen, f"{job_id}-sources")


@router.get(
    "/sources/{source_id}",
    response_model=SourceOut,
    summary="One source with its footprint (spans, peaks, bbox, area), parent and children",
    responses=NOT_COMPLETED,
)
def get_source(job_id: str, source_id: int, service: ResultServiceDep) -> SourceOut:
    return SourceOut.from_detail(job_id, service.source(job_id, source_id))


@router.get(
    "/sources/{source_id}/footprint",
    summary="The heavy footprint as FITS: IMAGE, MASK, VARIANCE cutouts of its pixels",
    response_class=Response,
    responses={**NOT_COMPLETED, 200: {"content": {"application/fits": {}}}},
)
def get_footprint(
    job_id: str,
    source_id: int,
    service: ResultServiceDep,
    format: Annotated[str, Query(pattern="^fits$")] = "fits",
) -> Response:
    content = service.footprint_fits(job_id, source_id)
    return attachment(content, "fits", f"{job_id}-footprint-{source_id}")


@router.get(
    "/mask",
    summary="The mask after detection (DETECTED = 32, …) as FITS",
    response_class=StreamingResponse,
    responses={**NOT_COMPLETED, 200: {"content": {"application/fits": {}}}},
)
def get_mask(
    job_id: str,
    service: ResultServiceDep,
    format: Annotated[str, Query(pattern="^fits$")] = "fits",
) -> StreamingResponse:
    return _stream(service, service.artifact(job_id, "mask"))


@router.get(
    "/catalog",
    summary="The whole catalog file (FITS as stored, or converted with format=/Accept)",
    response_class=Response,
    responses={**NOT_COMPLETED, 200: {"content": {t: {} for t in CATALOG_MEDIA_TYPES.values()}}},
)
async def get_catalog(
    job_id: str,
    request: Request,
    service: ResultServiceDep,
    format: Annotated[str | None, Query(description="fits, votable, csv, parquet, json")] = None,
) -> Response:
    chosen = negotiate(request, format, default="fits")
    return await _stored_table(service, job_id, chosen, "catalog", "detect")


@router.get(
    "/forced",
    summary="A forced job's rows: FITS as stored, or converted with format=/Accept",
    response_class=Response,
    responses={**NOT_COMPLETED, 200: {"content": {t: {} for t in CATALOG_MEDIA_TYPES.values()}}},
)
async def get_forced(
    job_id: str,
    request: Request,
    service: ResultServiceDep,
    format: Annotated[str | None, Query(description="fits, votable, csv, parquet, json")] = None,
) -> Response:
    chosen = negotiate(request, format, default="fits")
    return await _stored_table(service, job_id, chosen, "forced", "forced")


async def _stored_table(service: ResultService, job_id: str, format: CatalogFormat, name: str,
                        kind: str) -> Response:
    """A stored FITS table: streamed as is, or converted to the format asked for."""
    if format == "fits":
        blob = await run_in_threadpool(service.artifact, job_id, name, kind)
        return _stream(service, blob)
    content = await run_in_threadpool(service.catalog_as, job_id, format, name, kind)
    return attachment(content, format, f"{job_id}-{name}")


def _stream(service: ResultService, blob: Blob) -> StreamingResponse:
    return StreamingResponse(
        service.stream(blob),
        media_type=blob.media_type,
        headers={
            "Content-Length": str(blob.size),
            "Content-Disposition": f'attachment; filename="{blob.filename}"',
        },
    )
