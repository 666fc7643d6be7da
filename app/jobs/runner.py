"""One attempt of a job: claim it, run its compute in a child process, record the outcome.

The worker thread supervises the child while a `Heartbeat` thread keeps the job row alive: it
forwards progress, and kills the child when the job is cancelled or deleted (the row is no
longer this attempt's), when the time limit passes, or when the worker shuts down. The
outcome is written under the claim token, so an attempt that lost its job writes nothing.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.context import BaseContext
from typing import Protocol

from app.db.base import utcnow
from app.db.exposures import ExposureRepository
from app.db.jobs import JobRepository
from app.db.models import JobPhase
from app.jobs.child import child_main
from app.jobs.errors import Failure
from app.jobs.heartbeat import Heartbeat
from app.jobs.kinds import JobContext, JobKind, JobOutput, get_kind, kind_names
from app.jobs.runtime import Runtime
from app.storage.blobs import attempt_prefix

logger = logging.getLogger(__name__)

SUPERVISE_POLL = 0.1  # seconds: how soon a cancel, a lost job or a shutdown is acted on


class Sender(Protocol):
    """Whatever queues job ids (`app.jobs.queue.JobQueue`)."""

    def send(self, job_id: str, delay: float = 0.0) -> None: ...


CHILD_PRELOAD = [
    "app.jobs.child",
    "app.jobs.detect",
    "app.engine.pipeline",
    "app.io.fits_exposure",
    "app.io.catalogs",
]
"""Imported once by the fork server, so each job's process starts with them loaded."""


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS")


def _process_context(threads: int) -> BaseContext:
    """forkserver where there is one (children start fast, no inherited threads), else spawn.

    The preload list replaces the default ``__main__``, which would re-run the caller's
    script in the server. The children's numerical libraries read their thread counts
    from the environment when first imported, which happens in the server or the child,
    after this sets them.
    """
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    if not sys.platform.startswith("linux"):
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(CHILD_PRELOAD)
    return context


@dataclass(frozen=True)
class _Lost:
    """The job stopped being this attempt's: cancelled, deleted or taken over."""


@dataclass(frozen=True)
class _Released:
    """The worker is shutting down; the job goes back to the queue without using an attempt."""


Outcome = JobOutput | Failure | _Lost | _Released


