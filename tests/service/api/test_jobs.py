"""Jobs over HTTP: submission and validation, listing, cancel, delete, results before the end."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from service.api.test_exposures import upload
from service.conftest import assert_error, runtime_of, wait_for_job
from service.fits_files import calexp_bytes
from service.jobs.helpers import pid_alive, submit_sleep


def test_config_is_validated_with_lsst_names(client: TestClient) -> None:
    exposure_id = upload(client, calexp_bytes()).json()["id"]
    bad_key = {"detection": {"thresholdValue": 4, "thresholdTyp": "stdev"}}
    response = client.post(
        "/v1/jobs", json={"kind": "detect", "exposure_id": exposure_id, "config": bad_key}
    )
    error = assert_error(response, 422, "invalid_config")
    assert "config.detection.thresholdTyp" in error["message"]
    assert error["detail"][0]["loc"] == ["config", "detection", "thresholdTyp"]

    bad_value = {"characterize": {"psfIterations": 0}}
    response = client.post(
        "/v1/jobs", json={"kind": "detect", "exposure_id": exposure_id, "config": bad_value}
    )
    assert "config.characterize.psfIterations" in assert_error(response, 422)["message"]

    response = client.post(
        "/v1/jobs", json={"kind": "detect", "exposure_id": exposure_id, "cfg": {}}
    )
    assert "cfg" in assert_error(response, 422, "invalid_request")["message"]
    response = client.post("/v1/jobs", json={"kind": "nope", "exposure_id": exposure_id})
    assert "detect" in assert_error(response, 422, "unknown_kind")["message"]
    response = client.post("/v1/jobs", json={"kind": "detect", "exposure_id": "missing"})
    assert_error(response, 404, "exposure_not_found")
    assert client.get("/v1/jobs").json()["total"] == 0


def test_detect_job_is_queued_with_its_full_config(client: TestClient) -> None:
    exposure_id = upload(client, calexp_bytes()).json()["id"]
    config = {
        "characterize": {"psfIterations": 1},
        "detection": {"thresholdValue": 4, "thresholdType": "stdev"},
    }
    response = client.post(
        "/v1/jobs", json={"kind": "detect", "exposure_id": exposure_id, "config": config}
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["kind"] == "detect" and job["exposure_id"] == exposure_id
    assert job["config"]["detection"]["thresholdValue"] == 4
    assert job["config"]["deblend"]["maxFootprintArea"] == 1_000_000  # defaults filled in
    assert client.get(f"/v1/jobs/{job['id']}").json()["id"] == job["id"]


def test_results_before_completion_are_409(client: TestClient, tmp_path: Path) -> None:
    job = submit_sleep(client, tmp_path, seconds=5)
    for path in ("sources", "sources/1", "mask", "catalog"):
        error = assert_error(client.get(f"/v1/jobs/{job['id']}/{path}"), 409)
        assert error["code"] in {"job_not_completed", "no_sources"}
    client.post(f"/v1/jobs/{job['id']}/cancel")
    assert_error(client.get("/v1/jobs/unknown/sources"), 404, "job_not_found")


def test_list_filters(client: TestClient, tmp_path: Path) -> None:
    fast = submit_sleep(client, tmp_path)
    wait_for_job(client, fast["id"])
    slow = submit_sleep(client, tmp_path, seconds=5)

    def ids(**params: str) -> set[str]:
        return {j["id"] for j in client.get("/v1/jobs", params=params).json()["jobs"]}

    assert ids() == {fast["id"], slow["id"]}
    assert ids(phase="COMPLETED") == {fast["id"]}
    assert ids(kind="sleep") == {fast["id"], slow["id"]}
    assert ids(kind="detect") == set()
    assert ids(exposure_id="none") == set()
    assert_error(client.get("/v1/jobs", params={"phase": "DONE"}), 422, "invalid_request")
    client.post(f"/v1/jobs/{slow['id']}/cancel")


def test_cancel_kills_the_process(client: TestClient, tmp_path: Path) -> None:
    job = submit_sleep(client, tmp_path, seconds=30)
    wait_for_job(client, job["id"], {"EXECUTING"})
    pid_file = tmp_path / f"{job['id']}-1.pid"
    deadline = time.monotonic() + 10
    while not pid_file.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    response = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200 and response.json()["phase"] == "ABORTED"
    deadline = time.monotonic() + 5
    while pid_alive(pid):
        assert time.monotonic() < deadline, "the job's process survived the cancel"
        time.sleep(0.05)
    assert client.get(f"/v1/jobs/{job['id']}").json()["phase"] == "ABORTED"
    assert_error(client.post(f"/v1/jobs/{job['id']}/cancel"), 409, "job_finished")


def test_delete_job_removes_results(client: TestClient, tmp_path: Path) -> None:
    job = submit_sleep(client, tmp_path)
    assert wait_for_job(client, job["id"])["phase"] == "COMPLETED"
    job_dir = runtime_of(client).store.root / "jobs" / job["id"]
    assert job_dir.exists()
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert_error(client.get(f"/v1/jobs/{job['id']}"), 404, "job_not_found")
    assert not job_dir.exists()


def test_deleting_an_exposure_deletes_its_jobs(client: TestClient) -> None:
    exposure_id = upload(client, calexp_bytes()).json()["id"]
    job = client.post("/v1/jobs", json={"kind": "detect", "exposure_id": exposure_id}).json()
    wait_for_job(client, job["id"], timeout=120)
    assert client.delete(f"/v1/exposures/{exposure_id}").status_code == 204
    assert_error(client.get(f"/v1/jobs/{job['id']}"), 404, "job_not_found")
    assert list((runtime_of(client).store.root / "jobs").glob("*")) == []
