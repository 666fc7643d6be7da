"""The ``forced`` job: forced photometry at many positions, on one exposure or on every
stored exposure that covers each position.

For requests above the synchronous limit. The positions come inline in the parameters, or
as an uploaded table (the ``positions`` part of a multipart ``POST /v1/jobs``), checked at
submission and stored beside the job; ``random`` and ``match`` mean what they mean for
``POST /v1/forced``, and the child runs the same `measure_request`.

At submission the job is tied to the detect jobs whose calexps (PSF, aperture corrections)
it measures on, so a later detect job never changes what it measures:

- with an ``exposure_id``: that exposure's detect job (given, or the newest completed one);
- without one: every stored exposure whose sky bounds overlap the positions' (through the
  index on the bounds) and that has a completed detect job; the child keeps, exposure by
  exposure, the positions its WCS puts on its pixels, and adds the exposure's id, visit,
  detector, band and MJD to each row. Overlapping exposures without a completed detect job
  have no PSF to measure with: they are listed with the reason in ``skipped_exposures``
  (run a detect job on them and submit again), never characterized behind the client's back.

The result table is the ``forced`` artifact (FITS); its rows go to ``forced_sources``
(typed core columns, the client's tags, flags as bits) for filtered, paged queries, in the
transaction that completes the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from astropy.table import Column, Table, vstack
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.orm import Session

from app.db.exposures import ExposureRepository
from app.db.forced_sources import ForcedSourceRepository
from app.db.models import ExposureRecord, JobRecord
from app.db.sources import SourceRepository
from app.engine.config import FORCED_DEFAULT_PLUGINS, FORCED_PLUGINS
from app.engine.forced import positions_kind
from app.engine.forced_request import Detections, RequestError, measure_request, on_image
from app.io.positions import SKY, PositionsError, coordinate_names, positions_table
from app.io.positions_file import (
    FILE_FORMATS,
    inspect_positions,
    read_positions,
    sky_box,
    sniff_format,
)
from app.jobs.calexp_jobs import calexp_job
from app.jobs.errors import NotReadyError, UsageError, unusable_input
from app.jobs.forced_options import ForcedOptions, reserved_names
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
from app.storage.blobs import BlobStore, open_store

MAX_POSITIONS = 1_000_000
EXPOSURE_COLUMNS = ("exposure_id", "visit", "detector", "band", "mjd")
"""Columns a row measured in covering mode (no ``exposure_id`` given) carries."""


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
    sky_box: dict[str, float] | None = Field(
        description="RA/Dec bounds of the positions (ra_min > ra_max wraps through 0°).")
    size: int = Field(description="Bytes.")
    sha256: str


class MeasuredExposure(BaseModel):
    """An exposure the job measures on, with the detect job whose calexp it uses."""

    exposure_id: str
    job_id: str
    visit: int | None = None
    detector: int | None = None
    band: str | None = None
    mjd: float | None = None


class ForcedJobParameters(ForcedOptions):
    """What a forced job measures. ``exposures`` and ``skipped_exposures`` are recorded at
    submission (whatever a client sends there is replaced)."""

    positions: list[dict[str, Any]] | None = Field(
        None, min_length=1, max_length=MAX_POSITIONS,
        description='[{"ra", "dec", …tags}] or [{"x", "y", …tags}], as for POST /v1/forced; '
                    "or upload a table as the multipart part 'positions'.")
    positions_file: PositionsFile | None = Field(
        None, description="Filled in from the uploaded 'positions' table.")
    plugins: list[str] = Field(default_factory=lambda: list(FORCED_DEFAULT_PLUGINS))
    exposures: list[MeasuredExposure] = Field(
        default_factory=list, description="Recorded at submission: what the job measures on.")
    skipped_exposures: list[dict[str, str]] = Field(
        default_factory=list,
        description="Recorded at submission: covering exposures left out, and why.")

    @field_validator("plugins")
    @classmethod
    def _known(cls, plugins: list[str]) -> list[str]:
        message = unknown_plugins_message(plugins)
        if message is not None:
            raise ValueError(message)
        return list(dict.fromkeys(plugins))

    @model_validator(mode="after")
    def _measurable(self) -> ForcedJobParameters:
        if self.positions is not None and self.positions_file is not None:
            raise ValueError("give positions inline (config.positions) or as an uploaded "
                             "table (multipart part 'positions'), not both")
        n = (len(self.positions or ()) + (self.positions_file.rows if self.positions_file
                                          else 0) + (self.random.n if self.random else 0))
        if n == 0:
            raise ValueError("give positions (inline, or an uploaded table), or ask for "
                             "random ones")
        if n > MAX_POSITIONS:
            raise ValueError(f"{n} positions are more than the {MAX_POSITIONS} a job measures")
        if self.positions is not None:  # PositionsError is a ValueError
            positions_table(self.positions, reserved_names())
        return self

    @property
    def sky(self) -> bool:
        """Whether the positions are RA/Dec."""
        if self.positions_file is not None:
            return self.positions_file.sky_box is not None
        return self.positions is not None and coordinate_names(self.positions) == SKY

    def column_names(self) -> list[str]:
        if self.positions_file is not None:
            return self.positions_file.columns
        return list(dict.fromkeys(k for row in self.positions or () for k in row))


def inspect_upload(path: Path, filename: str | None) -> InspectedUpload:
    """Check an uploaded positions table: readable, with coordinates, not too long."""
    try:
        format = sniff_format(path, filename)
        info = inspect_positions(path, format, reserved_names())
    except PositionsError as error:
        raise UsageError(str(error), code=error.code) from error
    if info.rows > MAX_POSITIONS:
        raise UsageError(f"the table has {info.rows} rows, more than the {MAX_POSITIONS} a "
                         "forced job measures; split it", code="too_many_positions")
    return InspectedUpload(FILE_FORMATS[format], {
        "format": format, "rows": info.rows, "columns": info.columns, "sky_box": info.sky_box})


def prepare(session: Session, owner: str, exposure_id: str | None,
            parameters: dict[str, Any]) -> dict[str, Any]:
    """Record which exposures, and which detect job's calexp of each, the job measures on."""
    params = ForcedJobParameters.model_validate(parameters)
    if exposure_id is not None:
        detect, _ = calexp_job(session, owner, exposure_id, params.job_id)
        record = ExposureRepository(session).get(owner, exposure_id)
        assert record is not None
        return {**parameters, "job_id": detect.id, "skipped_exposures": [],
                "exposures": [_measured(record, detect.id)]}
    measured, skipped = _covering(session, owner, params)
    return {**parameters, "exposures": measured, "skipped_exposures": skipped}


