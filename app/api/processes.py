"""``skyphot serve`` on several processes: one listening socket, one uvicorn server each.

A Python process answers requests on one core at a time (the GIL), so on an N-core machine
N processes sharing the socket answer up to N times as many synchronous requests (forced
photometry, images) as one. On the embedded default the first process, the primary, also
runs the in-process job worker and the reconciler; the in-memory broker exists only there,
so the other processes hand the jobs they accept to it through a pipe the supervisor holds
(nothing in it is lost when the primary restarts, and the primary re-sends every unfinished
job when it starts). Migrations run once, here, before any process serves. A process that
dies is started again; SIGTERM or SIGINT stops them all, each finishing its requests.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from typing import Any

import uvicorn

from app.db.migrate import upgrade
from app.settings import Settings, configure_logging

logger = logging.getLogger(__name__)

STOP_TIMEOUT = 60.0  # seconds a process gets to finish its requests and stop its worker
RESTART_PAUSE = 1.0  # seconds between restarts of a process that keeps dying


@dataclass(frozen=True)
class ProcessRole:
    """What one serving process does besides answering requests.

    ``primary``: runs the embedded worker and the reconciler (the only process that does).
    ``handoff``: where a process without the embedded worker sends the jobs it queues
    (job id, delay in seconds); the primary reads it. ``migrated``: the database is at the
    newest revision already, so the lifespan does not upgrade it.
    """

    primary: bool = True
    handoff: Queue[tuple[str, float]] | None = None
    migrated: bool = False


SINGLE = ProcessRole()
"""One process that does everything, as `create_app` without a role."""


def serve_processes(settings: Settings, host: str, port: int, processes: int) -> None:
    """Serve on ``processes`` processes until SIGTERM or SIGINT."""
    configure_logging(settings.log_level)
    upgrade(settings.database_url)
    context = multiprocessing.get_context("spawn")
    handoff: Queue[tuple[str, float]] | None = (
        context.Queue() if settings.embedded_queue else None)
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(2048)
    listener.set_inheritable(True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    def start(index: int) -> SpawnProcess:
        role = ProcessRole(primary=index == 0, handoff=handoff, migrated=True)
        child = context.Process(target=_serve_one, name=f"skyphot-api-{index}",
                                args=(settings.model_dump(), role, listener))
        child.start()
        return child

    children = [start(i) for i in range(processes)]
    logger.info("serving on http://%s:%d with %d processes", host, port, processes)
    while not stop.wait(RESTART_PAUSE):
        for index, child in enumerate(children):
            if not child.is_alive() and not stop.is_set():
                logger.warning("API process %d exited (code %s); starting it again",
                               index, child.exitcode)
                children[index] = start(index)
    for child in children:
        if child.is_alive():
            child.terminate()
    for child in children:
        child.join(STOP_TIMEOUT)
        if child.is_alive():
            child.kill()
    listener.close()


def _serve_one(settings: dict[str, Any], role: ProcessRole, listener: socket.socket) -> None:
    """One serving process: the app for ``role`` on the supervisor's socket."""
    from app.api.app import create_app

    config = Settings(**settings)
    app = create_app(config, role)
    uvicorn.Server(uvicorn.Config(app, log_level=config.log_level.lower(), access_log=False)
                   ).run(sockets=[listener])
