"""The service's limits, so a client can choose a synchronous request or a job up front."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.dependencies import RuntimeDep

router = APIRouter(tags=["health"])


class Limits(BaseModel):
    """What this server accepts; set by its operator (``SKYPHOT_*``)."""

    max_upload_bytes: int = Field(description="Largest exposure, upload or URL.")
    max_job_upload_bytes: int = Field(description="Largest table uploaded with a job.")
    forced_sync_max_positions: int = Field(
        description="Most positions (random ones included) one POST /v1/forced measures; "
                    'more go in a job: POST /v1/jobs {"kind": "forced", …}.')
    lightcurve_max_exposures: int = Field(
        description="Most exposures one synchronous light curve measures; above it GET "
                    "/v1/lightcurve answers 202 with the job that measures them.")


@router.get("/v1/limits", response_model=Limits, summary="This server's size limits")
def limits(runtime: RuntimeDep) -> Limits:
    s = runtime.settings
    return Limits(max_upload_bytes=s.max_upload_bytes,
                  max_job_upload_bytes=s.max_job_upload_bytes,
                  forced_sync_max_positions=s.forced_sync_max_positions,
                  lightcurve_max_exposures=s.lightcurve_max_exposures)
