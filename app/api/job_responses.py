"""The response that hands a client a job to poll: the job as JSON, its URL in Location."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from app.api.schemas import Job
from app.db.models import JobRecord


def job_response(job: JobRecord, status_code: int) -> JSONResponse:
    """201 for a job the client asked for, 202 for one a request became."""
    return JSONResponse(Job.from_record(job).model_dump(mode="json"), status_code=status_code,
                        headers={"Location": f"/v1/jobs/{job.id}"})
