"""A running attempt's heartbeat: a thread that records liveness and progress in the job row.

It runs from claim to conclusion, independently of the child process (whose start may take
seconds) and of result storage, so a live worker never looks dead. When the row stops
being this attempt's (cancelled, deleted, taken over), ``lost`` is set.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

from app.db.jobs import JobRepository

logger = logging.getLogger(__name__)


class Heartbeat:
    """Use as a context manager around one attempt; update `progress` and `step` freely."""

    def __init__(
        self, sessions: sessionmaker[Session], job_id: str, token: str, interval: float
    ) -> None:
        self.progress = 0.0
        self.step = "starting"
        self.lost = threading.Event()
        self._sessions = sessions
        self._job_id = job_id
        self._token = token
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                with self._sessions.begin() as session:
                    alive = JobRepository(session).beat(
                        self._job_id, self._token, self.progress, self.step
                    )
            except Exception:  # the database may be briefly away: beat again next time
                logger.exception("heartbeat failed", extra={"job_id": self._job_id})
                continue
            if not alive:
                self.lost.set()
                return
