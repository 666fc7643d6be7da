"""Every query is scoped by owner: another owner's ids are 404s, their lists are empty."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from app.api.dependencies import get_owner
from service.api.test_exposures import upload
from service.conftest import assert_error, wait_for_job
from service.fits_files import calexp_bytes
from service.jobs.helpers import submit_sleep


def test_other_owners_see_nothing(client: TestClient, tmp_path: Path) -> None:
    exposure = upload(client, calexp_bytes()).json()
    job = submit_sleep(client, tmp_path)
    wait_for_job(client, job["id"])

    client.app.dependency_overrides[get_owner] = lambda: "someone-else"  # type: ignore[attr-defined]
    try:
        assert client.get("/v1/exposures").json()["total"] == 0
        assert client.get("/v1/jobs").json()["total"] == 0
        assert_error(client.get(f"/v1/exposures/{exposure['id']}"), 404, "exposure_not_found")
        assert_error(client.delete(f"/v1/exposures/{exposure['id']}"), 404)
        assert_error(client.get(f"/v1/jobs/{job['id']}"), 404, "job_not_found")
        assert_error(client.post(f"/v1/jobs/{job['id']}/cancel"), 404)
        assert_error(client.delete(f"/v1/jobs/{job['id']}"), 404)
        assert_error(client.get(f"/v1/jobs/{job['id']}/sources"), 404, "job_not_found")
        response = client.post("/v1/jobs", json={"kind": "detect", "exposure_id": exposure["id"]})
        assert_error(response, 404, "exposure_not_found")
        # the same file uploaded by another owner is their own exposure
        theirs = upload(client, calexp_bytes())
        assert theirs.status_code == 201 and theirs.json()["id"] != exposure["id"]
    finally:
        client.app.dependency_overrides.clear()  # type: ignore[attr-defined]
    assert client.get(f"/v1/exposures/{exposure['id']}").status_code == 200
