"""Image products: planes and cutouts (PNG, FITS), the PSF at a point, overlays, DS9 regions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from fastapi import APIRouter, Body, Depends, Query, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, model_validator

from app.api.dependencies import ImageServiceDep
from app.io.png import Stretch
from app.services.errors import InvalidInputError
from app.services.images import Box, FootprintMode, Look, Marks, Plane, Product, SkyBox

router = APIRouter(tags=["images"])
F = TypeVar("F", bound=Callable[..., Any])

NEEDS_DETECTION = {409: {"description": "The exposure has no completed detect job yet"}}
PNG_OR_FITS = {200: {"content": {"image/png": {}, "application/fits": {}}}}


class MarkIn(BaseModel):
    """One position: RA/Dec in degrees, or parent-frame pixel x/y."""

    ra: float | None = Field(None, ge=0, lt=360)
    dec: float | None = Field(None, ge=-90, le=90)
    x: float | None = None
    y: float | None = None

    @model_validator(mode="after")
    def _one_pair(self) -> MarkIn:
        if (self.ra is None) == (self.x is None) or (self.ra is None) != (self.dec is None) \
                or (self.x is None) != (self.y is None):
            raise ValueError("give each position as ra and dec, or as x and y")
        return self


class MarksIn(BaseModel):
    """Positions to draw besides the job's sources, e.g. those of a forced measurement."""

    positions: list[MarkIn] = Field(max_length=20_000)
    label: str = Field("forced", max_length=32, pattern=r"^[\w .+-]+$")

    def to_marks(self) -> Marks:
        def column(name: str) -> np.ndarray:
            return np.array([getattr(p, name) for p in self.positions], dtype=float)

        return Marks(self.label, column("ra"), column("dec"), column("x"), column("y"))


MarksBody = Annotated[MarksIn | None, Body(description="Optional (POST): positions to draw, "
                                                       "as crosses (overlay) or circles "
                                                       "tagged by `label` (regions).")]


class PsfOut(BaseModel):
    """The PSF at a point: determinant radius and FWHM = 2.355 σ."""

    x: float
    y: float
    ra: float | None
    dec: float | None
    sigma_pixels: float
    fwhm_pixels: float
    fwhm_arcsec: float | None


def cutout_spec(
    x0: Annotated[int | None, Query(description="Pixel box: lower-left x (parent frame).")] = None,
    y0: Annotated[int | None, Query(description="Pixel box: lower-left y.")] = None,
    width: Annotated[int | None, Query(ge=1, le=16384)] = None,
    height: Annotated[int | None, Query(ge=1, le=16384)] = None,
    ra: Annotated[float | None, Query(ge=0, lt=360, description="Centre, ICRS deg.")] = None,
    dec: Annotated[float | None, Query(ge=-90, le=90, description="Centre, ICRS deg.")] = None,
    size: Annotated[float | None, Query(gt=0, le=16384, description="Side of the square.")
                    ] = None,
    size_unit: Literal["pix", "arcsec"] = "pix",
) -> Box | SkyBox | None:
    """A pixel box (x0, y0, width, height), a sky square (ra, dec, size) or the whole image."""
    box, sky = (x0, y0, width, height), (ra, dec, size)
    if any(v is not None for v in box) and any(v is not None for v in sky):
        raise InvalidInputError("give the cutout as x0, y0, width, height or as ra, dec, size, "
                                "not both")
    if any(v is not None for v in box):
        if x0 is None or y0 is None or width is None or height is None:
            raise InvalidInputError("a pixel box needs all of x0, y0, width and height")
        return Box(x0, y0, width, height)
    if any(v is not None for v in sky):
        if ra is None or dec is None or size is None:
            raise InvalidInputError("a sky cutout needs all of ra, dec and size")
        return SkyBox(ra, dec, size, size_unit)
    return None


def look(
    stretch: Annotated[Stretch, Query(description="asinh, zscale, linear or minmax")] = "asinh",
    cmap: Annotated[str, Query(max_length=64, description="A matplotlib colormap name.")
                    ] = "gray",
    max_size: Annotated[int, Query(ge=16, le=16384, description="PNG long side at most; "
                                   "larger images are block-averaged.")] = 2048,
) -> Look:
    return Look(stretch, cmap, max_size)


def psf_look(
    stretch: Annotated[Stretch, Query(description="asinh, zscale, linear or minmax")
                       ] = "minmax",
    cmap: Annotated[str, Query(max_length=64)] = "gray",
) -> Look:
    return Look(stretch, cmap)


SpecDep = Annotated[Box | SkyBox | None, Depends(cutout_spec)]
LookDep = Annotated[Look, Depends(look)]


def get_and_post(path: str, name: str, **options: Any) -> Callable[[F], F]:
    """Route GET (no body) and POST (with marks) to one handler, each its own operation id."""
    def register(handler: F) -> F:
        router.get(path, operation_id=f"get_{name}", **options)(handler)
        router.post(path, operation_id=f"post_{name}", **options)(handler)
        return handler

    return register


