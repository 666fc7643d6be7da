"""The job machinery on the in-process worker: phases, progress, retries, limits, recovery."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import update

from app.db.base import utcnow
from app.db.models import JobPhase, JobRecord
from service.conftest import runtime_of, wait_for_job
from service.jobs.helpers import pid_alive, result_counts, runs, submit_sleep


def test_job_goes_through_the_phases_with_progress(client: TestClient, tmp_path: Path) -> None:
    job = submit_sleep(client, tmp_path, seconds=1.5)
    assert job["phase"] == "QUEUED" and job["progress"] == 0
    running = wait_for_job(client, job["id"], {"EXECUTING"})
    assert running["started_at"] is not None and running["attempt"] == 1
    deadline = time.monotonic() + 5
    while (seen := client.get(f"/v1/jobs/{job['id']}").json())["progress"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert seen["step"] == "sleeping" and 0 < seen["progress"] <= 1
    done = wait_for_job(client, job["id"])
    assert done["phase"] == "COMPLETED", done
    assert done["progress"] == 1 and done["error"] is None
    assert done["summary"] == {"slept": 1.5, "attempt": 1}
    assert done["duration_seconds"] >= 1.5
    assert result_counts(runtime_of(client), job["id"]) == (3, 1)


def test_transient_failures_are_retried(client: TestClient, tmp_path: Path) -> None:
    job = submit_sleep(client, tmp_path, fail_transient=2)
    done = wait_for_job(client, job["id"])
    assert done["phase"] == "COMPLETED", done
    assert done["attempt"] == 3
    assert len(runs(tmp_path, job["id"])) == 3
    assert result_counts(runtime_of(client), job["id"]) == (3, 1)


def test_attempts_are_capped(client: TestClient, tmp_path: Path) -> None:
    job = submit_sleep(client, tmp_path, fail_transient=10)
    done = wait_for_job(client, job["id"])
    assert done["phase"] == "ERROR" and done["attempt"] == 3
    assert done["error"]["code"] == "transient_error"
    assert done["error"]["message"].startswith("gave up after 3 attempts")
    assert "simulated transient failure on attempt 3" in done["error"]["message"]
    assert len(runs(tmp_path, job["id"])) == 3
    assert result_counts(runtime_of(client), job["id"]) == (0, 0)


def test_a_dying_process_is_retried_then_reported(client: TestClient, tmp_path: Path) -> None:
    job = submit_sleep(client, tmp_path, crash=True)
    done = wait_for_job(client, job["id"])
    assert done["phase"] == "ERROR" and done["attempt"] == 3
    assert done["error"]["code"] == "process_died"
    assert "exit code 9" in done["error"]["message"]


def test_usage_errors_are_not_retried(client: TestClient, tmp_path: Path) -> None:
    job = submit_sleep(client, tmp_path, usage_error="the threshold is below the noise")
    done = wait_for_job(client, job["id"])
    assert done["phase"] == "ERROR" and done["attempt"] == 1
    assert done["error"] == {"code": "bad_input", "message": "the threshold is below the noise"}


def test_time_limit_kills_the_process(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(job_time_limit=0.6)
    job = submit_sleep(client, tmp_path, seconds=30)
    done = wait_for_job(client, job["id"], timeout=10)
    assert done["phase"] == "ERROR" and done["error"]["code"] == "time_limit"
    pid = int((tmp_path / f"{job['id']}-1.pid").read_text())
    assert not pid_alive(pid)


def _insert_abandoned(client: TestClient, *, attempt: int, tmp_path: Path) -> str:
    """A job left EXECUTING by a worker that died a minute ago."""
    job_id = uuid.uuid4().hex
    with runtime_of(client).sessions.begin() as session:
        session.add(
            JobRecord(
                id=job_id,
                owner="local",
                kind="sleep",
                parameters={"record_dir": str(tmp_path), "seconds": 0.0},
                phase=JobPhase.EXECUTING,
                attempt=attempt,
                worker_id="dead-worker",
                heartbeat_at=utcnow() - timedelta(minutes=1),
                started_at=utcnow() - timedelta(minutes=2),
            )
        )
    return job_id


def test_reconciler_requeues_jobs_of_dead_workers(client: TestClient, tmp_path: Path) -> None:
    job_id = _insert_abandoned(client, attempt=1, tmp_path=tmp_path)
    done = wait_for_job(client, job_id, timeout=10)
    assert done["phase"] == "COMPLETED" and done["attempt"] == 2
    assert len(runs(tmp_path, job_id)) == 1


def test_reconciler_gives_up_after_the_last_attempt(client: TestClient, tmp_path: Path) -> None:
    job_id = _insert_abandoned(client, attempt=3, tmp_path=tmp_path)
    done = wait_for_job(client, job_id, timeout=10)
    assert done["phase"] == "ERROR"
    assert done["error"]["code"] == "attempts_exhausted"
    assert "gave up after 3 attempts" in done["error"]["message"]
    assert runs(tmp_path, job_id) == []


def test_a_rerun_replaces_results(client: TestClient, tmp_path: Path) -> None:
    job = submit_sleep(client, tmp_path, n_sources=5)
    assert wait_for_job(client, job["id"])["phase"] == "COMPLETED"
    runtime = runtime_of(client)
    with runtime.sessions.begin() as session:
        session.execute(
            update(JobRecord).where(JobRecord.id == job["id"]).values(phase=JobPhase.QUEUED)
        )
    client.app.state.queue.send(job["id"])  # type: ignore[attr-defined]
    done = wait_for_job(client, job["id"])
    assert done["phase"] == "COMPLETED" and done["attempt"] == 2
    assert result_counts(runtime, job["id"]) == (5, 1)
    # the old attempt's files go after the COMPLETED commit (so a failed commit loses
    # nothing): give the worker a moment to remove them
    job_dir = runtime.store.root / "jobs" / job["id"]
    deadline = time.monotonic() + 10
    while len(list(job_dir.iterdir())) > 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(p.name for p in job_dir.iterdir()) == ["attempt-2"]