class JobRunner:
    """Runs job attempts for the messages a worker receives."""

    def __init__(self, runtime: Runtime, queue: Sender) -> None:
        self._runtime = runtime
        self._queue = queue
        self._mp = _process_context(runtime.settings.job_compute_threads)

    def warm_up(self) -> None:
        """Import the job kinds and start the fork server now, so the first job does not
        wait for their imports: between its claim and its first heartbeat, long enough a
        wait makes a claimed job look abandoned."""
        kind_names()
        if self._mp.get_start_method() == "forkserver":
            from multiprocessing import forkserver

            forkserver.ensure_running()

    def run(self, job_id: str) -> None:
        """Run one attempt of ``job_id`` if it can be claimed; otherwise do nothing."""
        settings = self._runtime.settings
        token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        with self._runtime.sessions.begin() as session:
            job = JobRepository(session).claim(
                job_id,
                token,
                stale_before=utcnow() - timedelta(seconds=settings.stale_after),
                max_attempts=settings.max_attempts,
            )
            if job is None:
                logger.info("job not claimable, message dropped", extra={"job_id": job_id})
                return
            kind = get_kind(job.kind)
            context = JobContext(
                job_id=job.id,
                owner=job.owner,
                attempt=job.attempt,
                parameters=job.parameters,
                exposure_id=job.exposure_id,
                exposure_key=ExposureRepository(session).storage_key(job.exposure_id),
                storage_url=settings.storage_url,
                max_bytes=settings.max_upload_bytes,
                inputs={} if kind is None or kind.inputs is None else kind.inputs(session, job),
            )
        logger.info("job attempt %d started", context.attempt, extra={"job_id": job_id})
        heartbeat = Heartbeat(self._runtime.sessions, job_id, token, settings.heartbeat_interval)
        with heartbeat:
            if kind is None:
                outcome: Outcome = Failure("unknown_kind", f"no job kind {job.kind!r}", False)
            else:
                outcome = self._supervise(kind, context, heartbeat)
            self._conclude(kind, context, token, outcome)

    def _supervise(self, kind: JobKind, context: JobContext, heartbeat: Heartbeat) -> Outcome:
        """Run the child until it reports, dies, or must be killed."""
        settings = self._runtime.settings
        receiver, sender = self._mp.Pipe(duplex=False)
        life_reader, life_writer = self._mp.Pipe(duplex=False)
        child = self._mp.Process(
            target=child_main,
            args=(kind.compute, context, sender, life_reader),
            name=f"skyphot-job-{context.job_id}",
            daemon=True,
        )
        child.start()
        sender.close()
        life_reader.close()
        deadline = time.monotonic() + settings.job_time_limit
        try:
            while True:
                now = time.monotonic()
                if heartbeat.lost.is_set():
                    return _Lost()
                if now >= deadline:
                    return Failure(
                        "time_limit",
                        f"the job ran longer than its limit of {settings.job_time_limit:g} s",
                        retry=False,
                    )
                if self._runtime.shutdown.is_set():
                    return _Released()
                if not receiver.poll(min(deadline - now, SUPERVISE_POLL)):
                    continue
                try:
                    message = receiver.recv()
                except EOFError:
                    child.join(5)
                    return Failure(
                        "process_died",
                        f"the job's process died (exit code {child.exitcode})",
                        retry=True,
                    )
                if message[0] == "progress":
                    heartbeat.progress, heartbeat.step = message[1], message[2]
                else:
                    return message[1]
        finally:
            if child.is_alive():
                child.kill()
            child.join(10)
            receiver.close()
            life_writer.close()

    def _conclude(
        self, kind: JobKind | None, context: JobContext, token: str, outcome: Outcome
    ) -> None:
        job_id = context.job_id
        if isinstance(outcome, JobOutput) and kind is not None:
            try:
                outcome = self._complete(kind, context, token, outcome)
            except Exception as error:  # storing the results failed: the database or storage
                logger.exception("storing results failed", extra={"job_id": job_id})
                outcome = Failure("store_failed", f"storing the results failed: {error}", True)
        if isinstance(outcome, Failure):
            self._fail(context, token, outcome)
        elif isinstance(outcome, _Released):
            with self._runtime.sessions.begin() as session:
                released = JobRepository(session).finish(
                    job_id, token, JobPhase.QUEUED, attempt=context.attempt - 1
                )
            if released:
                self._queue.send(job_id)
        if not isinstance(outcome, JobOutput):
            self._runtime.store.delete_prefix(context.artifact_prefix)
        logger.info("job attempt ended: %s", type(outcome).__name__, extra={"job_id": job_id})

    def _complete(
        self, kind: JobKind, context: JobContext, token: str, output: JobOutput
    ) -> Outcome:
        """Mark COMPLETED and store the results in one transaction, or not at all."""
        with self._runtime.sessions.begin() as session:
            jobs = JobRepository(session)
            if not jobs.finish(
                context.job_id,
                token,
                JobPhase.COMPLETED,
                progress=1.0,
                step="done",
                summary=output.summary,
                error_code=None,
                error_message=None,
            ):
                return _Lost()
            job = jobs.get_any(context.job_id)
            assert job is not None
            kind.finalize(session, job, output)
        for attempt in range(1, context.attempt):
            self._runtime.store.delete_prefix(attempt_prefix(context.job_id, attempt))
        return output

    def _fail(self, context: JobContext, token: str, failure: Failure) -> None:
        settings = self._runtime.settings
        retry = failure.retry and context.attempt < settings.max_attempts
        message = failure.message
        if failure.retry and not retry:
            message = f"gave up after {context.attempt} attempts; last error: {message}"
        with self._runtime.sessions.begin() as session:
            moved = JobRepository(session).finish(
                context.job_id,
                token,
                JobPhase.QUEUED if retry else JobPhase.ERROR,
                error_code=failure.code,
                error_message=message,
                heartbeat_at=utcnow(),
            )
        logger.warning(
            "job attempt %d failed (%s): %s",
            context.attempt,
            "will retry" if retry else "final",
            message,
            extra={"job_id": context.job_id},
        )
        if moved and retry:
            self._queue.send(context.job_id, delay=settings.retry_delay * context.attempt)
