"""The app factory: settings in, a FastAPI app whose lifespan owns database, queue and workers."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import dramatiq
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from app.api.errors import install_error_handlers
from app.api.forced_batches import ForcedBatcher
from app.api.forced_fast_path import ForcedFastPath
from app.api.middleware import RequestIdMiddleware
from app.api.processes import SINGLE, ProcessRole
from app.api.routers import (
    exposures,
    forced,
    health,
    images,
    jobs,
    lightcurve,
    limits,
    results,
    web,
)
from app.db.migrate import upgrade
from app.jobs.queue import JobQueue, relay, start_worker
from app.jobs.reconciler import PeriodicReconciler, reconcile
from app.jobs.runtime import Runtime
from app.services.lightcurve import PointCache
from app.settings import Settings, configure_logging

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, role: ProcessRole = SINGLE) -> FastAPI:
    """The API; with a ``memory://`` broker its primary process also runs the jobs.

    ``role`` is this process's part when several serve together (`serve_processes`).
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level)
        if not role.migrated:
            await run_in_threadpool(upgrade, settings.database_url)
        runtime = Runtime.open(settings)
        embedded = settings.embedded_queue
        queue = JobQueue(runtime, forward=role.handoff if embedded and not role.primary
                         else None)
        worker: dramatiq.Worker | None = None
        reconciler: PeriodicReconciler | None = None
        if role.primary:
            if embedded:
                worker = start_worker(queue, settings.worker_threads)
                if role.handoff is not None:
                    relay(role.handoff, queue, runtime.shutdown)
            await run_in_threadpool(reconcile, runtime, queue, restart=embedded)
            reconciler = PeriodicReconciler(runtime, queue)
            reconciler.start()
        app.state.runtime = runtime
        app.state.queue = queue
        logger.info("skyphot API started (broker %s)", settings.broker_url.split("@")[-1])
        # what start-up made (modules, the app, ~0.25 M objects) lives as long as the
        # process: out of the collector's reach, a full collection no longer re-scans it,
        # which under load held every request up for ~0.1 s
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            runtime.shutdown.set()
            if reconciler is not None:
                reconciler.stop()
            if worker is not None:
                await run_in_threadpool(worker.stop, 30_000)
            queue.close()
            runtime.close()

    app = FastAPI(
        title="skyphot",
        summary="Source detection, deblending, measurement and forced photometry on exposures.",
        version="0.1.0",
        lifespan=lifespan,
        telemetry=None if settings.opentelemetry else {
            "tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    app.add_middleware(ForcedFastPath)
    app.add_middleware(RequestIdMiddleware)  # added last, so it wraps the fast path too
    # routes are matched in order: the synchronous forced photometry, the busiest, first
    for router in (forced.router, health.router, limits.router, exposures.router, jobs.router,
                   results.router):
        app.include_router(router)
    app.include_router(images.router)
    app.include_router(lightcurve.router)
    web.install(app)  # last: the front end at / and /web, after every /v1 route
    app.state.light_curve_points = PointCache()
    app.state.forced_batcher = ForcedBatcher()
    return app
