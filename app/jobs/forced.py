"""The ``forced`` job: forced photometry at many positions, on one exposure or on every
stored exposure that covers each position.

For requests above the synchronous limit. The positions come inline in the parameters, or
as an uploaded table (the ``positions`` part of a multipart ``POST /v1/jobs``), checked at
submission and stored beside the job; ``random`` and ``match`` mean what they mean for
``POST /v1/forced``, and the child runs the same `measure_request`.

At submission the job is tied to the exposures it measures on (`app.jobs.forced_exposures`),
so a later detect job never changes what it measures:

- with an ``exposure_id``: that exposure's detect job (given, or the newest completed one);
- without one ("covering mode"): every stored exposure whose sky bounds overlap the
  positions, optionally only in one ``band`` and between MJDs ``start`` and ``end`` (a light
  curve). Each is measured on its newest detect job's calexp, or, without a detect job,
  characterized by the child itself (background, PSF, aperture corrections) and measured on
  that: a row's ``characterized_by`` says which. The child keeps, exposure by exposure, the
  positions its WCS puts on its pixels, and adds the exposure's id, visit, detector, band and
  MJD to each row. Random positions need one exposure's detections, so covering mode refuses
  them; with ``match`` it measures only exposures with a detect job (the others are listed in
  ``skipped_exposures`` with the reason). An exposure that cannot be characterized (too few
  stars for a PSF) is skipped the same way, and does not fail the job.

The result table is the ``forced`` artifact (FITS); its rows go to ``forced_sources``
(typed core columns, the client's tags, flags as bits) for filtered, paged queries, in the
transaction that completes the job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from astropy.table import Table, vstack
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.orm import Session

from app.db.exposures import ExposureRepository, ExposureWindow
from app.db.forced_sources import ForcedSourceRepository
from app.db.models import JobRecord
from app.db.sources import SourceRepository
from app.engine.characterize import CharacterizeError
from app.engine.columns import ColumnSet
from app.engine.config import FORCED_DEFAULT_PLUGINS, CharacterizeConfig, ForcedConfig
from app.engine.exposure import Exposure
from app.engine.forced import positions_kind
from app.engine.forced_request import Detections, RequestError, measure_request, on_image
from app.engine.measure.slots import from_meta
from app.io.positions import SKY, PositionsError, coordinate_names, positions_columns
from app.io.positions_file import (
    FILE_FORMATS,
    inspect_positions,
    read_positions,
    sky_box,
    sniff_format,
)
from app.jobs.calexp_jobs import calexp_job
from app.jobs.errors import UsageError, unusable_input
from app.jobs.forced_exposures import (
    EXPOSURE_COLUMNS,
    MeasuredExposure,
    covering_exposures,
    exposure_columns,
    measured,
)
from app.jobs.forced_options import ForcedOptions, OptionsError, forced_config, reserved_names
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
log = logging.getLogger(__name__)


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
    band: str | None = Field(
        None, description="Without an exposure_id: only covering exposures in this band.")
    start: float | None = Field(
        None, description="Without an exposure_id: only covering exposures from this MJD on.")
    end: float | None = Field(
        None, description="Without an exposure_id: only covering exposures up to this MJD.")
    characterize: CharacterizeConfig | None = Field(
        None, description="Without an exposure_id: how a covering exposure without a detect "
                          "job is characterized (background, PSF, aperture corrections), with "
                          "the names a detect job's config.characterize takes; default its "
                          "defaults.")
    exposures: list[MeasuredExposure] = Field(
        default_factory=list, description="Recorded at submission: what the job measures on.")
    skipped_exposures: list[dict[str, str]] = Field(
        default_factory=list,
        description="Recorded at submission: covering exposures left out, and why.")

    @field_validator("plugins")
    @classmethod
    def _once_each(cls, plugins: list[str]) -> list[str]:
        return list(dict.fromkeys(plugins))

    def config(self) -> ForcedConfig:
        """The engine's config for these plugins and radii."""
        return forced_config(self.plugins, self.apertureRadii)

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
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError(f"start (MJD {self.start}) is after end (MJD {self.end})")
        if self.positions is not None:  # PositionsError is a ValueError
            positions_columns(self.positions, reserved_names())
        return self

    @property
    def sky(self) -> bool:
        """Whether the positions are RA/Dec."""
        if self.positions_file is not None:
            return self.positions_file.sky_box is not None
        return self.positions is not None and coordinate_names(self.positions) == SKY

    @property
    def window(self) -> ExposureWindow:
        """Which covering exposures to measure on."""
        return ExposureWindow(self.band, self.start, self.end)

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


