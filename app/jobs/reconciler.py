"""Re-queue jobs a dead worker left behind, at start-up and then periodically.

A job is abandoned when it is EXECUTING without a heartbeat for `Settings.stale_after`, or
QUEUED for longer than a job may run (its message was lost). It goes back to QUEUED and its id
is sent again; one whose attempts are used up becomes ERROR with the reason.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from app.db.base import utcnow
from app.db.jobs import JobRepository
from app.db.models import JobPhase
from app.jobs.queue import JobQueue
from app.jobs.runtime import Runtime

logger = logging.getLogger(__name__)


def reconcile(runtime: Runtime, queue: JobQueue, *, restart: bool = False) -> int:
    """Re-queue abandoned jobs; returns how many were sent again.

    With ``restart``, every unfinished job is taken as abandoned: used when an in-memory queue
    starts empty, so nothing else can be holding or carrying them.
    """
    settings = runtime.settings
    now = utcnow()
    executing_before = now if restart else now - timedelta(seconds=settings.stale_after)
    queued_before = now if restart else now - timedelta(seconds=settings.job_time_limit)
    resend: list[str] = []
    with runtime.sessions.begin() as session:
        jobs = JobRepository(session)
        for job in jobs.stale(executing_before, queued_before):
            before = executing_before if job.phase == JobPhase.EXECUTING else queued_before
            if job.phase == JobPhase.EXECUTING and job.attempt >= settings.max_attempts:
                jobs.give_up(
                    job,
                    f"gave up after {job.attempt} attempts: the worker running it stopped "
                    "responding each time",
                )
                logger.warning("abandoned job out of attempts", extra={"job_id": job.id})
            elif jobs.requeue(job, before):
                resend.append(job.id)
    for job_id in resend:
        logger.info("re-queued abandoned job", extra={"job_id": job_id})
        queue.send(job_id)
    return len(resend)


class PeriodicReconciler:
    """A daemon thread running `reconcile` every ``reconcile_interval`` seconds."""

    def __init__(self, runtime: Runtime, queue: JobQueue) -> None:
        self._runtime = runtime
        self._queue = queue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="skyphot-reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self._runtime.settings.reconcile_interval):
            try:
                reconcile(self._runtime, self._queue)
            except Exception:  # the database may be briefly away; try again next round
                logger.exception("reconciliation failed")
