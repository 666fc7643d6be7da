"""Fixtures for the API tests: a small simulated calexp and a completed detect job on it."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import pytest
from astropy.table import Table
from fastapi.testclient import TestClient

from app.engine.simulate import SimulatedExposure, SimulationConfig, simulate_exposure
from app.io.fits_exposure import write_exposure
from service.api.test_exposures import upload
from service.conftest import wait_for_job

CONFIG = {
    "characterize": {"psfIterations": 1},
    "detection": {"thresholdValue": 5, "thresholdType": "stdev"},
}


def simulated_calexp() -> bytes:
    """400×400 pixels, enough bright isolated stars for a PSF, a few blends."""
    sim = simulate_exposure(
        SimulationConfig(
            width=400,
            height=400,
            n_stars=60,
            star_mag_range=(17.0, 22.0),
            n_galaxies=10,
            n_pairs=3,
            n_saturated=0,
            seed=3,
        )
    )
    buffer = io.BytesIO()
    write_exposure(sim.exposure, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def calexp() -> bytes:
    return simulated_calexp()


@pytest.fixture
def job(client: TestClient, calexp: bytes) -> dict:
    exposure_id = upload(client, calexp).json()["id"]
    response = client.post(
        "/v1/jobs", json={"kind": "detect", "exposure_id": exposure_id, "config": CONFIG}
    )
    done = wait_for_job(client, response.json()["id"], timeout=120)
    assert done["phase"] == "COMPLETED", done
    return done


@dataclass(frozen=True)
class Simulated:
    sim: SimulatedExposure
    data: bytes


@dataclass(frozen=True)
class Detected:
    exposure_id: str
    job: dict[str, Any]
    truth: Table


@pytest.fixture(scope="module")
def sparse() -> Simulated:
    """512×512 pixels, 30 isolated stars and 2 pairs: blank sky to spare, known fluxes."""
    sim = simulate_exposure(SimulationConfig(
        width=512, height=512, n_stars=30, star_mag_range=(17.0, 21.5), n_galaxies=0,
        n_pairs=2, n_saturated=0, min_separation_px=30, seed=11))
    buffer = io.BytesIO()
    write_exposure(sim.exposure, buffer)
    return Simulated(sim, buffer.getvalue())


@pytest.fixture
def detected(client: TestClient, sparse: Simulated) -> Detected:
    exposure_id = upload(client, sparse.data).json()["id"]
    response = client.post(
        "/v1/jobs", json={"kind": "detect", "exposure_id": exposure_id, "config": CONFIG})
    job = wait_for_job(client, response.json()["id"], timeout=120)
    assert job["phase"] == "COMPLETED", job
    return Detected(exposure_id, job, sparse.sim.truth)
