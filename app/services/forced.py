"""Synchronous forced photometry and random blank-sky positions on a characterized exposure.

The calexp a detect job left (PSF, aperture corrections, DETECTED mask) is what the forced
engine measures on, so every request names an exposure and, optionally, that detect job.
Requests are bounded (``forced_sync_max_positions``): larger ones belong in a job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.table import Column, Table, vstack
from scipy.spatial import cKDTree
from sqlalchemy.orm import Session

from app.db.sources import SourceRepository
from app.engine.config import ForcedConfig
from app.engine.exposure import Exposure
from app.engine.forced import positions_kind, run_forced
from app.engine.psf import SIGMA_TO_FWHM
from app.engine.random_positions import NotEnoughBlankSky, random_positions
from app.io.positions import (
    PositionsError,
    coordinate_column,
    measurement_names,
    positions_table,
)
from app.jobs.forced import unknown_plugins_message
from app.services.calexps import CalexpService
from app.services.errors import InvalidInputError, PayloadTooLargeError

POSITION_KIND = "position_kind"
MATCH_COLUMNS = ("match_id", "match_distance_px", "match_base_PsfFlux_instFlux",
                 "match_base_PsfFlux_instFluxErr")


@dataclass(frozen=True)
class RandomSpec:
    """Blank-sky positions to add: ``n`` of them ≥ ``min_distance_px`` from detections."""

    n: int
    min_distance_px: float = 40.0
    seed: int = 0


@dataclass(frozen=True)
class ForcedQuery:
    """What one synchronous forced request asks for (the API's body, converted)."""

    exposure_id: str
    positions: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    job_id: str | None = None
    plugins: Sequence[str] | None = None
    random: RandomSpec | None = None
    match: bool = False
    match_radius_px: float | None = None


@dataclass(frozen=True)
class BlankSky:
    """Random blank-sky positions (parent-frame pixels and ICRS degrees) and their job."""

    x: np.ndarray
    y: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    job_id: str


class ForcedService:
    """Forced measurements for one owner, on the calexps the calexp service serves."""

    def __init__(self, session: Session, calexps: CalexpService, owner: str,
                 max_positions: int) -> None:
        self._session = session
        self._calexps = calexps
        self._owner = owner
        self._max_positions = max_positions

    def measure(self, query: ForcedQuery) -> Table:
        """The engine's rows for the client's positions, then the random ones, in order."""
        n_random = query.random.n if query.random is not None else 0
        total = len(query.positions) + n_random
        if total > self._max_positions:
            raise PayloadTooLargeError(
                f"{total} positions are more than the {self._max_positions} a synchronous "
                "request measures; split them, or submit a forced job "
                '(POST /v1/jobs {"kind": "forced", …})',
                code="too_many_positions",
                detail={"positions": total, "limit": self._max_positions})
        if total == 0:
            raise InvalidInputError("give at least one position, or ask for random ones",
                                    code="no_positions")
        config = ForcedConfig() if query.plugins is None else _config(query.plugins)
        reserved = measurement_names() | set(MATCH_COLUMNS) | {POSITION_KIND}
        table = _positions(query.positions, reserved) if query.positions else None
        exposure, job = self._calexps.characterized(query.exposure_id, query.job_id)
        if query.random is not None:
            table = _with_random(exposure, table, query.random)
        assert table is not None
        if positions_kind(table)[2] and exposure.wcs is None:
            raise InvalidInputError("the exposure has no WCS; give positions as x and y",
                                    code="no_wcs")
        result = run_forced(exposure, table, config)
        if query.match:
            radius = query.match_radius_px or 2 * psf_fwhm(exposure)
            add_matches(result, _pixels(exposure, table),
                        SourceRepository(self._session, self._owner).leaves(job.id), radius)
        return result

    def blank_sky(self, exposure_id: str, spec: RandomSpec, job_id: str | None = None
                  ) -> BlankSky:
        """Random positions far from the detect job's footprints, inside the good area."""
        exposure, job = self._calexps.characterized(exposure_id, job_id)
        x, y = _draw(exposure, spec)
        ra, dec = (exposure.pixel_to_sky(x, y) if exposure.wcs is not None
                   else (np.full(len(x), np.nan), np.full(len(x), np.nan)))
        return BlankSky(x, y, np.asarray(ra, float), np.asarray(dec, float), job.id)


def _positions(rows: Sequence[Mapping[str, Any]], reserved: set[str]) -> Table:
    try:
        return positions_table(rows, reserved)
    except PositionsError as error:
        raise InvalidInputError(str(error), code=error.code) from error


def _config(plugins: Sequence[str]) -> ForcedConfig:
    message = unknown_plugins_message(plugins)
    if message is not None:
        raise InvalidInputError(message, code="unknown_plugin")
    return ForcedConfig(plugins=list(dict.fromkeys(plugins)))


def psf_fwhm(exposure: Exposure) -> float:
    """PSF FWHM at the image centre, pixels."""
    assert exposure.psf is not None
    return float(exposure.psf.sigma(exposure.width / 2, exposure.height / 2) * SIGMA_TO_FWHM)


def _draw(exposure: Exposure, spec: RandomSpec) -> tuple[np.ndarray, np.ndarray]:
    try:
        return random_positions(exposure, spec.n, min_distance_px=spec.min_distance_px,
                                seed=spec.seed)
    except NotEnoughBlankSky as error:
        raise InvalidInputError(str(error), code="not_enough_blank_sky") from error


def _with_random(exposure: Exposure, table: Table | None, spec: RandomSpec) -> Table:
    """The client's rows tagged "input", then random rows tagged "random" (tags masked)."""
    x, y = _draw(exposure, spec)
    sky = table is not None and positions_kind(table)[2]
    a, b = ("ra", "dec") if sky else ("x", "y")
    va, vb = exposure.pixel_to_sky(x, y) if sky else (x, y)
    extra = Table([coordinate_column(a, va), coordinate_column(b, vb)])
    extra[POSITION_KIND] = "random"
    if table is None:
        combined = extra
    else:
        table = table.copy(copy_data=False)
        table[POSITION_KIND] = "input"
        combined = vstack([table, extra], join_type="outer", metadata_conflicts="silent")
    combined[POSITION_KIND].description = 'Where the position came from: "input" or "random".'
    return combined


def _pixels(exposure: Exposure, table: Table) -> tuple[np.ndarray, np.ndarray]:
    a, b, sky = positions_kind(table)
    va, vb = np.asarray(table[a], float), np.asarray(table[b], float)
    if not sky:
        return va, vb
    x, y = exposure.sky_to_pixel(va, vb)
    return np.asarray(x, float), np.asarray(y, float)


def add_matches(result: Table, xy: tuple[np.ndarray, np.ndarray],
                leaves: Sequence[tuple[int, float, float, float | None, float | None]],
                radius: float) -> None:
    """Add the nearest detected object within ``radius`` pixels (-1 / NaN when none).

    A KD-tree over the detect job's objects (deblend_nChild = 0, blends' parents left out,
    as the tutorial compares forced and detection fluxes object by object).
    """
    n = len(result)
    ids = np.full(n, -1, np.int64)
    dist = np.full(n, np.nan)
    flux = np.full(n, np.nan)
    err = np.full(n, np.nan)
    x, y = xy
    finite = np.isfinite(x) & np.isfinite(y)
    if leaves and finite.any():
        arr = np.array([[np.nan if v is None else v for v in row] for row in leaves], float)
        tree = cKDTree(arr[:, 1:3])
        d, k = tree.query(np.column_stack([x[finite], y[finite]]), distance_upper_bound=radius)
        hit = np.isfinite(d)
        rows = np.nonzero(finite)[0][hit]
        ids[rows] = np.array([leaves[i][0] for i in k[hit]], np.int64)
        dist[rows], flux[rows], err[rows] = d[hit], arr[k[hit], 3], arr[k[hit], 4]
    result["match_id"] = Column(ids, description="id of the nearest detected object, -1 if none.")
    result["match_distance_px"] = Column(dist, unit="pix",
                                         description="Distance to that object, pixels.")
    result["match_base_PsfFlux_instFlux"] = Column(
        flux, unit="ct", description="Its base_PsfFlux_instFlux in the detection catalog.")
    result["match_base_PsfFlux_instFluxErr"] = Column(
        err, unit="ct", description="Its base_PsfFlux_instFluxErr in the detection catalog.")
