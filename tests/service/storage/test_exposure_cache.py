"""The exposure cache: each exposure read once, values derived from it computed once and
kept only while it is."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from app.engine.exposure import Exposure
from app.io.fits_exposure import write_exposure
from app.storage.blobs import open_store
from app.storage.exposure_cache import MAX_DERIVED, ExposureCache, NotInMemory


@pytest.fixture
def store(tmp_path: Path):
    store = open_store(str(tmp_path))
    for k in range(3):
        image = np.full((20, 30), float(k), np.float32)
        path = tmp_path / f"x{k}.fits"
        write_exposure(Exposure(image, np.zeros(image.shape, np.int32), np.ones_like(image)),
                       path)
        store.put_bytes(f"e{k}.fits", path.read_bytes())
    return store


def test_each_exposure_is_read_once_and_the_oldest_evicted(store) -> None:
    cache = ExposureCache(max_items=2)
    with pytest.raises(NotInMemory):
        cache.get(store, "e0.fits", load=False)
    first = cache.get(store, "e0.fits")
    assert cache.get(store, "e0.fits", load=False) is first and first.image[0, 0] == 0
    cache.get(store, "e1.fits")
    cache.get(store, "e0.fits")  # e0 used last: e1 goes when e2 comes
    cache.get(store, "e2.fits")
    assert cache.get(store, "e0.fits", load=False) is first
    with pytest.raises(NotInMemory):
        cache.get(store, "e1.fits", load=False)


def test_derived_values_are_computed_once_even_when_asked_at_once(store) -> None:
    cache = ExposureCache(max_items=1)
    calls: list[float] = []
    started = threading.Barrier(4)

    def total(exposure: Exposure) -> float:
        calls.append(float(exposure.image.sum()))
        return calls[-1]

    def ask() -> None:
        started.wait()
        assert cache.derived(store, "e1.fits", "total", total) == 600.0

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [600.0]
    # kept per name, at most MAX_DERIVED of them, the least recently used dropped
    for k in range(MAX_DERIVED):
        cache.derived(store, "e1.fits", k, total)
    assert cache.derived(store, "e1.fits", "total", total) == 600.0
    assert len(calls) == 1 + MAX_DERIVED + 1
    # evicted with its exposure
    cache.get(store, "e2.fits")
    cache.derived(store, "e1.fits", "total", total)
    assert len(calls) == MAX_DERIVED + 3


def test_a_failed_computation_is_tried_again_and_none_is_kept(store) -> None:
    cache = ExposureCache()

    def fail(exposure: Exposure) -> None:
        raise RuntimeError("no")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            cache.derived(store, "e0.fits", "x", fail)
    assert cache.derived(store, "e0.fits", "x", lambda e: 7) == 7
    nones: list[None] = []
    for _ in range(2):  # None is a value like any other
        assert cache.derived(store, "e0.fits", "none", lambda e: nones.append(None)) is None
    assert len(nones) == 1
