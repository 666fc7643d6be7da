"""Synchronous forced photometry and random blank-sky positions on a characterized exposure.

The calexp a detect job left (PSF, aperture corrections, DETECTED mask) is what the forced
engine measures on, so every request names an exposure and, optionally, that detect job.
Requests are bounded (``forced_sync_max_positions``): larger ones belong in a job, which
runs the same `measure_request`. A request of a few positions takes well under a
millisecond, so the service opens its own short connection (one indexed query finds the
calexp, which is then in memory) and the API can call it without a hop to a thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from app.db.sources import SourceRepository
from app.engine.columns import ColumnSet
from app.engine.config import FORCED_APERTURE_RADII, ForcedConfig
from app.engine.exposure import Exposure
from app.engine.forced import positions_kind
from app.engine.forced_request import (
    Detections,
    RandomSpec,
    RequestError,
    draw_random,
    measure_request,
    require_blank_sky,
)
from app.engine.random_positions import BlankSkyMap, blank_sky_map
from app.io.positions import PositionsError, positions_columns
from app.jobs.calexp_jobs import DetectCalexp
from app.jobs.errors import UsageError
from app.jobs.forced import check_options
from app.jobs.forced_options import (
    OptionsError,
    RandomPositions,
    forced_config,
    reserved_names,
)
from app.services.calexps import CalexpService
from app.services.errors import InvalidInputError, PayloadTooLargeError, refused
from app.storage.blobs import BlobNotFoundError, BlobStore
from app.storage.exposure_cache import ExposureCache


@dataclass(frozen=True)
class ForcedQuery:
    """What one synchronous forced request asks for (the API's body, converted)."""

    exposure_id: str
    positions: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    job_id: str | None = None
    plugins: Sequence[str] | None = None
    aperture_radii: list[float] | None = None
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


QUICK_POSITIONS = 64
"""Requests of at most this many positions, without random positions or matching, on a
calexp in memory and a local (SQLite) database, take a fraction of a millisecond: less than
a hop to a worker thread costs (`ForcedService.quick`)."""


class ForcedService:
    """Forced measurements for one owner, on the calexps its detect jobs left."""

    def __init__(self, sessions: sessionmaker[Session], store: BlobStore,
                 cache: ExposureCache, owner: str, max_positions: int) -> None:
        self._sessions = sessions
        self._store = store
        self._cache = cache
        self._owner = owner
        self._max_positions = max_positions
        self._engine = sessions.kw["bind"]
        self._local = self._engine.dialect.name == "sqlite"

    @property
    def owner(self) -> str:
        return self._owner

    def quick(self, query: ForcedQuery) -> bool:
        """Whether ``query`` may be measured on the event loop, with others like it
        (`measure_together`): few positions, apertures no larger than the defaults (a
        100-px one costs milliseconds per position), nothing more to draw or read, and a
        database that answers at once."""
        return (self._local and query.random is None and not query.match
                and 0 < len(query.positions) <= QUICK_POSITIONS
                and max(query.aperture_radii or [0.0]) <= max(FORCED_APERTURE_RADII))

    def prepare(self, query: ForcedQuery) -> tuple[ColumnSet | None, ForcedConfig]:
        """The client's positions as columns, and the plugins' config: what can be checked
        before the exposure is looked at (`InvalidInputError`, `PayloadTooLargeError`)."""
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
        try:
            config = forced_config(query.plugins, query.aperture_radii)
        except OptionsError as error:
            raise InvalidInputError(str(error), code=error.code) from error
        return (_positions(query.positions) if query.positions else None), config

    def measure_together(self, exposure_id: str, job_id: str | None, config: ForcedConfig,
                         tables: Sequence[ColumnSet], *, load: bool = True
                         ) -> list[ColumnSet]:
        """Several requests' positions (one kind of coordinates) on one calexp, measured in
        one engine call: each table's rows, its columns then the measurements.

        The engine measures every position on its own, so each table gets the rows it
        would get alone; the calls' fixed cost is paid once.
        """
        exposure, _ = self._characterized(exposure_id, job_id, load)
        a, b, _ = positions_kind(tables[0].names)
        joined = ColumnSet.from_arrays(
            {a: np.concatenate([t[a] for t in tables]), b: np.concatenate([t[b] for t in tables])},
            {a: tables[0].info(a), b: tables[0].info(b)})
        with _refusals_as_422():
            measured = measure_request(exposure, joined, config)
        names = [name for name in measured.names if name not in (a, b)]
        starts = np.cumsum([0, *map(len, tables)])[:-1]
        return [t.joined(measured, names, int(start))
                for t, start in zip(tables, starts, strict=True)]

    def measure(self, query: ForcedQuery) -> ColumnSet:
        """The engine's rows for the client's positions, then the random ones, in order."""
        table, config = self.prepare(query)
        exposure, calexp = self._characterized(query.exposure_id, query.job_id)
        job_id = calexp.job_id

        def detections() -> Detections:
            with self._sessions() as session:
                leaves = SourceRepository(session, self._owner).leaves(job_id)
            arr = np.array([[np.nan if v is None else v for v in row] for row in leaves],
                           float).reshape(-1, 5)
            return Detections(arr[:, 0].astype(np.int64), arr[:, 1], arr[:, 2],
                              arr[:, 3], arr[:, 4])

        with _refusals_as_422():
            return measure_request(exposure, table, config, random=query.random,
                                   blank_sky=(None if query.random is None else
                                              self._blank_sky(calexp, query.random)),
                                   match_radius_px=query.match_radius_px,
                                   detections=detections if query.match else None)

    def blank_sky(self, exposure_id: str, spec: RandomSpec, job_id: str | None = None
                  ) -> BlankSky:
        """Random positions far from the detect job's footprints, inside the good area."""
        exposure, calexp = self._characterized(exposure_id, job_id)
        with _refusals_as_422():
            x, y = draw_random(exposure, spec, self._blank_sky(calexp, spec))
        ra, dec = (exposure.pixel_to_sky(x, y) if exposure.wcs is not None
                   else (np.full(len(x), np.nan), np.full(len(x), np.nan)))
        return BlankSky(x, y, np.asarray(ra, float), np.asarray(dec, float), calexp.job_id)

    def check_job(self, exposure_id: str | None, parameters: dict[str, Any]) -> dict[str, Any]:
        """Refuse at submission (422 ``not_enough_blank_sky``) a forced job on one exposure
        whose random positions do not fit on its calexp's blank sky, rather than let it fail
        once it runs; the parameters, with the detect job checked pinned as ``job_id``.

        What is cheaper to refuse is refused first, as the job's `prepare` would; a calexp
        deleted since its detect job is left for the job to report."""
        if exposure_id is None or parameters.get("random") is None:
            return parameters
        try:
            check_options(exposure_id, parameters)
        except UsageError as error:
            raise refused(error) from error
        spec = RandomPositions.model_validate(parameters["random"]).to_spec()
        with self._engine.connect() as connection:
            calexp = CalexpService(connection, self._store, self._cache, self._owner
                                   ).detect_job(exposure_id, parameters.get("job_id"))
        try:
            sky = self._blank_sky(calexp, spec)
        except BlobNotFoundError:
            return parameters
        with _refusals_as_422():
            require_blank_sky(sky, spec.n)
        return {**parameters, "job_id": calexp.job_id}

    def _characterized(self, exposure_id: str, job_id: str | None, load: bool = True
                       ) -> tuple[Exposure, DetectCalexp]:
        """The calexp and its detect job, found over a short connection of its own (one
        indexed query; no session is needed)."""
        with self._engine.connect() as connection:
            calexps = CalexpService(connection, self._store, self._cache, self._owner)
            return calexps.characterized(exposure_id, job_id, load=load)

    def _blank_sky(self, calexp: DetectCalexp, spec: RandomSpec) -> BlankSkyMap:
        """Where random positions may fall on the calexp: mapped once per
        ``min_distance_px`` (under a second on 4k × 4k), then kept beside it in memory."""
        distance = spec.min_distance_px
        return self._cache.derived(self._store, calexp.key, ("blank_sky", distance),
                                   lambda exposure: blank_sky_map(exposure, distance))


@contextmanager
def _refusals_as_422() -> Iterator[None]:
    """The engine's refusals of a request (`RequestError`) as the API's 422."""
    try:
        yield
    except RequestError as error:
        raise InvalidInputError(str(error), code=error.code) from error


def _positions(rows: Sequence[Mapping[str, Any]]) -> ColumnSet:
    try:
        return positions_columns(rows, reserved_names())
    except PositionsError as error:
        raise InvalidInputError(str(error), code=error.code) from error
