"""The Dramatiq side: a broker for the configured URL and the one actor, which takes job ids.

Dramatiq's own retries and time limits are off: attempts and limits are kept in the database
by the runner, which is the source of truth.
"""

from __future__ import annotations

import logging
import queue as queue_module
import threading
from multiprocessing.queues import Queue

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from app.jobs.runner import JobRunner
from app.jobs.runtime import Runtime

logger = logging.getLogger(__name__)

ACTOR_NAME = "skyphot_run_job"


def make_broker(broker_url: str) -> dramatiq.Broker:
    """In-memory broker for ``memory://``, Redis for ``redis://``; no implicit middleware."""
    if broker_url.startswith("memory:"):
        return StubBroker(middleware=[])
    if broker_url.startswith(("redis:", "rediss:")):
        return RedisBroker(url=broker_url, middleware=[], namespace="skyphot")
    raise ValueError(f"unsupported broker URL {broker_url!r}: use memory:// or redis://")


HANDOFF_POLL = 0.2  # seconds: how soon the reader of a handoff pipe notices it should stop


class JobQueue:
    """Sends job ids, and runs them when this process has a Dramatiq worker.

    With ``forward``, ids are put on that pipe instead of the broker: a serving process
    whose in-memory broker has no worker hands its jobs to the process that has one
    (`relay` there reads them).
    """

    def __init__(self, runtime: Runtime, broker: dramatiq.Broker | None = None,
                 forward: Queue[tuple[str, float]] | None = None) -> None:
        self._forward = forward
        self.broker = broker or make_broker(runtime.settings.broker_url)
        self.runner = JobRunner(runtime, self)
        self._actor = dramatiq.Actor(
            self.runner.run,
            broker=self.broker,
            actor_name=ACTOR_NAME,
            queue_name=runtime.settings.queue_name,
            priority=0,
            options={},
        )

    def send(self, job_id: str, delay: float = 0.0) -> None:
        """Queue a job id (call after the transaction that made the job QUEUED commits)."""
        if self._forward is not None:
            self._forward.put((job_id, delay))
            return
        self._actor.send_with_options(args=(job_id,), delay=int(delay * 1000) or None)

    def ping(self) -> None:
        """Raise if the broker cannot be reached."""
        if isinstance(self.broker, RedisBroker):
            redis.Redis(connection_pool=self.broker.client.connection_pool).ping()

    def close(self) -> None:
        self.broker.close()


def relay(handoff: Queue[tuple[str, float]], queue: JobQueue, stop: threading.Event
          ) -> threading.Thread:
    """A daemon thread sending on ``queue`` the jobs other processes put on ``handoff``,
    until ``stop`` is set."""

    def loop() -> None:
        while not stop.is_set():
            try:
                job_id, delay = handoff.get(timeout=HANDOFF_POLL)
            except queue_module.Empty:
                continue
            logger.info("job handed over by another API process", extra={"job_id": job_id})
            queue.send(job_id, delay)

    thread = threading.Thread(target=loop, name="skyphot-handoff", daemon=True)
    thread.start()
    return thread


def start_worker(queue: JobQueue, threads: int) -> dramatiq.Worker:
    """A Dramatiq worker consuming the job queue in this process."""
    queue.runner.warm_up()
    worker = dramatiq.Worker(queue.broker, worker_threads=threads, worker_timeout=100)
    # jobs are long and CPU-bound: take only as many messages as can run now, so an idle
    # worker is never left waiting while a busy one holds a job (Dramatiq's default is 2×)
    worker.queue_prefetch = threads
    worker.start()
    return worker
