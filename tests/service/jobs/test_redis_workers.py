"""The distributed setup: real ``skyphot worker`` processes on Redis and PostgreSQL.

The API runs in the test process without a worker of its own; jobs run only in the worker
subprocesses. Workers for ``sleep`` jobs import the test-only kind first and then run the
same ``skyphot worker`` entry point.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.settings import Settings
from service.conftest import runtime_of, wait_for_job
from service.jobs.helpers import pid_alive, result_counts, runs, submit_sleep

TESTS_DIR = Path(__file__).resolve().parents[2]
SKYPHOT = Path(sys.executable).with_name("skyphot")
WORKER_WITH_SLEEP_KIND = (
    "import sys; import service.jobs.sleep_kind; from app.cli import main; "
    "sys.exit(main(['worker']))"
)


@pytest.fixture
def distributed(postgres_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=postgres_url,
        broker_url=redis_url,
        storage_url=str(tmp_path / "storage"),
        queue_name=f"test-{uuid.uuid4().hex[:8]}",
        heartbeat_interval=0.2,
        retry_delay=0.05,
        reconcile_interval=0.5,
        job_time_limit=60,
        log_level="INFO",
    )


@pytest.fixture
def api(distributed: Settings) -> Iterator[TestClient]:
    """The API on Redis: it queues jobs but runs none (migrations applied at its start)."""
    with TestClient(create_app(distributed)) as client:
        yield client


@pytest.fixture
def start_worker(
    distributed: Settings, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start worker processes; all are stopped (SIGKILL if need be) after the test."""
    started: list[subprocess.Popen] = []

    def start(*, sleep_kind: bool = True) -> subprocess.Popen:
        env = {
            **os.environ,
            "PYTHONPATH": str(TESTS_DIR),
            **{f"SKYPHOT_{k.upper()}": str(v) for k, v in distributed.model_dump().items()},
        }
        command = (
            [sys.executable, "-c", WORKER_WITH_SLEEP_KIND]
            if sleep_kind
            else [str(SKYPHOT), "worker"]
        )
        with (tmp_path / f"worker-{len(started)}.log").open("w") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
    for process in started:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_file(path: Path, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path.read_text()


def test_two_workers_share_the_queue(
    api: TestClient, start_worker: Callable[..., subprocess.Popen], tmp_path: Path
) -> None:
    start_worker()
    start_worker()
    jobs = [submit_sleep(api, tmp_path, seconds=0.5) for _ in range(4)]
    for job in jobs:
        done = wait_for_job(api, job["id"], timeout=60)
        assert done["phase"] == "COMPLETED", done
        assert result_counts(runtime_of(api), job["id"]) == (3, 1)
    assert api.get("/ready").json()["checks"] == {"database": "ok", "broker": "ok"}


def test_sigkilled_worker_job_completes_exactly_once(
    api: TestClient, start_worker: Callable[..., subprocess.Popen], tmp_path: Path
) -> None:
    first = start_worker()
    job = submit_sleep(api, tmp_path, seconds=3)
    child_pid = int(wait_for_file(tmp_path / f"{job['id']}-1.pid"))
    assert api.get(f"/v1/jobs/{job['id']}").json()["phase"] == "EXECUTING"

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    deadline = time.monotonic() + 10
    while pid_alive(child_pid):  # the job's process notices its worker died and exits
        assert time.monotonic() < deadline, "the orphaned job process kept running"
        time.sleep(0.05)

    start_worker()
    done = wait_for_job(api, job["id"], timeout=60)
    assert done["phase"] == "COMPLETED", done
    assert done["attempt"] == 2
    assert [line.split()[1] for line in runs(tmp_path, job["id"])] == ["1", "2"]
    assert result_counts(runtime_of(api), job["id"]) == (3, 1)
    job_dir = runtime_of(api).store.root / "jobs" / job["id"]
    assert [p.name for p in job_dir.iterdir()] == ["attempt-2"]


def test_stopped_worker_hands_its_job_back(
    api: TestClient, start_worker: Callable[..., subprocess.Popen], tmp_path: Path
) -> None:
    first = start_worker()
    job = submit_sleep(api, tmp_path, seconds=3)
    wait_for_file(tmp_path / f"{job['id']}-1.pid")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=20) == 0
    assert api.get(f"/v1/jobs/{job['id']}").json()["phase"] == "QUEUED"

    start_worker()
    done = wait_for_job(api, job["id"], timeout=60)
    assert done["phase"] == "COMPLETED" and done["attempt"] == 1  # the stop cost no attempt
    assert result_counts(runtime_of(api), job["id"]) == (3, 1)


def test_skyphot_worker_runs_a_detect_job(
    api: TestClient, start_worker: Callable[..., subprocess.Popen]
) -> None:
    from service.api.conftest import CONFIG, simulated_calexp
    from service.api.test_exposures import upload

    start_worker(sleep_kind=False)
    exposure_id = upload(api, simulated_calexp()).json()["id"]
    job = api.post(
        "/v1/jobs", json={"kind": "detect", "exposure_id": exposure_id, "config": CONFIG}
    ).json()
    done = wait_for_job(api, job["id"], timeout=120)
    assert done["phase"] == "COMPLETED", done
    assert result_counts(runtime_of(api), job["id"]) == (done["summary"]["n_sources"], 4)
