"""The job's child process: runs one compute function, reports progress, dies with its parent.

Messages to the parent over a pipe: ``("progress", fraction, step)``, then either
``("done", JobOutput)`` or ``("failed", Failure)``. A second pipe is a lifeline: the parent
never writes to it, so reading it returns only when the parent is gone, and the child exits
instead of computing for no one.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from app.jobs.errors import classify
from app.jobs.kinds import JobContext, JobOutput, Progress

PROGRESS_MIN_INTERVAL = 0.1  # seconds between progress messages


def _watch_parent(lifeline: Connection) -> None:
    try:
        lifeline.recv()
    except (EOFError, OSError):
        pass
    os._exit(70)


def child_main(
    compute: Callable[[JobContext, Progress], JobOutput],
    context: JobContext,
    results: Connection,
    lifeline: Connection,
) -> None:
    """Entry point of the child process."""
    threading.Thread(target=_watch_parent, args=(lifeline,), daemon=True).start()
    last = 0.0

    def progress(fraction: float, step: str) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= PROGRESS_MIN_INTERVAL:
            last = now
            results.send(("progress", min(max(float(fraction), 0.0), 1.0), str(step)))

    try:
        output = compute(context, progress)
    except BaseException as error:  # noqa: BLE001 - every failure is reported, then classified
        results.send(("failed", classify(error)))
    else:
        results.send(("done", output))
    finally:
        results.close()
