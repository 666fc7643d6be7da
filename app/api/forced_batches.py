"""Concurrent quick forced requests on one calexp, measured together on the event loop.

A forced measurement call costs a fixed few hundred microseconds (numpy's per-call
overheads, the calexp's lookup) plus ~15 µs per position, so when many clients each ask
for a few positions the fixed part is most of the work. Requests that wait while the event
loop is busy are measured in one engine call (`ForcedService.measure_together`) and each
gets its own rows: the rows it would get alone, since every position is measured on its
own. A batch is measured after a turn of the event loop in which no request joined it (or
once it is full): clients answered together send their next requests together, and a batch
that waits while they keep arriving is two to three times larger under load, for a lone
request's wait of one turn of the loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from app.engine.columns import ColumnSet
from app.engine.config import ForcedConfig
from app.engine.forced import positions_kind
from app.services.forced import ForcedQuery, ForcedService

BATCH_POSITIONS = 512
"""Most positions one call measures: it runs on the event loop, which a larger batch would
hold for more than a few milliseconds."""

BatchKey = tuple[str, str, str | None, tuple[str, ...], tuple[float, ...], tuple[str, str]]


@dataclass
class _Batch:
    service: ForcedService
    config: ForcedConfig
    tables: list[ColumnSet] = field(default_factory=list)
    futures: list[asyncio.Future[ColumnSet]] = field(default_factory=list)
    waited_for: int = 0  # requests in it when it last waited a turn of the loop


class ForcedBatcher:
    """Gathers quick requests by (owner, exposure, detect job, plugins, aperture radii,
    coordinates)."""

    def __init__(self) -> None:
        self._open: dict[BatchKey, _Batch] = {}

    async def measure(self, service: ForcedService, query: ForcedQuery) -> ColumnSet:
        """The rows of ``query`` (which `ForcedService.quick` accepts), in memory only:
        `NotInMemory` when its calexp would have to be read first."""
        table, config = service.prepare(query)
        assert table is not None  # quick requests have positions
        a, b, _ = positions_kind(table.names)
        key = (service.owner, query.exposure_id, query.job_id, tuple(config.plugins),
               tuple(config.apertureRadii), (a, b))
        loop = asyncio.get_running_loop()
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = _Batch(service, config)
            loop.call_soon(self._run, key, batch)
        future: asyncio.Future[ColumnSet] = loop.create_future()
        batch.tables.append(table)
        batch.futures.append(future)
        if sum(map(len, batch.tables)) >= BATCH_POSITIONS:
            del self._open[key]  # full: later requests start the next batch
        return await future

    def _run(self, key: BatchKey, batch: _Batch) -> None:
        if self._open.get(key) is batch:
            if len(batch.tables) > batch.waited_for:  # it grew: wait one more turn
                batch.waited_for = len(batch.tables)
                asyncio.get_running_loop().call_soon(self._run, key, batch)
                return
            del self._open[key]
        try:
            results = batch.service.measure_together(
                key[1], key[2], batch.config, batch.tables, load=False)
        except Exception as error:  # the same for every request of the batch
            for future in batch.futures:
                if not future.done():
                    future.set_exception(error)
            return
        for future, rows in zip(batch.futures, results, strict=True):
            if not future.done():
                future.set_result(rows)