def _send(product: Product) -> Response:
    return Response(product.content, media_type=product.media_type, headers=product.headers)


@router.get(
    "/v1/exposures/{exposure_id}/image",
    summary="A plane of the characterized exposure, or a cutout of it, as PNG or FITS",
    description=(
        "The exposure as its detect job left it (background-subtracted; `add_background=true` "
        "adds the subtracted background back). Cutout by pixel box (`x0,y0,width,height`) or "
        "sky square (`ra,dec,size`, `size_unit=pix|arcsec`); a cutout running off the image is "
        "padded (NaN, or NO_DATA in the mask) and flagged (`X-Skyphot-Padded`, FITS `PADDED`). "
        "PNG is block-averaged to `max_size` (`X-Skyphot-Binning`); the mask PNG has a legend."
    ),
    response_class=Response,
    responses={**NEEDS_DETECTION, **PNG_OR_FITS},
)
async def get_image(
    exposure_id: str,
    service: ImageServiceDep,
    spec: SpecDep,
    look: LookDep,
    plane: Plane = "image",
    add_background: bool = False,
    format: Literal["png", "fits"] = "png",
    mask_over_image: Annotated[bool, Query(description="plane=mask PNG: planes drawn "
                                                       "half-opaque over the image.")] = False,
    job_id: Annotated[str | None, Query(description="Detect job (default: newest).")] = None,
) -> Response:
    return _send(await run_in_threadpool(
        service.image, exposure_id, plane=plane, add_background=add_background, spec=spec,
        job_id=job_id, format=format, look=look, mask_over_image=mask_over_image))


@router.get(
    "/v1/exposures/{exposure_id}/psf",
    summary="The PSF at a point: sigma and FWHM (JSON), or its image (format=fits|png)",
    response_model=PsfOut,
    responses={**NEEDS_DETECTION, **PNG_OR_FITS},
)
async def get_psf(
    exposure_id: str,
    service: ImageServiceDep,
    look: Annotated[Look, Depends(psf_look)],
    x: Annotated[float | None, Query(description="Parent-frame pixel x; default centre.")] = None,
    y: float | None = None,
    ra: Annotated[float | None, Query(ge=0, lt=360)] = None,
    dec: Annotated[float | None, Query(ge=-90, le=90)] = None,
    format: Literal["json", "png", "fits"] = "json",
    job_id: str | None = None,
) -> Response:
    if (x is None) != (y is None) or (ra is None) != (dec is None):
        raise InvalidInputError("give the point as both x and y, or both ra and dec")
    point = {"x": x, "y": y, "ra": ra, "dec": dec, "job_id": job_id}
    if format == "json":
        where, _ = await run_in_threadpool(service.psf, exposure_id, **point)
        return Response(PsfOut(**vars(where)).model_dump_json(), media_type="application/json")
    return _send(await run_in_threadpool(
        service.psf_stamp, exposure_id, format=format, look=look, **point))


@get_and_post(
    "/v1/jobs/{job_id}/overlay.png",
    "overlay",
    summary="The (cut-out) image with the job's sources and footprints drawn",
    description=(
        "Isolated sources yellow, deblended parents red, children cyan (legend on the right); "
        "footprints of the detections outlined, filled, or not drawn. POST a body of "
        "`positions` (e.g. forced photometry's) to draw them too, as magenta crosses."
    ),
    response_class=Response,
    responses={**NEEDS_DETECTION, 200: {"content": {"image/png": {}}}},
)
async def get_overlay(
    job_id: str,
    service: ImageServiceDep,
    spec: SpecDep,
    look: LookDep,
    marks: MarksBody = None,
    footprints: FootprintMode = "outline",
) -> Response:
    return _send(await run_in_threadpool(
        service.overlay, job_id, spec=spec, footprints=footprints, look=look,
        marks=None if marks is None else marks.to_marks()))


@get_and_post(
    "/v1/jobs/{job_id}/regions.reg",
    "regions",
    summary="The job's sources as a DS9 region file (icrs, fk5 or image circles, by kind)",
    description="POST a body of `positions` to add them, tagged by `label` (default forced).",
    response_class=Response,
    responses={**NEEDS_DETECTION, 200: {"content": {"text/plain": {}}}},
)
async def get_regions(
    job_id: str,
    service: ImageServiceDep,
    system: Literal["icrs", "fk5", "image"] = "icrs",
    marks: MarksBody = None,
    radius: Annotated[float | None, Query(
        gt=0, description="arcsec (icrs, fk5) or pixels (image); default the PSF FWHM")] = None,
) -> Response:
    return _send(await run_in_threadpool(
        service.regions, job_id, system=system, radius=radius,
        marks=None if marks is None else marks.to_marks()))
