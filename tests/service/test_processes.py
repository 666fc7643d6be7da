"""Several serving processes: jobs accepted anywhere run on the primary's embedded worker."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.api.processes import ProcessRole
from app.commands.embedded import free_port
from app.settings import Settings
from service.api.conftest import CONFIG, simulated_calexp
from service.conftest import FINAL_PHASES, wait_for_job
from service.jobs.helpers import runs, submit_sleep

SKYPHOT = Path(sys.executable).with_name("skyphot")


def test_a_secondary_hands_its_jobs_to_the_primary(settings: Settings, tmp_path: Path) -> None:
    handoff = multiprocessing.get_context("spawn").Queue()
    primary_app = create_app(settings, ProcessRole(primary=True, handoff=handoff))
    secondary_app = create_app(settings, ProcessRole(primary=False, handoff=handoff,
                                                     migrated=True))
    with TestClient(primary_app) as primary, TestClient(secondary_app) as secondary:
        handed = [submit_sleep(secondary, tmp_path, seconds=0.2)["id"] for _ in range(3)]
        direct = submit_sleep(primary, tmp_path, seconds=0.2)["id"]
        for job_id in [*handed, direct]:
            done = wait_for_job(secondary, job_id, timeout=10)
            assert done["phase"] == "COMPLETED", done
            assert done["attempt"] == 1
            assert len(runs(tmp_path, job_id)) == 1  # one attempt, started once


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "skyphot serve exited"
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("skyphot serve --processes 2 did not become ready")


def serving_pids(supervisor: int) -> list[int]:
    """The supervisor's serving processes (not multiprocessing's resource tracker)."""
    children = []
    for task in Path(f"/proc/{supervisor}/task").iterdir():
        try:
            children += map(int, (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            pass
    pids = []
    for child in children:
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                pids.append(child)
        except (FileNotFoundError, ProcessLookupError):  # a child that just ended
            pass
    return sorted(pids)


def test_serve_on_two_processes_runs_every_job_and_restarts_and_stops_cleanly(
        tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SKYPHOT_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
           "SKYPHOT_BROKER_URL": "memory://", "SKYPHOT_STORAGE_URL": str(tmp_path / "s"),
           "SKYPHOT_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen([str(SKYPHOT), "serve", "--port", str(port), "--processes", "2"],
                               env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        upload = httpx.post(f"{url}/v1/exposures",
                            files={"file": ("c.fits", simulated_calexp())}, timeout=30)
        assert upload.status_code == 201, upload.text
        exposure_id = upload.json()["id"]
        jobs = []
        for _ in range(6):  # each on a new connection: the kernel spreads them over both
            response = httpx.post(f"{url}/v1/jobs", timeout=30, json={
                "kind": "detect", "exposure_id": exposure_id, "config": CONFIG})
            assert response.status_code == 201, response.text
            jobs.append(response.json()["id"])
        deadline = time.monotonic() + 120
        phases: dict[str, str] = {}
        while time.monotonic() < deadline:
            phases = {j: httpx.get(f"{url}/v1/jobs/{j}").json()["phase"] for j in jobs}
            if set(phases.values()) <= FINAL_PHASES:
                break
            time.sleep(0.2)
        assert set(phases.values()) == {"COMPLETED"}, phases
        # the brightest isolated star, measured again at its centroid on the same calexp
        star = max((s for s in httpx.get(f"{url}/v1/jobs/{jobs[-1]}/sources",
                                         params={"limit": 1000}).json()["sources"]
                    if s["parent"] == 0 and s["deblend_nChild"] == 0),
                   key=lambda s: s["base_PsfFlux_instFlux"])
        forced = httpx.post(f"{url}/v1/forced", timeout=30, json={
            "exposure_id": exposure_id, "job_id": jobs[-1],
            "positions": [{"x": star["base_SdssCentroid_x"], "y": star["base_SdssCentroid_y"]}]})
        assert forced.status_code == 200, forced.text
        flux = forced.json()["rows"][0]["base_PsfFlux_instFlux"]
        assert abs(flux / star["base_PsfFlux_instFlux"] - 1) < 0.01

        # a serving process killed outright is started again; nothing is refused meanwhile
        before = serving_pids(process.pid)
        assert len(before) == 2
        os.kill(before[-1], signal.SIGKILL)
        for _ in range(10):  # the other process answers on the shared socket
            assert httpx.get(f"{url}/v1/jobs/{jobs[0]}", timeout=30).status_code == 200
        deadline = time.monotonic() + 60
        while (now := serving_pids(process.pid)) == before or len(now) < 2:
            assert time.monotonic() < deadline, now
            time.sleep(0.2)
        assert before[0] in now and before[-1] not in now
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0
