"""The ``forced`` job: forced photometry at many positions on one characterized exposure.

For requests above the synchronous limit. The positions come inline in the parameters, or
as an uploaded table (the ``positions`` part of a multipart ``POST /v1/jobs``), checked at
submission and stored beside the job. At submission the job is tied to a completed detect
job (given, or the newest), whose calexp (PSF, aperture corrections) the child measures on,
so a later detect job never changes what this one measured. The result table is the
``forced`` artifact (FITS); its rows go to ``forced_sources`` (typed core columns, the
client's tags, flags as bits) for filtered, paged queries, in the transaction that completes
the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.orm import Session

from app.db.forced_sources import ForcedSourceRepository
from app.db.jobs import JobRepository
from app.db.models import JobPhase, JobRecord
from app.db.sources import SourceRepository
from app.engine.config import FORCED_DEFAULT_PLUGINS, FORCED_PLUGINS
from app.io.positions import PositionsError, measurement_names, positions_table
from app.io.positions_file import FILE_FORMATS, inspect_positions, read_positions, sniff_format
from app.jobs.errors import UsageError, unusable_input
from app.jobs.forced_rows import flag_names, forced_rows
from app.jobs.kinds import (
    Artifact,
    InspectedUpload,
    JobContext,
    JobKind,
    JobOutput,
    Progress,
    UploadSpec,
    register_kind,
)
from app.storage.blobs import open_store

MAX_POSITIONS = 1_000_000


def unknown_plugins_message(plugins: Sequence[str]) -> str | None:
    """Why ``plugins`` cannot run (naming the unknown ones and the choices), or None."""
    unknown = [p for p in plugins if p not in FORCED_PLUGINS]
    if not unknown:
        return None
    return (f"unknown forced plugin(s) {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(FORCED_PLUGINS)}")


class PositionsFile(BaseModel):
    """An uploaded positions table as the submission checked and stored it."""

    model_config = ConfigDict(extra="forbid")
    key: str = Field(description="Where it is stored.")
    filename: str | None = Field(description="The client's file name.")
    format: Literal["csv", "fits", "votable", "parquet"]
    rows: int = Field(ge=1, le=MAX_POSITIONS)
    columns: list[str] = Field(description="Its columns: coordinates and tags, in order.")
    size: int = Field(description="Bytes.")
    sha256: str


class ForcedJobParameters(BaseModel):
    """What a forced job measures; ``job_id`` is the detect job whose calexp it uses."""

    model_config = ConfigDict(extra="forbid")
    positions: list[dict[str, Any]] | None = Field(
        None, min_length=1, max_length=MAX_POSITIONS,
        description='[{"ra", "dec", …tags}] or [{"x", "y", …tags}], as for POST /v1/forced; '
                    "or upload a table as the multipart part 'positions'.")
    positions_file: PositionsFile | None = Field(
        None, description="Filled in from the uploaded 'positions' table.")
    plugins: list[str] = Field(default_factory=lambda: list(FORCED_DEFAULT_PLUGINS))
    job_id: str | None = Field(
        None, description="Detect job whose calexp to measure on; default (and recorded at "
                          "submission) the newest completed one.")

    @field_validator("plugins")
    @classmethod
    def _known(cls, plugins: list[str]) -> list[str]:
        message = unknown_plugins_message(plugins)
        if message is not None:
            raise ValueError(message)
        return list(dict.fromkeys(plugins))

    @model_validator(mode="after")
    def _measurable(self) -> ForcedJobParameters:
        if (self.positions is None) == (self.positions_file is None):
            raise ValueError("give positions inline (config.positions) or as an uploaded "
                             "table (multipart part 'positions'), one of the two")
        if self.positions is not None:  # PositionsError is a ValueError
            positions_table(self.positions, measurement_names())
        return self


def inspect_upload(path: Path, filename: str | None) -> InspectedUpload:
    """Check an uploaded positions table: readable, with coordinates, not too long."""
    try:
        format = sniff_format(path, filename)
        info = inspect_positions(path, format, measurement_names())
    except PositionsError as error:
        raise UsageError(str(error), code=error.code) from error
    if info.rows > MAX_POSITIONS:
        raise UsageError(f"the table has {info.rows} rows, more than the {MAX_POSITIONS} a "
                         "forced job measures; split it", code="too_many_positions")
    return InspectedUpload(FILE_FORMATS[format], {
        "format": format, "rows": info.rows, "columns": info.columns})


def prepare(session: Session, owner: str, exposure_id: str | None,
            parameters: dict[str, Any]) -> dict[str, Any]:
    """Record which detect job's calexp the job will measure on."""
    jobs = JobRepository(session)
    given = parameters.get("job_id")
    assert exposure_id is not None
    detect = (jobs.latest_completed(owner, exposure_id, "detect") if given is None
              else jobs.get(owner, given))
    if (detect is None or detect.kind != "detect" or detect.exposure_id != exposure_id
            or detect.phase != JobPhase.COMPLETED
            or SourceRepository(session, owner).artifact(detect.id, "calexp") is None):
        which = "no completed detect job" if given is None else f"no completed detect job {given}"
        raise UsageError(
            f"exposure {exposure_id} has {which} with a stored calexp (PSF), which forced "
            'photometry needs; run one first: POST /v1/jobs {"kind": "detect", …}',
            code="not_characterized")
    return {**parameters, "job_id": detect.id}