def check_options(exposure_id: str | None, parameters: dict[str, Any]) -> None:
    """Refuse (`UsageError`) what needs neither the database nor the pixels to see: unknown
    plugins, radii without apertures, covering-mode options beside an exposure_id."""
    try:
        forced_config(parameters.get("plugins"), parameters.get("apertureRadii"))
    except OptionsError as error:
        raise UsageError(str(error), code=error.code) from error
    given = [name for name in ("band", "start", "end", "characterize")
             if parameters.get(name) is not None]
    if exposure_id is not None and given:
        verb, them = ("applies", "it") if len(given) == 1 else ("apply", "them")
        raise UsageError(f"config.{', config.'.join(given)} {verb} to the exposures "
                         "covering the positions, measured without an exposure_id; with "
                         f"one, its detect job's calexp is measured: leave {them} out, or "
                         "leave out the exposure_id", code="needs_no_exposure")


def prepare(session: Session, owner: str, exposure_id: str | None,
            parameters: dict[str, Any]) -> dict[str, Any]:
    """Record which exposures, and which detect job's calexp of each, the job measures on."""
    check_options(exposure_id, parameters)
    params = ForcedJobParameters.model_validate(parameters)
    if exposure_id is not None:
        detect = calexp_job(session, owner, exposure_id, params.job_id)
        record = ExposureRepository(session).get(owner, exposure_id)
        assert record is not None
        chosen, skipped = [measured(record, detect.job_id)], []
        parameters = {**parameters, "job_id": detect.job_id}
    else:
        chosen, skipped = _covering(session, owner, params)
    return {**parameters, "exposures": [e.model_dump() for e in chosen],
            "skipped_exposures": skipped}


def _covering(session: Session, owner: str, params: ForcedJobParameters
              ) -> tuple[list[MeasuredExposure], list[dict[str, str]]]:
    """Check the positions suit covering mode; the exposures they fall on, and the others."""
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
    return covering_exposures(session, owner, box, params.window, params.match)


def inputs(session: Session, job: JobRecord) -> dict[str, Any]:
    """The storage keys the child reads (None where a file is gone): each detect job's
    calexp and catalog, or the exposure itself where the child characterizes it."""
    sources = SourceRepository(session, job.owner)
    exposures = ExposureRepository(session)
    keys: dict[str, dict[str, str | None]] = {}
    for entry in ForcedJobParameters.model_validate(job.parameters).exposures:
        if entry.job_id is None:
            keys[entry.exposure_id] = {"exposure": exposures.storage_key(entry.exposure_id)}
            continue
        found = {name: sources.artifact(entry.job_id, name) for name in ("calexp", "catalog")}
        keys[entry.exposure_id] = {name: None if a is None else a.storage_key
                                   for name, a in found.items()}
    return {"keys": keys}


