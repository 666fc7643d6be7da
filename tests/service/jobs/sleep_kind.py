"""A test-only job kind, ``sleep``, that exercises the job machinery without the engine.

It records each attempt (pid file, a line in ``runs.log``), sleeps while reporting progress,
can fail transiently for its first attempts or with a usage error, and stores a few source
rows and an artifact through the detect kind's own idempotent ``finalize``. Registered by
importing this module; never part of the product.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from app.jobs import detect
from app.jobs.errors import TransientError, UsageError
from app.jobs.kinds import Artifact, JobContext, JobKind, JobOutput, Progress, register_kind
from app.storage.blobs import open_store


class SleepParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = 0.0
    record_dir: str
    fail_transient: int = 0  # attempts 1..n fail with a TransientError
    usage_error: str | None = None
    crash: bool = False  # the process exits abruptly, as if OOM-killed
    n_sources: int = 3


def compute(context: JobContext, progress: Progress) -> JobOutput:
    params = SleepParameters.model_validate(context.parameters)
    records = Path(params.record_dir)
    (records / f"{context.job_id}-{context.attempt}.pid").write_text(str(os.getpid()))
    with (records / "runs.log").open("a") as log:
        log.write(f"{context.job_id} {context.attempt} start\n")
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < params.seconds:
        progress(elapsed / params.seconds, "sleeping")
        time.sleep(0.02)
    if params.crash:
        os._exit(9)
    if context.attempt <= params.fail_transient:
        raise TransientError(f"simulated transient failure on attempt {context.attempt}")
    if params.usage_error:
        raise UsageError(params.usage_error, "bad_input")
    key = f"{context.artifact_prefix}/catalog.txt"
    size = open_store(context.storage_url).put_bytes(key, b"slept\n")
    sources = [
        {"id": i + 1, "parent": 0, "deblend_nchild": 0, "row": {"id": i + 1}}
        for i in range(params.n_sources)
    ]
    return JobOutput(
        summary={"slept": params.seconds, "attempt": context.attempt},
        artifacts=[Artifact("catalog", key, "text/plain", size)],
        sources=sources,
        flags=[(1, "base_PixelFlags_flag_edge")],
    )


SLEEP = register_kind(
    JobKind(
        name="sleep",
        parameters=SleepParameters,
        compute=compute,
        finalize=detect.finalize,
        exposure="none",
    )
)
