"""``skyphot worker``: a Dramatiq worker for the distributed setup (Redis + PostgreSQL)."""

from __future__ import annotations

import logging
import signal
import threading

from app.jobs.queue import JobQueue, start_worker
from app.jobs.reconciler import PeriodicReconciler, reconcile
from app.jobs.runtime import Runtime
from app.settings import Settings, configure_logging

logger = logging.getLogger(__name__)


def run_worker(threads: int) -> None:
    """Run jobs from the shared queue until SIGTERM or SIGINT, then stop cleanly.

    On a clean stop, running jobs go back to the queue for another worker.
    """
    settings = Settings()
    configure_logging(settings.log_level)
    if settings.embedded_queue:
        raise SystemExit(
            "skyphot worker needs a shared broker: set SKYPHOT_BROKER_URL=redis://host:6379/0 "
            "(with memory://, `skyphot serve` runs jobs itself)"
        )
    runtime = Runtime.open(settings)
    queue = JobQueue(runtime)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    reconcile(runtime, queue)
    reconciler = PeriodicReconciler(runtime, queue)
    reconciler.start()
    worker = start_worker(queue, threads)
    logger.info("worker started with %d thread(s) on queue %s", threads, settings.queue_name)
    stop.wait()
    logger.info("worker stopping")
    runtime.shutdown.set()
    reconciler.stop()
    worker.stop(timeout=30_000)
    queue.close()
    runtime.close()