def calexp_key(session: Session, job: JobRecord) -> str | None:
    """The storage key of the detect job's calexp: what the child reads."""
    artifact = SourceRepository(session, job.owner).artifact(job.parameters["job_id"], "calexp")
    return None if artifact is None else artifact.storage_key


def compute(context: JobContext, progress: Progress) -> JobOutput:
    """Run in the child process: read the calexp, measure, write the table."""
    from app.engine.config import ForcedConfig
    from app.engine.forced import positions_kind, run_forced
    from app.io.catalogs import FORMATS, catalog_bytes
    from app.io.fits_exposure import read_exposure
    from app.jobs.detect import column_descriptions

    params = ForcedJobParameters.model_validate(context.parameters)
    if context.exposure_key is None:
        raise UsageError(f"the calexp of detect job {params.job_id} is gone (job deleted?)",
                         code="not_characterized")
    progress(0.0, "reading calexp")
    store = open_store(context.storage_url)
    try:
        exposure = read_exposure(store.path(context.exposure_key))
        if params.positions_file is not None:
            progress(0.02, "reading positions")
            file = params.positions_file
            table = read_positions(store.path(file.key), file.format)
        else:
            assert params.positions is not None
            table = positions_table(params.positions, measurement_names())
        result = run_forced(exposure, table, ForcedConfig(plugins=params.plugins),
                            lambda f, step: progress(0.05 + 0.85 * f, step))
    except PositionsError as error:
        raise UsageError(str(error), code=error.code) from error
    except ValueError as error:
        raise unusable_input(error) from error
    progress(0.9, "writing results")
    key = f"{context.artifact_prefix}/forced.fits"
    size = store.put_bytes(key, catalog_bytes(result, "fits"))
    assert context.exposure_id is not None
    tags = [c for c in table.colnames if c not in positions_kind(table)[:2]]
    rows = forced_rows(result, tags, np.arange(len(result)),
                       np.full(len(result), context.exposure_id, dtype=object))
    summary: dict[str, Any] = {
        "n_positions": len(result),
        "detect_job_id": params.job_id,
        "columns": column_descriptions(result),
        "flags": flag_names(result),
    }
    if "base_PsfFlux_flag" in result.colnames:
        summary["n_psf_flux_flagged"] = int(result["base_PsfFlux_flag"].sum())
    return JobOutput(summary=summary, forced_rows=rows,
                     artifacts=[Artifact("forced", key, FORMATS["fits"][0], size)])


def finalize(session: Session, job: JobRecord, output: JobOutput) -> None:
    """Replace the job's rows and artifacts with this attempt's."""
    SourceRepository(session, job.owner).replace(
        job.id, [], [], [(a.name, a.key, a.media_type, a.size) for a in output.artifacts])
    assert output.forced_rows is not None
    ForcedSourceRepository(session, job.owner).replace(job.id, output.forced_rows)


FORCED = register_kind(JobKind(
    name="forced", parameters=ForcedJobParameters, compute=compute, finalize=finalize,
    prepare=prepare, input_key=calexp_key,
    upload=UploadSpec(part="positions", parameter="positions_file", inspect=inspect_upload)))