def _covering(session: Session, owner: str, params: ForcedJobParameters
              ) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The characterized exposures whose bounds overlap the positions, and the others."""
    if params.job_id is not None:
        raise UsageError("config.job_id names a detect job of one exposure: give that "
                         "exposure_id too, or leave job_id out to measure on every exposure "
                         "covering the positions", code="needs_exposure")
    if params.random is not None:
        raise UsageError("config.random draws blank-sky positions away from one exposure's "
                         "detections: give its exposure_id, or leave random out to measure "
                         "the positions on every exposure covering them",
                         code="needs_exposure")
    if not params.sky:
        raise UsageError("x and y are pixels of one exposure: give its exposure_id, or give "
                         "the positions as ra and dec to measure them on every exposure "
                         "covering them", code="needs_exposure")
    clash = sorted(set(params.column_names()) & set(EXPOSURE_COLUMNS))
    if clash:
        raise UsageError(f"column(s) {', '.join(map(repr, clash))} of the positions would "
                         "collide with the exposure columns every row of a job without an "
                         "exposure_id gets; rename them", code="reserved_column")
    if params.positions_file is not None:
        assert params.positions_file.sky_box is not None
        box = params.positions_file.sky_box
    else:
        assert params.positions is not None
        box = sky_box(np.array([p["ra"] for p in params.positions], float),
                      np.array([p["dec"] for p in params.positions], float))
    measured, skipped = [], []
    for record in ExposureRepository(session).overlapping(owner, box):
        try:
            detect, _ = calexp_job(session, owner, record.id)
        except NotReadyError:
            skipped.append({"exposure_id": record.id, "reason": "no completed detect job "
                            "(no PSF); run one and submit again to include it"})
        else:
            measured.append(_measured(record, detect.id))
    if not measured:
        raise NotReadyError(
            "no stored exposure with a completed detect job overlaps these positions"
            + (f" ({len(skipped)} overlapping exposure(s) have no detect job yet: run one)"
               if skipped else "; upload one that covers them: POST /v1/exposures"),
            code="no_covering_exposure")
    return measured, skipped


def _measured(record: ExposureRecord, detect_job_id: str) -> dict[str, Any]:
    meta = record.meta
    return MeasuredExposure(exposure_id=record.id, job_id=detect_job_id,
                            visit=meta.get("visit"), detector=meta.get("detector"),
                            band=meta.get("band"), mjd=meta.get("mjd")).model_dump()


def inputs(session: Session, job: JobRecord) -> dict[str, Any]:
    """The storage keys of each detect job's calexp and catalog (None if it is gone)."""
    sources = SourceRepository(session, job.owner)
    keys = {}
    for entry in job.parameters.get("exposures", []):
        found = {name: sources.artifact(entry["job_id"], name) for name in ("calexp", "catalog")}
        keys[entry["exposure_id"]] = {name: None if a is None else a.storage_key
                                      for name, a in found.items()}
    return {"keys": keys}


