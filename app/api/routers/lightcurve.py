"""``/v1/lightcurve``: forced PSF flux at a sky position on every exposure covering it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from app.api.dependencies import LightCurveServiceDep
from app.api.formats import CATALOG_MEDIA_TYPES, attachment, negotiate
from app.io.catalogs import catalog_bytes

router = APIRouter(prefix="/v1/lightcurve", tags=["forced photometry"])


@router.get(
    "",
    summary="Light curve at a sky position",
    description="One row per stored exposure whose footprint holds (ra, dec), ordered by MJD: "
    "exposure, visit, detector, band, MJD, forced PSF flux and error in nJy, S/N and flags. "
    "Exposures without a completed detect job have no PSF yet: their rows carry "
    "flag_not_characterized. As JSON (columns and rows) or FITS/VOTable/CSV/Parquet.",
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
    table = await run_in_threadpool(service.light_curve, ra, dec, band=band, start=start,
                                    end=end)
    content = await run_in_threadpool(catalog_bytes, table, chosen)
    if chosen == "json":
        return Response(content, media_type=CATALOG_MEDIA_TYPES["json"])
    return attachment(content, chosen, f"lightcurve-{ra:.6f}-{dec:+.6f}")
