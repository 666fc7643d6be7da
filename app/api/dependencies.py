"""Per-request dependencies, defined once as ``Annotated`` aliases the routers reuse."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.jobs.queue import JobQueue
from app.jobs.runtime import Runtime
from app.services.calexps import CalexpService
from app.services.exposures import ExposureService
from app.services.forced import ForcedService
from app.services.images import ImageService
from app.services.jobs import JobService
from app.services.lightcurve import LightCurveService
from app.services.results import ResultService


# Dependencies that do no I/O are coroutines: FastAPI runs a plain function in the thread
# pool, a hop that costs more than a small synchronous request's work.
async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    with runtime.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def owner_of(runtime: Runtime) -> str:
    """The caller; bearer-token authentication replaces this and nothing below changes
    (`app.api.forced_fast_path` asks it too)."""
    return runtime.settings.default_owner


async def get_owner(runtime: RuntimeDep) -> str:
    return owner_of(runtime)


OwnerDep = Annotated[str, Depends(get_owner)]


def get_exposure_service(
    session: SessionDep, runtime: RuntimeDep, queue: QueueDep, owner: OwnerDep
) -> ExposureService:
    return ExposureService(session, runtime.store, queue, owner)


def get_job_service(
    session: SessionDep, runtime: RuntimeDep, queue: QueueDep, owner: OwnerDep
) -> JobService:
    return JobService(session, runtime.store, queue, owner,
                      checks={"forced": forced_service(runtime, owner).check_job})


def get_result_service(session: SessionDep, runtime: RuntimeDep, owner: OwnerDep) -> ResultService:
    return ResultService(session, runtime.store, owner)


def get_calexp_service(session: SessionDep, runtime: RuntimeDep, owner: OwnerDep
                       ) -> CalexpService:
    return CalexpService(session, runtime.store, runtime.exposures, owner)


ExposureServiceDep = Annotated[ExposureService, Depends(get_exposure_service)]
CalexpServiceDep = Annotated[CalexpService, Depends(get_calexp_service)]


def forced_service(runtime: Runtime, owner: str) -> ForcedService:
    return ForcedService(runtime.sessions, runtime.store, runtime.exposures, owner,
                         runtime.settings.forced_sync_max_positions)


async def get_forced_service(runtime: RuntimeDep, owner: OwnerDep) -> ForcedService:
    return forced_service(runtime, owner)


ForcedServiceDep = Annotated[ForcedService, Depends(get_forced_service)]
JobServiceDep = Annotated[JobService, Depends(get_job_service)]
ResultServiceDep = Annotated[ResultService, Depends(get_result_service)]


def get_image_service(session: SessionDep, calexps: CalexpServiceDep, runtime: RuntimeDep,
                      owner: OwnerDep) -> ImageService:
    return ImageService(session, runtime.store, calexps, owner)


ImageServiceDep = Annotated[ImageService, Depends(get_image_service)]


def get_light_curve_service(request: Request, session: SessionDep, runtime: RuntimeDep,
                            calexps: CalexpServiceDep, jobs: JobServiceDep, owner: OwnerDep
                            ) -> LightCurveService:
    return LightCurveService(session, calexps, jobs, request.app.state.light_curve_points,
                             owner, runtime.settings.lightcurve_max_exposures)


LightCurveServiceDep = Annotated[LightCurveService, Depends(get_light_curve_service)]
