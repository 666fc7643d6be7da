"""Concurrent quick forced requests, measured together: each gets the rows it gets alone."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api.forced_batches import ForcedBatcher
from app.engine.columns import ColumnSet
from app.services.errors import InvalidInputError, NotFoundError
from app.services.forced import ForcedQuery, ForcedService
from service.api.conftest import Detected
from service.conftest import runtime_of


def service_of(client: TestClient) -> ForcedService:
    runtime = runtime_of(client)
    return ForcedService(runtime.sessions, runtime.store, runtime.exposures,
                         runtime.settings.default_owner, 1000)


def together(batcher: ForcedBatcher, service: ForcedService, queries: list[ForcedQuery],
             turns_apart: int = 0) -> list[Any]:
    """The answers to ``queries``, each sent ``turns_apart`` turns of the loop after the
    one before."""
    async def run() -> list[Any]:
        tasks = []
        for query in queries:
            tasks.append(asyncio.ensure_future(batcher.measure(service, query)))
            for _ in range(turns_apart):
                await asyncio.sleep(0)
        return await asyncio.gather(*tasks, return_exceptions=True)
    # a loop of its own in a thread of its own: other tests may leave this one's loop running
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, run()).result()


def assert_same_rows(got: ColumnSet, alone: ColumnSet) -> None:
    assert got.names == alone.names
    for name in alone.names:
        a, b = np.ma.asarray(got[name]), np.ma.asarray(alone[name])
        assert a.dtype == b.dtype, name
        assert (np.ma.getmaskarray(a) == np.ma.getmaskarray(b)).all(), name
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a.filled(np.nan), b.filled(np.nan), rtol=1e-12,
                                       atol=0, equal_nan=True, err_msg=name)
        else:
            assert (a == b).all(), name
        assert got.info(name) == alone.info(name), name


def counting(service: ForcedService) -> list[int]:
    """The number of requests in each of ``service``'s engine calls, as they happen."""
    calls: list[int] = []
    measure_together = service.measure_together

    def counted(*args: Any, **kwargs: Any) -> list[ColumnSet]:
        calls.append(len(args[3]))
        return measure_together(*args, **kwargs)

    service.measure_together = counted  # type: ignore[method-assign]
    return calls


def test_concurrent_requests_share_one_measurement_per_kind(client: TestClient,
                                                            detected: Detected) -> None:
    service = service_of(client)
    truth = detected.truth
    rng = np.random.default_rng(4)
    queries = []
    for k in range(12):
        rows = rng.choice(len(truth), size=1 + k % 5, replace=False)
        if k % 3:  # pixel positions, with a tag of this request's own
            positions = [{"x": float(truth["x"][i]), "y": float(truth["y"][i]), f"tag{k}": k}
                         for i in rows]
        else:  # sky positions, one off the image
            positions = [{"ra": float(truth["ra"][i]), "dec": float(truth["dec"][i]),
                          "name": f"star{i}"} for i in rows] + [{"ra": 0.0, "dec": 0.0,
                                                                "name": "far"}]
        queries.append(ForcedQuery(exposure_id=detected.exposure_id, positions=positions))
    alone = [service.measure(q) for q in queries]  # also reads the calexp into memory

    calls = counting(service)
    results = together(ForcedBatcher(), service, queries)
    assert sorted(calls) == [4, 8]  # one batch of sky requests, one of pixel requests
    for got, expected in zip(results, alone, strict=True):
        assert isinstance(got, ColumnSet), got
        assert_same_rows(got, expected)
    flux = np.asarray(results[1]["base_PsfFlux_instFlux"])
    assert np.isfinite(flux).all() and (flux > 0).all()
    assert np.isnan(results[0]["base_PsfFlux_instFlux"][-1])  # "far": kept, flagged
    assert results[0]["base_PixelFlags_flag_offimage"][-1]


def test_a_bad_request_fails_alone_and_a_bad_exposure_fails_its_batch(
        client: TestClient, detected: Detected) -> None:
    service = service_of(client)
    good = ForcedQuery(exposure_id=detected.exposure_id, positions=[{"x": 100.0, "y": 90.0}])
    service.measure(good)
    bad_tag = ForcedQuery(exposure_id=detected.exposure_id,
                          positions=[{"x": 10.0, "y": 10.0, "base_PsfFlux_instFlux": 1}])
    missing = [ForcedQuery(exposure_id="no-such-exposure", positions=[{"x": 1.0, "y": 1.0}])
               for _ in range(2)]
    results = together(ForcedBatcher(), service, [good, bad_tag, *missing, good])
    assert_same_rows(results[0], service.measure(good))
    assert_same_rows(results[4], service.measure(good))
    assert isinstance(results[1], InvalidInputError)
    assert all(isinstance(r, NotFoundError) for r in results[2:4])


@pytest.mark.parametrize("n", [1, 3])
def test_batches_keep_input_order_and_tags(client: TestClient, detected: Detected,
                                           n: int) -> None:
    service = service_of(client)
    positions = [{"x": 50.0 + 30 * i, "y": 60.0 + 20 * i, "id": 100 - i, "kind": "target"}
                 for i in range(5)]
    query = ForcedQuery(exposure_id=detected.exposure_id, positions=positions)
    service.measure(query)
    for rows in together(ForcedBatcher(), service, [query] * n):
        assert list(rows["id"]) == [100, 99, 98, 97, 96]
        assert list(rows["kind"]) == ["target"] * 5
        np.testing.assert_array_equal(rows["base_TransformedCentroid_x"],
                                      [p["x"] for p in positions])


def test_a_batch_waits_while_requests_keep_joining_it(client: TestClient,
                                                      detected: Detected) -> None:
    service = service_of(client)
    queries = [ForcedQuery(exposure_id=detected.exposure_id,
                           positions=[{"x": 40.0 + 20 * k, "y": 50.0, "k": k}])
               for k in range(6)]
    alone = [service.measure(q) for q in queries]
    calls = counting(service)
    # one turn of the loop apart: each joins the batch before it is measured
    for got, expected in zip(together(ForcedBatcher(), service, queries, turns_apart=1),
                             alone, strict=True):
        assert_same_rows(got, expected)
    assert calls == [6]
    # three turns apart: the batch is measured after a turn in which nobody joined it
    calls.clear()
    together(ForcedBatcher(), service, queries, turns_apart=3)
    assert calls == [1] * 6