def compute(context: JobContext, progress: Progress) -> JobOutput:
    """Run in the child process: read the positions, measure them on each exposure's
    calexp, write the table, and hand its rows to `finalize`."""
    from app.io.catalogs import FORMATS, catalog_bytes
    from app.jobs.detect import column_descriptions

    params = ForcedJobParameters.model_validate(context.parameters)
    store = open_store(context.storage_url)
    progress(0.0, "reading positions")
    try:
        table: Table | None = None  # random positions only
        if params.positions_file is not None:
            file = params.positions_file
            table = read_positions(store.path(file.key), file.format)
        elif params.positions is not None:
            table = positions_table(params.positions, reserved_names())
        parts = _measure_all(context, params, table, store,
                             lambda f, step: progress(0.02 + 0.85 * f, step))
    except (PositionsError, RequestError) as error:
        raise UsageError(str(error), code=error.code) from error
    except ValueError as error:
        raise unusable_input(error) from error
    progress(0.9, "writing results")
    result, positions = _combine(parts, covering=context.exposure_id is None)
    key = f"{context.artifact_prefix}/forced.fits"
    size = store.put_bytes(key, catalog_bytes(result, "fits"))
    tags = [] if table is None else [c for c in table.colnames
                                      if c not in positions_kind(table)[:2]]
    exposure_ids = (np.asarray(result["exposure_id"], dtype=object)
                    if context.exposure_id is None
                    else np.full(len(result), context.exposure_id, dtype=object))
    rows = forced_rows(result, tags, positions, exposure_ids)
    summary: dict[str, Any] = {
        "n_positions": (0 if table is None else len(table))
        + (params.random.n if params.random else 0),
        "n_rows": len(result),
        "exposures": [{"exposure_id": e, "detect_job_id": j, "n_rows": n}
                      for e, j, n in ((p.exposure_id, p.detect_job_id, len(p.result))
                                      for p in parts)],
        "skipped_exposures": params.skipped_exposures + [
            {"exposure_id": e, "reason": r} for e, r in _gone(context, params)],
        "columns": column_descriptions(result),
        "flags": flag_names(result),
    }
    if context.exposure_id is not None:
        summary["detect_job_id"] = params.job_id
    if "base_PsfFlux_flag" in result.colnames:
        summary["n_psf_flux_flagged"] = int(result["base_PsfFlux_flag"].sum())
    return JobOutput(summary=summary, forced_rows=rows,
                     artifacts=[Artifact("forced", key, FORMATS["fits"][0], size)])


@dataclass(frozen=True)
class _Part:
    """The rows measured on one exposure, and the input row of each."""

    exposure_id: str
    detect_job_id: str
    result: Table
    positions: np.ndarray


def _gone(context: JobContext, params: ForcedJobParameters) -> list[tuple[str, str]]:
    """Exposures whose detect job's calexp disappeared after submission."""
    keys = context.inputs["keys"]
    return [(e.exposure_id, f"the calexp of detect job {e.job_id} is gone (job deleted?)")
            for e in params.exposures if keys[e.exposure_id]["calexp"] is None]