def compute(context: JobContext, progress: Progress) -> JobOutput:
    """Run in the child process: read the positions, measure them on each exposure's
    calexp (or on the exposure characterized here), write the table, and hand its rows to
    `finalize`."""
    from app.io.catalogs import FORMATS, catalog_bytes
    from app.jobs.detect import column_descriptions

    params = ForcedJobParameters.model_validate(context.parameters)
    store = open_store(context.storage_url)
    progress(0.0, "reading positions")
    try:
        table: ColumnSet | None = None  # random positions only
        if params.positions_file is not None:
            file = params.positions_file
            table = read_positions(store.path(file.key), file.format)
        elif params.positions is not None:
            table = positions_columns(params.positions, reserved_names())
        parts, skipped = _measure_all(context, params, table, store,
                                      lambda f, step: progress(0.02 + 0.85 * f, step))
    except (PositionsError, RequestError) as error:
        raise UsageError(str(error), code=error.code) from error
    except ValueError as error:
        raise unusable_input(error) from error
    if not parts:
        raise UsageError("no position falls on the pixels of a covering exposure" + "".join(
            f"; {e} left out: {r}" for e, r in skipped), code="no_covering_exposure")
    progress(0.9, "writing results")
    result, positions = _combine(parts, covering=context.exposure_id is None)
    key = f"{context.artifact_prefix}/forced.fits"
    size = store.put_bytes(key, catalog_bytes(result, "fits"))
    tags = [] if table is None else [c for c in table.names
                                      if c not in positions_kind(table.names)[:2]]
    exposure_ids = (np.asarray(result["exposure_id"], dtype=object)
                    if context.exposure_id is None
                    else np.full(len(result), context.exposure_id, dtype=object))
    rows = forced_rows(result, tags, positions, exposure_ids)
    summary: dict[str, Any] = {
        "n_positions": (0 if table is None else len(table))
        + (params.random.n if params.random else 0),
        "n_rows": len(result),
        "exposures": [{"exposure_id": p.exposure.exposure_id, "detect_job_id": p.exposure.job_id,
                       "characterized_by": p.exposure.characterized_by, "n_rows": len(p.result)}
                      for p in parts],
        "skipped_exposures": params.skipped_exposures + [
            {"exposure_id": e, "reason": r} for e, r in skipped],
        "columns": column_descriptions(result),
        "flags": flag_names(result),
        "aliases": from_meta(result.meta),
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

    exposure: MeasuredExposure
    result: Table
    positions: np.ndarray


def _gone(context: JobContext, params: ForcedJobParameters) -> list[tuple[str, str]]:
    """Exposures whose file (a detect job's calexp, or the exposure) disappeared after
    submission."""
    keys = context.inputs["keys"]
    gone = []
    for entry in params.exposures:
        if entry.job_id is None and keys[entry.exposure_id]["exposure"] is None:
            gone.append((entry.exposure_id, "the exposure is gone (deleted?)"))
        elif entry.job_id is not None and keys[entry.exposure_id]["calexp"] is None:
            gone.append((entry.exposure_id,
                         f"the calexp of detect job {entry.job_id} is gone (job deleted?)"))
    return gone


def _measure_all(context: JobContext, params: ForcedJobParameters, table: ColumnSet | None,
                 store: BlobStore, progress: Progress
                 ) -> tuple[list[_Part], list[tuple[str, str]]]:
    """`measure_request` on each exposure: all positions on the one given, or on each
    covering exposure the positions its pixels hold; and the exposures left out, why."""
    from app.io.catalogs import read_catalog

    config = params.config()
    covering = context.exposure_id is None
    skipped = _gone(context, params)
    if skipped and not covering:
        raise UsageError(skipped[0][1], code="not_characterized")
    gone = {e for e, _ in skipped}
    parts = []
    todo = [e for e in params.exposures if e.exposure_id not in gone]
    for i, entry in enumerate(todo):
        progress(i / len(todo), f"exposure {i + 1} of {len(todo)}")
        keys = context.inputs["keys"][entry.exposure_id]
        try:
            exposure = _measurable(store, entry, keys,
                                   params.characterize or CharacterizeConfig())
        except CharacterizeError as error:
            log.warning("exposure not characterized", extra={
                "job_id": context.job_id, "exposure_id": entry.exposure_id,
                "error": str(error)})
            skipped.append((entry.exposure_id, f"could not be characterized: {error}"))
            continue
        subset = table
        if covering:
            assert table is not None  # random positions need an exposure_id
            positions = np.nonzero(on_image(exposure, table))[0]
            if not len(positions):
                continue
            subset = table.take(positions)

        def detections(catalog: str | None = keys.get("catalog")) -> Detections:
            if catalog is None:
                raise UsageError("match needs the detection catalog, which is gone",
                                 code="not_characterized")
            return Detections.from_catalog(read_catalog(store.path(catalog), "fits"))

        result = measure_request(
            exposure, subset, config,
            random=None if params.random is None else params.random.to_spec(),
            match_radius_px=params.match_radius_px,
            detections=detections if params.match else None).to_table()
        if covering:
            for column in exposure_columns(entry, len(result)):
                result[column.name] = column
        else:  # random rows follow the client's
            positions = np.arange(len(result))
        parts.append(_Part(entry, result, positions))
    return parts, skipped


def _measurable(store: BlobStore, entry: MeasuredExposure, keys: dict[str, str | None],
                characterize: CharacterizeConfig) -> Exposure:
    """The exposure to measure on: its detect job's calexp, or characterized here with
    ``characterize`` (raises `CharacterizeError` when it cannot be)."""
    from app.engine.pipeline import characterized
    from app.io.fits_exposure import read_exposure

    if entry.job_id is not None:
        calexp = keys["calexp"]
        assert calexp is not None
        return read_exposure(store.path(calexp))
    key = keys["exposure"]
    assert key is not None
    return characterized(read_exposure(store.path(key)), characterize)


def _combine(parts: list[_Part], covering: bool) -> tuple[Table, np.ndarray]:
    """One table: a single exposure's as it is; covering exposures' rows ordered by input
    row, then MJD (each position's measurements together, in time order)."""
    if not covering:
        return parts[0].result, parts[0].positions
    result = vstack([p.result for p in parts], join_type="exact", metadata_conflicts="silent")
    result.meta = dict(parts[0].result.meta)  # one config measured them all: one metadata
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
