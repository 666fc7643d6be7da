"""Service settings from ``SKYPHOT_*`` environment variables, and the JSON log format.

The defaults are the embedded setup: a SQLite file, an in-process Dramatiq worker on an
in-memory broker and a local storage directory, all under ``./skyphot-data/``, so
``skyphot serve`` needs nothing else. Settings are built by the app factory and the worker,
never at import time.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextvars import ContextVar
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

request_id_var: ContextVar[str | None] = ContextVar("skyphot_request_id", default=None)
"""The id of the HTTP request being served, added to every log line it causes."""


class Settings(BaseSettings):
    """Everything an operator can set; prefix ``SKYPHOT_``."""

    model_config = SettingsConfigDict(env_prefix="SKYPHOT_", case_sensitive=False)

    database_url: str = Field(
        "sqlite:///./skyphot-data/skyphot.sqlite3",
        title="Database URL",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db.",
    )
    broker_url: str = Field(
        "memory://",
        title="Queue broker URL",
        description="memory:// runs jobs in-process; redis://host:port/db for separate workers.",
    )
    storage_url: str = Field(
        "./skyphot-data/storage",
        title="Blob storage location",
        description="A local directory (path or file:// URL) for exposures and job artifacts.",
    )
    queue_name: str = Field("skyphot", title="Name of the Dramatiq queue jobs are sent on")
    max_upload_bytes: int = Field(
        2 * 1024**3, gt=0, title="Largest exposure accepted, in bytes (upload or URL)"
    )
    max_job_upload_bytes: int = Field(
        256 * 1024**2, gt=0,
        title="Largest file uploaded with a job (a forced job's positions table), in bytes",
    )
    job_time_limit: float = Field(
        3600.0, gt=0, title="Seconds a job may compute before its process is killed"
    )
    max_attempts: int = Field(3, ge=1, title="Attempts a job gets before it is ERROR")
    retry_delay: float = Field(
        5.0, ge=0, title="Seconds before a transient failure is retried, times the attempt"
    )
    heartbeat_interval: float = Field(
        5.0,
        gt=0,
        title="Seconds between a running job's heartbeats",
        description="A job whose heartbeat is three intervals old is taken to be abandoned.",
    )
    reconcile_interval: float = Field(60.0, gt=0, title="Seconds between sweeps for abandoned jobs")
    worker_threads: int = Field(
        1, ge=1, title="Jobs the in-process worker runs at once (memory:// broker only)"
    )
    job_compute_threads: int = Field(
        1, ge=1,
        title="BLAS/OpenMP threads one job's computation may use",
        description="One per job keeps workers on a machine from competing for cores; raise "
        "it when a single worker runs alone on many cores.",
    )
    forced_sync_max_positions: int = Field(
        1000,
        ge=1,
        title="Most positions a synchronous POST /v1/forced measures",
        description="Random positions count too; above it the client is told to submit a job.",
    )
    lightcurve_max_exposures: int = Field(
        200, ge=1, title="Most exposures a synchronous light curve measures",
        description="Above it GET /v1/lightcurve submits a forced job and answers 202.",
    )
    api_processes: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1,
        title="Processes `skyphot serve` answers requests with (default: one per core)",
        description="They share one socket; on the embedded default the first also runs "
        "the jobs.",
    )
    default_owner: str = Field("local", title="Owner of every row when no one is signed in")
    log_level: LogLevel = Field("INFO", title="Log level of the skyphot loggers")
    opentelemetry: bool = Field(
        False, title="Send FastAPI's OpenTelemetry traces, metrics and logs",
        description="Through the providers the environment configures. Off, no request "
        "asks whether any provider is set up (a few percent of a small request's time).",
    )

    @property
    def stale_after(self) -> float:
        """Seconds without a heartbeat after which a job's worker is taken to be dead."""
        return 3 * self.heartbeat_interval

    @property
    def embedded_queue(self) -> bool:
        """Whether jobs run in this process on an in-memory broker."""
        return self.broker_url.startswith("memory:")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, UTC times, with the request id when there is one."""

    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%SZ"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (request_id := request_id_var.get()) is not None:
            entry["request_id"] = request_id
        for key in ("job_id", "method", "path", "status", "duration_ms"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    """Send the ``app`` logs (and Dramatiq's warnings) to stderr as JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    for name, logger_level in (("app", level), ("dramatiq", "WARNING")):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logger_level)