def _measure_all(context: JobContext, params: ForcedJobParameters, table: Table | None,
                 store: BlobStore, progress: Progress) -> list[_Part]:
    """`measure_request` on each exposure: all positions on the one given, or on each
    covering exposure the positions its pixels hold."""
    from app.engine.config import ForcedConfig
    from app.io.catalogs import read_catalog
    from app.io.fits_exposure import read_exposure

    config = ForcedConfig(plugins=params.plugins)
    covering = context.exposure_id is None
    gone = {e for e, _ in _gone(context, params)}
    if gone and not covering:
        raise UsageError(_gone(context, params)[0][1], code="not_characterized")
    parts = []
    todo = [e for e in params.exposures if e.exposure_id not in gone]
    for i, entry in enumerate(todo):
        progress(i / len(todo), f"exposure {i + 1} of {len(todo)}")
        keys = context.inputs["keys"][entry.exposure_id]
        exposure = read_exposure(store.path(keys["calexp"]))
        subset = table
        if covering:
            assert table is not None  # random positions need an exposure_id
            positions = np.nonzero(on_image(exposure, table))[0]
            if not len(positions):
                continue
            subset = table[positions]

        def detections(catalog: str | None = keys["catalog"]) -> Detections:
            if catalog is None:
                raise UsageError("match needs the detection catalog, which is gone",
                                 code="not_characterized")
            return Detections.from_catalog(read_catalog(store.path(catalog), "fits"))

        result = measure_request(
            exposure, subset, config,
            random=None if params.random is None else params.random.to_spec(),
            match_radius_px=params.match_radius_px,
            detections=detections if params.match else None)
        if covering:
            for name in EXPOSURE_COLUMNS:
                value = getattr(entry, name)
                result[name] = _exposure_column(name, value, len(result))
        else:  # random rows follow the client's
            positions = np.arange(len(result))
        parts.append(_Part(entry.exposure_id, entry.job_id, result, positions))
    return parts


def _exposure_column(name: str, value: Any, n: int) -> Column:
    descriptions = {"exposure_id": "Exposure the row was measured on.",
                    "visit": "Visit of the exposure (-1 if unknown).",
                    "detector": "Detector of the exposure (-1 if unknown).",
                    "band": "Band of the exposure.",
                    "mjd": "Modified Julian date of the exposure."}
    if name in ("visit", "detector"):
        data = np.full(n, -1 if value is None else value, dtype=np.int64)
    elif name == "mjd":
        data = np.full(n, np.nan if value is None else value, dtype=float)
    else:
        data = np.full(n, "" if value is None else str(value))
    return Column(data, name=name, unit="d" if name == "mjd" else None,
                  description=descriptions[name])


def _combine(parts: list[_Part], covering: bool) -> tuple[Table, np.ndarray]:
    """One table: a single exposure's as it is; covering exposures' rows ordered by input
    row, then MJD (each position's measurements together, in time order)."""
    if not covering:
        return parts[0].result, parts[0].positions
    if not parts:
        raise UsageError("no position falls on the pixels of a covering exposure",
                         code="no_covering_exposure")
    result = vstack([p.result for p in parts], join_type="exact", metadata_conflicts="silent")
    positions = np.concatenate([p.positions for p in parts])
    order = np.lexsort((np.asarray(result["mjd"], float), positions))
    return result[order], positions[order]


def finalize(session: Session, job: JobRecord, output: JobOutput) -> None:
    """Replace the job's rows and artifacts with this attempt's."""
    SourceRepository(session, job.owner).replace(
        job.id, [], [], [(a.name, a.key, a.media_type, a.size) for a in output.artifacts])
    assert output.forced_rows is not None
    ForcedSourceRepository(session, job.owner).replace(job.id, output.forced_rows)


FORCED = register_kind(JobKind(
    name="forced", parameters=ForcedJobParameters, compute=compute, finalize=finalize,
    prepare=prepare, inputs=inputs, exposure="optional",
    upload=UploadSpec(part="positions", parameter="positions_file", inspect=inspect_upload)))
