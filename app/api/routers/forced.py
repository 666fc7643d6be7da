"""Forced photometry at the client's positions, and random blank-sky positions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from app.api.dependencies import ForcedServiceDep
from app.api.formats import CATALOG_MEDIA_TYPES, attachment, negotiate
from app.api.schemas_forced import ForcedRequest, RandomPositionsOut, RandomPositionsRequest
from app.io.catalogs import CatalogFormat, catalog_bytes
from app.services.forced import ForcedQuery, ForcedService

router = APIRouter(tags=["forced"])

ERRORS = {
    404: {"description": "No such exposure or detect job"},
    409: {"description": "No completed detect job on the exposure yet (no PSF)"},
    422: {"description": "Invalid positions, plugins or options; not enough blank sky"},
}

def _measure(service: ForcedService, query: ForcedQuery, format: CatalogFormat) -> bytes:
    return catalog_bytes(service.measure(query), format)


@router.post(
    "/v1/forced",
    summary="Forced photometry at RA/Dec or pixel positions on one exposure, synchronously",
    description=(
        "Rows come back in input order with the client's columns unchanged, then the "
        "measurements (LSST names, units and descriptions), then random positions when "
        "asked (`position_kind`). JSON `{columns, rows}` by default; fits, votable, csv or "
        "parquet by `format=` or Accept. Off-image positions are flagged with NaN flux. "
        "More than SKYPHOT_FORCED_SYNC_MAX_POSITIONS positions is a 413: use a job."
    ),
    responses={**ERRORS, 413: {"description": "Too many positions for a synchronous request"},
               200: {"content": {t: {} for t in CATALOG_MEDIA_TYPES.values()}}},
)
async def forced(
    body: ForcedRequest,
    request: Request,
    service: ForcedServiceDep,
    format: Annotated[str | None, Query(description="json, fits, votable, csv, parquet")] = None,
) -> Response:
    # quick JSON requests on a calexp in memory are answered before routing
    # (app.api.forced_fast_path); what reaches here is measured off the event loop
    chosen = negotiate(request, format)
    content = await run_in_threadpool(_measure, service, body.to_query(), chosen)
    if chosen == "json":
        return Response(content, media_type=CATALOG_MEDIA_TYPES["json"])
    return attachment(content, chosen, f"forced-{body.exposure_id}")


@router.post(
    "/v1/exposures/{exposure_id}/random-positions",
    summary="Random blank-sky positions, far from a detect job's footprints",
    response_model=RandomPositionsOut,
    responses=ERRORS,
)
async def random_positions(
    exposure_id: str, body: RandomPositionsRequest, service: ForcedServiceDep
) -> RandomPositionsOut:
    sky = await run_in_threadpool(service.blank_sky, exposure_id, body.to_spec(), body.job_id)
    return RandomPositionsOut.from_blank_sky(sky)
