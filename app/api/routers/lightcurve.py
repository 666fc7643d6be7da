"""``/v1/lightcurve``: forced PSF flux at a sky position on every exposure covering it.

Up to ``SKYPHOT_LIGHTCURVE_MAX_EXPOSURES`` covering exposures, all with a detect job, the GET
answers with the light curve. Above it, or when an exposure must be characterized first, it
answers 202 Accepted with a forced job that measures it (Location and the job as JSON; the
same job for the same question, until the covering exposures change), rather
than a 303 to the job as IVOA UWS does after creating one: HTTP clients
follow a 303 on their own and would hand their caller the job's JSON with a 200, as if it
were the light curve. ``POST`` asks for the job directly (201 Created, as ``POST /v1/jobs``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from app.api.dependencies import LightCurveServiceDep
from app.api.formats import CATALOG_MEDIA_TYPES, attachment, negotiate
from app.api.job_responses import job_response
from app.api.schemas import Job
from app.db.exposures import ExposureWindow
from app.db.models import JobRecord
from app.io.catalogs import catalog_bytes
from app.services.lightcurve import LightCurveQuery

router = APIRouter(prefix="/v1/lightcurve", tags=["forced photometry"])

JOB_ROWS = ("Poll the job at Location; once COMPLETED its rows, one per exposure in MJD "
            "order, are at /v1/jobs/{id}/sources (JSON pages or format=fits|votable|csv|"
            "parquet). Exposures without a detect job are characterized by the job.")


class LightCurveRequest(BaseModel):
    """A light curve to measure as a job."""

    model_config = ConfigDict(extra="forbid")
    ra: float = Field(description="Right ascension, degrees (ICRS).")
    dec: float = Field(description="Declination, degrees (ICRS).")
    band: str | None = Field(None, description="Only exposures in this band.")
    start: float | None = Field(None, description="Earliest MJD.")
    end: float | None = Field(None, description="Latest MJD.")

    def to_query(self) -> LightCurveQuery:
        return LightCurveQuery(self.ra, self.dec, ExposureWindow(self.band, self.start, self.end))


@router.get(
    "",
    summary="Light curve at a sky position",
    description="One row per stored exposure whose footprint holds (ra, dec), ordered by MJD: "
    "exposure, visit, detector, band, MJD, forced PSF flux and error in nJy, S/N and flags. "
    "As JSON (columns and rows) or FITS/VOTable/CSV/Parquet. Above "
    "SKYPHOT_LIGHTCURVE_MAX_EXPOSURES covering exposures (GET /v1/limits), or when one of "
    "them has no completed detect job (no PSF yet: characterizing it takes seconds), the "
    "answer is 202 Accepted with the job that measures them: the same job each time it is asked "
    "(unless it was aborted, or failed other than for want of a measurable exposure) until an "
    "exposure covering the position is stored or "
    f"deleted. {JOB_ROWS}",
    responses={202: {"model": Job, "description": "Too many exposures, or some to characterize, "
                                                  "for a synchronous answer: the job that "
                                                  "measures them"},
               422: {"description": "Bad position or MJD window"}},
)
async def light_curve(
    request: Request,
    service: LightCurveServiceDep,
    ra: Annotated[float, Query(description="Right ascension, degrees (ICRS).")],
    dec: Annotated[float, Query(description="Declination, degrees (ICRS).")],
    band: Annotated[str | None, Query(description="Only exposures in this band.")] = None,
    start: Annotated[float | None, Query(description="Earliest MJD.")] = None,
    end: Annotated[float | None, Query(description="Latest MJD.")] = None,
    format: Annotated[str | None, Query(description="json, fits, votable, csv, parquet")] = None,
) -> Response:
    chosen = negotiate(request, format)
    query = LightCurveQuery(ra, dec, ExposureWindow(band, start, end))
    result = await run_in_threadpool(service.light_curve, query)
    if isinstance(result, JobRecord):
        return job_response(result, 202)
    content = await run_in_threadpool(catalog_bytes, result, chosen)
    if chosen == "json":
        return Response(content, media_type=CATALOG_MEDIA_TYPES["json"])
    return attachment(content, chosen, f"lightcurve-{ra:.6f}-{dec:+.6f}")


@router.post(
    "",
    status_code=201,
    response_model=Job,
    summary="Light curve at a sky position, as a job",
    description="A forced job at (ra, dec) on every covering exposure in the band and MJD "
    f"window, whatever their number. {JOB_ROWS}",
    responses={409: {"description": "No stored exposure covers the position"},
               422: {"description": "Bad position or MJD window"}},
)
async def light_curve_job(body: LightCurveRequest, service: LightCurveServiceDep) -> Response:
    query = body.to_query()
    return job_response(await run_in_threadpool(service.submit, query), 201)
