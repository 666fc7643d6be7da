"""Reading a completed job's results: a detect job's sources, footprints, mask and catalog,
a forced job's rows.

Both kinds' rows are filtered and paged in the database. A detect job's JSON rows come from
its ``sources`` rows; a forced job's rows are read from its ``forced`` table by the row
numbers the database picked (the table is memory-mapped, so a page costs a page), which
gives JSON pages and files the same columns.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from astropy.table import Table
from sqlalchemy.orm import Session

from app.db.exposures import ExposureRepository
from app.db.filters import DETECT_ONLY, FORCED_ONLY, SourceFilter
from app.db.forced_sources import ForcedSourceRepository, flag_bits
from app.db.jobs import JobRepository
from app.db.models import ArtifactRecord, JobPhase, JobRecord, SourceRecord
from app.db.sources import SourceRepository
from app.engine.footprints import Footprint
from app.engine.measure.slots import resolve
from app.io.catalogs import (
    CatalogFormat,
    catalog_bytes,
    json_rows,
    read_catalog,
    read_fits_rows,
)
from app.jobs.detect import is_flag_column
from app.services.errors import ConflictError, InvalidInputError, NotFoundError
from app.storage import footprints as footprint_store
from app.storage.blobs import BlobStore


@dataclass(frozen=True)
class SourcePage:
    rows: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class SourceDetail:
    source: SourceRecord
    footprint: Footprint | None
    children: list[int]


@dataclass(frozen=True)
class Blob:
    """A stored file to stream back."""

    key: str
    media_type: str
    size: int
    filename: str


def encode_cursor(source_id: int) -> str:
    return str(source_id)


def decode_cursor(cursor: str) -> int:
    try:
        return int(cursor)
    except ValueError as error:
        raise InvalidInputError(
            f"invalid cursor {cursor!r}; pass next_cursor back as is"
        ) from error


ROW_KINDS = ("detect", "forced")
"""Job kinds whose rows ``/sources`` serves."""


class ResultService:
    """Results of one owner's jobs; every read checks the job is COMPLETED and of a kind
    that has such results.

    Wherever a client names columns (``columns``, ``flag``, ``noflag``), a name may be one
    of the job's aliases (``slot_PsfFlux_instFlux``, ``slot_Centroid_flag``, …, listed in
    its summary): it stands for the column it resolves to, and a column asked for by an
    alias comes back under that name.
    """

    def __init__(self, session: Session, store: BlobStore, owner: str) -> None:
        self._session = session
        self._store = store
        self._owner = owner

    def sources_page(
        self,
        job_id: str,
        where: SourceFilter,
        *,
        cursor: str | None,
        limit: int,
        columns: Sequence[str] | None,
    ) -> SourcePage:
        """JSON rows in id (detect) or row (forced) order; ``next_cursor`` is None on the
        last page."""
        after = None if cursor is None else decode_cursor(cursor)
        with self._session.begin():
            job = self._completed(job_id, ROW_KINDS)
            wanted = self._check_columns(job, columns)
            where = self._resolved_flags(job, where)
            if job.kind == "forced":
                numbers = self._forced(job, where).page(
                    job_id, where, self._flag_bits(job), after=after, limit=limit + 1)
                artifact = self._artifact(job_id, "forced")
            else:
                self._check_options(job, where)
                records = SourceRepository(self._session, self._owner).page(
                    job_id, where, after=after, limit=limit + 1)
        if job.kind == "forced":
            more = len(numbers) > limit
            numbers = numbers[:limit]
            table = read_fits_rows(self._store.path(artifact.storage_key),
                                   np.asarray(numbers, dtype=np.int64),
                                   None if wanted is None else list(dict.fromkeys(
                                       wanted.values())))
            return SourcePage(json_rows(selected(table, wanted)),
                              encode_cursor(numbers[-1]) if more else None)
        more = len(records) > limit
        records = records[:limit]
        rows = [
            r.row if wanted is None else {name: r.row.get(column) for name, column in
                                          wanted.items()}
            for r in records
        ]
        return SourcePage(rows, encode_cursor(records[-1].id) if more else None)

    def sources_file(
        self,
        job_id: str,
        where: SourceFilter,
        *,
        columns: Sequence[str] | None,
        format: CatalogFormat,
    ) -> bytes:
        """The selected rows and columns of the job's table, in a catalog format."""
        with self._session.begin():
            job = self._completed(job_id, ROW_KINDS)
            wanted = self._check_columns(job, columns)
            where = self._resolved_flags(job, where)
            if job.kind == "forced":
                numbers = self._forced(job, where).rows(job_id, where,
                                                        self._flag_bits(job))
                artifact = self._artifact(job_id, "forced")
            else:
                self._check_options(job, where)
                ids = SourceRepository(self._session, self._owner).ids(job_id, where)
                artifact = self._artifact(job_id, "catalog")
        path = self._store.path(artifact.storage_key)
        if job.kind == "forced":
            table = read_fits_rows(path, np.asarray(numbers, np.int64),
                                   None if wanted is None else list(dict.fromkeys(
                                       wanted.values())))
            return catalog_bytes(selected(table, wanted), format)
        table = read_catalog(path, "fits")
        table = table[np.isin(np.asarray(table["id"]), np.asarray(ids, dtype=np.int64))]
        return catalog_bytes(selected(table, wanted), format)

    def _forced(self, job: JobRecord, where: SourceFilter) -> ForcedSourceRepository:
        self._check_options(job, where)
        return ForcedSourceRepository(self._session, self._owner)

    @staticmethod
    def _check_options(job: JobRecord, where: SourceFilter) -> None:
        """422 for filters that mean nothing for this kind of job, or name a flag its rows
        do not carry (which would match every row, or none, without a word)."""
        other = where.given(DETECT_ONLY if job.kind == "forced" else FORCED_ONLY)
        if other:
            raise InvalidInputError(
                f"{', '.join(other)} do(es) not apply to a {job.kind} job's rows",
                code="invalid_filter", detail={"options": other})
        known = stored_flags(job)
        unknown = [f for f in (*where.flags_set, *where.flags_unset) if f not in known]
        if unknown:
            raise InvalidInputError(
                f"unknown flag(s) {', '.join(map(repr, unknown))}; this job's rows carry "
                f"{', '.join(known)}", code="unknown_flag", detail={"unknown": unknown})

    @staticmethod
    def _flag_bits(job: JobRecord) -> dict[str, int]:
        """The bit of each flag of a forced job's rows."""
        return flag_bits(stored_flags(job))

    def source(self, job_id: str, source_id: int) -> SourceDetail:
        """One source with its footprint (in the parent frame, as the catalog's x, y; the
        stored archive is in the array frame) and its children's ids."""
        with self._session.begin():
            job = self._completed(job_id)
            exposure = ExposureRepository(self._session).get(self._owner, job.exposure_id or "")
            x0, y0 = (exposure.meta.get("xy0") if exposure is not None else None) or (0, 0)
            sources = SourceRepository(self._session, self._owner)
            record = sources.get(job_id, source_id)
            if record is None:
                raise NotFoundError(
                    f"job {job_id} has no source {source_id}", code="source_not_found"
                )
            children = sources.children(job_id, source_id)
            artifact = self._artifact(job_id, "footprints")
        with self._store.open(artifact.storage_key) as f:
            footprint = footprint_store.read_footprint(f, source_id)
        if footprint is not None and (x0, y0) != (0, 0):
            footprint = footprint.shifted(int(x0), int(y0))
        return SourceDetail(record, footprint, children)

    def footprint_fits(self, job_id: str, source_id: int) -> bytes:
        """The heavy footprint as FITS cutouts."""
        detail = self.source(job_id, source_id)
        if detail.footprint is None or not detail.footprint.is_heavy:
            raise NotFoundError(
                f"source {source_id} of job {job_id} has no heavy footprint",
                code="footprint_not_found",
            )
        job = self._job(job_id)
        planes = (job.summary or {}).get("mask_planes", {})
        return footprint_store.footprint_fits(detail.footprint, source_id, planes)

    def artifact(self, job_id: str, name: str, kind: str = "detect") -> Blob:
        """A stored result file (``catalog``, ``mask``; ``forced`` of a forced job) to stream."""
        with self._session.begin():
            self._completed(job_id, (kind,))
            artifact = self._artifact(job_id, name)
        filename = artifact.storage_key.rsplit("/", 1)[-1]
        return Blob(
            artifact.storage_key, artifact.media_type, artifact.size, f"{job_id}-{filename}"
        )

    def catalog_as(self, job_id: str, format: CatalogFormat, name: str = "catalog",
                   kind: str = "detect") -> bytes:
        """A whole stored FITS table (a detect job's catalog, a forced job's rows), converted."""
        blob = self.artifact(job_id, name, kind)
        return catalog_bytes(read_catalog(self._store.path(blob.key), "fits"), format)

    def stream(self, blob: Blob) -> Iterator[bytes]:
        return self._store.iter_chunks(blob.key)

    def _job(self, job_id: str) -> JobRecord:
        job = JobRepository(self._session).get(self._owner, job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id!r}", code="job_not_found")
        return job

    def _completed(self, job_id: str, kinds: Sequence[str] = ("detect",)) -> JobRecord:
        job = self._job(job_id)
        if job.kind not in kinds:
            what = "sources" if "detect" in kinds else f"{kinds[0]} results"
            raise ConflictError(
                f"job {job_id} is a {job.kind} job; only {' and '.join(kinds)} jobs have "
                f"{what}",
                code="no_sources" if "detect" in kinds else "wrong_job_kind",
            )
        if job.phase != JobPhase.COMPLETED:
            hint = (
                f"it failed: {job.error_message}"
                if job.phase == JobPhase.ERROR
                else f"poll GET /v1/jobs/{job_id} until its phase is COMPLETED"
            )
            raise ConflictError(
                f"job {job_id} is {job.phase.value}; results exist once it is COMPLETED ({hint})",
                code="job_not_completed",
                detail={"phase": job.phase.value},
            )
        return job

    def _artifact(self, job_id: str, name: str) -> ArtifactRecord:
        artifact = SourceRepository(self._session, self._owner).artifact(job_id, name)
        if artifact is None:
            raise NotFoundError(f"job {job_id} has no {name}", code="artifact_not_found")
        return artifact

    @staticmethod
    def _check_columns(job: JobRecord, columns: Sequence[str] | None) -> dict[str, str] | None:
        """The columns to give, each name (a detect job's always with ``id``) with the
        column it resolves to through the job's aliases; None for all."""
        if not columns:
            return None
        known = set(c["name"] for c in (job.summary or {}).get("columns", []))
        aliases = job_aliases(job)
        names = list(dict.fromkeys(["id", *columns] if job.kind == "detect" else columns))
        wanted = {name: resolve(name, aliases) for name in names}
        unknown = [name for name, column in wanted.items() if column not in known]
        if unknown:
            raise InvalidInputError(
                f"unknown column(s) {', '.join(map(repr, unknown))}; the catalog has "
                f"{len(known)} columns and the aliases {', '.join(aliases) or 'none'}, "
                "listed in the job's summary",
                code="unknown_column",
                detail={"unknown": unknown},
            )
        return wanted

    @staticmethod
    def _resolved_flags(job: JobRecord, where: SourceFilter) -> SourceFilter:
        """``where`` with its flag names resolved through the job's aliases
        (``slot_Centroid_flag`` → ``base_SdssCentroid_flag``)."""
        aliases = job_aliases(job)
        if not aliases:
            return where
        return replace(where, flags_set=tuple(resolve(f, aliases) for f in where.flags_set),
                       flags_unset=tuple(resolve(f, aliases) for f in where.flags_unset))


def job_aliases(job: JobRecord) -> dict[str, str]:
    """The aliases of the job's catalog (alias → target), as its summary lists them."""
    return dict((job.summary or {}).get("aliases", {}))


def selected(table: Table, wanted: Mapping[str, str] | None) -> Table:
    """The ``wanted`` columns of ``table`` (all when None), each under the name asked for,
    the table's metadata (its aliases) kept."""
    if wanted is None:
        return table
    return Table([table[column] for column in wanted.values()], names=list(wanted),
                 meta=table.meta, copy=False)


def stored_flags(job: JobRecord) -> list[str]:
    """The flags stored with the job's rows, as its summary lists them. A detect job
    stored before summaries listed them stored its ``…_flag…`` columns only."""
    summary = job.summary or {}
    if "flags" in summary or job.kind == "forced":
        return list(summary.get("flags", []))
    return [c["name"] for c in summary.get("columns", [])
            if is_flag_column(c["name"]) and c["datatype"] == np.dtype(bool).str]
