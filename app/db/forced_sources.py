"""Rows of forced jobs: bulk, idempotent replacement and filtered, cursor-paged queries.

A forced job may hold 10⁶ rows and more, so they arrive column-wise (`ForcedRows`, numpy
arrays straight from the result table) and go in with Core ``insert()`` executemany in
chunks, never as ORM objects. Flags are one bit mask per row; the job summary's ``flags``
list names the bits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, delete, insert, select
from sqlalchemy.orm import Session

from app.db.filters import SourceFilter, in_box, in_cone, snr_between
from app.db.models import ForcedSourceRecord

logger = logging.getLogger(__name__)

CHUNK_ROWS = 10_000
FLOAT_COLUMNS = ("coord_ra", "coord_dec", "coord_cx", "coord_cy", "coord_cz", "x", "y",
                 "psf_inst_flux", "psf_inst_flux_err", "psf_flux", "psf_flux_err", "psf_snr")
MAX_FLAGS = 63
"""Flags a row's bit mask holds (a signed 64-bit integer on both back ends)."""


@dataclass
class ForcedRows:
    """A forced job's rows, column by column: what `ForcedSourceRepository.replace` stores.

    ``core`` holds the typed columns of ``forced_sources`` (``position``, ``exposure_id``,
    ``position_kind``, ``client_id``, the floats in `FLOAT_COLUMNS` with NaN for missing,
    ``flags``); ``tags`` the client's other columns as JSON values.
    """

    core: dict[str, np.ndarray]
    tags: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.core["position"])


class ForcedSourceRepository:
    """Queries on one owner's ``forced_sources``, job by job."""

    def __init__(self, session: Session, owner: str) -> None:
        self._session = session
        self._owner = owner

    def replace(self, job_id: str, rows: ForcedRows) -> None:
        """Delete the job's rows and insert these, in the caller's transaction, so a re-run
        replaces its rows and never duplicates them."""
        started = time.monotonic()
        table = ForcedSourceRecord.__table__
        self._session.execute(delete(ForcedSourceRecord).where(
            ForcedSourceRecord.job_id == job_id))
        for start in range(0, len(rows), CHUNK_ROWS):
            chunk = self._chunk(job_id, rows, slice(start, start + CHUNK_ROWS))
            self._session.execute(insert(table), chunk)
        logger.info("stored %d forced rows in %.1f s", len(rows), time.monotonic() - started,
                    extra={"job_id": job_id})

    def _chunk(self, job_id: str, rows: ForcedRows, sl: slice) -> list[dict[str, Any]]:
        columns: dict[str, list[Any]] = {}
        for name, values in rows.core.items():
            part = values[sl]
            if name in FLOAT_COLUMNS:
                objects = part.astype(object)
                objects[~np.isfinite(part)] = None  # NULL, never NaN: NaN compares high on PG
                columns[name] = objects.tolist()
            else:
                columns[name] = part.tolist()
        n = len(columns["position"])
        tags = {name: values[sl] for name, values in rows.tags.items()}
        tag_rows: list[dict[str, Any] | None] = (
            [dict(zip(tags, values, strict=True)) for values in zip(*tags.values(), strict=True)]
            if tags else [None] * n)
        names = list(columns)
        start = sl.start
        return [
            {"job_id": job_id, "owner": self._owner, "row": start + i, "tags": tag_rows[i],
             **dict(zip(names, values, strict=True))}
            for i, values in enumerate(zip(*columns.values(), strict=True))
        ]

    def page(self, job_id: str, where: SourceFilter, flag_bits: Mapping[str, int], *,
             after: int | None, limit: int) -> list[int]:
        """Row numbers in order after the cursor ``after``."""
        r = ForcedSourceRecord
        query = select(r.row).where(*self._conditions(job_id, where, flag_bits))
        if after is not None:
            query = query.where(r.row > after)
        return list(self._session.scalars(query.order_by(r.row).limit(limit)))

    def rows(self, job_id: str, where: SourceFilter, flag_bits: Mapping[str, int]) -> list[int]:
        """Every matching row number, in order."""
        r = ForcedSourceRecord
        query = select(r.row).where(*self._conditions(job_id, where, flag_bits))
        return list(self._session.scalars(query.order_by(r.row)))

    def _conditions(self, job_id: str, where: SourceFilter, flag_bits: Mapping[str, int]
                    ) -> list[ColumnElement[bool]]:
        r = ForcedSourceRecord
        out = [r.job_id == job_id, r.owner == self._owner]
        out += snr_between(r.psf_inst_flux, r.psf_inst_flux_err, where.min_psf_snr,
                           where.max_psf_snr)
        out += in_box(r.x, r.y, where.box)
        if where.cone is not None:
            out.append(in_cone(r.coord_cx, r.coord_cy, r.coord_cz, r.coord_dec, where.cone))
        if where.position_kind is not None:
            out.append(r.position_kind == where.position_kind)
        if where.exposure_id is not None:
            out.append(r.exposure_id == where.exposure_id)
        for flags, is_set in ((where.flags_set, True), (where.flags_unset, False)):
            for flag in flags:
                bit = r.flags.op("&")(flag_bits[flag])
                out.append(bit != 0 if is_set else bit == 0)
        return out


def flag_bits(names: Sequence[str]) -> dict[str, int]:
    """Flag name → its bit in ``forced_sources.flags``."""
    return {name: 1 << i for i, name in enumerate(names[:MAX_FLAGS])}
