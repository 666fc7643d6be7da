"""A detect job leaves the characterized exposure, which the calexp service serves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.services.calexps import CalexpService
from app.services.errors import ConflictError
from service.api.test_exposures import upload
from service.conftest import runtime_of


@pytest.fixture
def service(client: TestClient) -> Iterator[CalexpService]:
    runtime = runtime_of(client)
    with runtime.sessions() as session:
        yield CalexpService(session, runtime.store, runtime.exposures,
                            runtime.settings.default_owner)


def test_detect_job_leaves_a_characterized_calexp(service: CalexpService, job: dict) -> None:
    exposure, found = service.characterized(job["exposure_id"])
    assert found.job_id == job["id"]
    assert exposure.psf is not None and "base_PsfFlux" in exposure.ap_corr
    assert (exposure.mask & exposure.planes.bitmask("DETECTED")).any()
    again, _ = service.characterized(job["exposure_id"], job["id"])
    assert again is exposure  # served from memory the second time


def test_without_a_detect_job_the_conflict_says_what_to_do(
    client: TestClient, service: CalexpService, calexp: bytes
) -> None:
    exposure_id = upload(client, calexp).json()["id"]
    with pytest.raises(ConflictError, match="run one first"):
        service.characterized(exposure_id)
