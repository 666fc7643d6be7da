"""Helpers for job tests: submit ``sleep`` jobs, read their rows and runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.db.models import ArtifactRecord, SourceRecord
from app.jobs.runtime import Runtime
from service.jobs import sleep_kind  # noqa: F401  (registers the test-only "sleep" kind)


def submit_sleep(client: TestClient, record_dir: Path, **config: Any) -> dict[str, Any]:
    response = client.post(
        "/v1/jobs", json={"kind": "sleep", "config": {"record_dir": str(record_dir), **config}}
    )
    assert response.status_code == 201, response.text
    return response.json()


def runs(record_dir: Path, job_id: str) -> list[str]:
    """The attempts that started, as logged by the sleep kind."""
    log = record_dir / "runs.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if line.startswith(job_id)]


def result_counts(runtime: Runtime, job_id: str) -> tuple[int, int]:
    """(sources, artifacts) rows stored for the job."""
    with runtime.sessions() as session:
        sources = session.scalar(
            select(func.count()).select_from(SourceRecord).where(SourceRecord.job_id == job_id)
        )
        artifacts = session.scalar(
            select(func.count()).select_from(ArtifactRecord).where(ArtifactRecord.job_id == job_id)
        )
    return int(sources or 0), int(artifacts or 0)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a killed child not yet reaped is a zombie: count it as gone; so is one that went
    # between the two looks
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return not state.startswith("Z")
