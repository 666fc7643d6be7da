"""Exposures read from the blob store, kept in memory for the requests that follow.

A synchronous forced-photometry request or an image render must not re-read a 130 MB calexp
each time: the most recently used exposures stay in memory (with their PSF models, whose
pre-shifted bases are cached on them), keyed by blob key. Blob keys are immutable (content
hashes, per-attempt artifact paths), so an entry never goes stale; deleting a blob only makes
its entry unreachable until it ages out. Beside each exposure a few values derived from it
at some cost (a blank-sky map) are kept as long as it is.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar, cast

from app.engine.exposure import Exposure
from app.io.fits_exposure import read_exposure
from app.storage.blobs import BlobStore

T = TypeVar("T")
_MISSING = object()  # what a lookup finds when nothing is kept (None may be a value)
MAX_DERIVED = 8
"""Derived values kept per exposure (the most recently used)."""


class NotInMemory(LookupError):
    """The exposure asked for without loading it is not in the cache."""


class ExposureCache:
    """A small thread-safe LRU of exposures by blob key."""

    def __init__(self, max_items: int = 4) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, Exposure] = OrderedDict()
        self._derived: dict[str, OrderedDict[Hashable, Any]] = {}
        self._lock = threading.Lock()
        self._loading: dict[Hashable, threading.Lock] = {}

    def get(self, store: BlobStore, key: str, *, load: bool = True) -> Exposure:
        """The exposure stored at ``key``; read once, however many requests ask at once.

        With ``load`` false, only from memory: `NotInMemory` if it would have to be read.
        """
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            if not load:
                raise NotInMemory(key)
        return self._once(key, lambda: self._items.get(key, _MISSING),
                          lambda: self._keep(key, read_exposure(store.path(key))))

    def derived(self, store: BlobStore, key: str, name: Hashable,
                compute: Callable[[Exposure], T]) -> T:
        """``compute(exposure)`` for the exposure at ``key``, computed once and kept beside
        it under ``name`` (at most `MAX_DERIVED` values per exposure)."""
        exposure = self.get(store, key)

        def kept() -> object:
            values = self._derived.get(key)
            if values is None or name not in values:
                return _MISSING
            values.move_to_end(name)
            return values[name]

        def computed() -> T:
            value = compute(exposure)
            with self._lock:
                if key in self._items:  # not evicted meanwhile
                    values = self._derived.setdefault(key, OrderedDict())
                    values[name] = value
                    while len(values) > MAX_DERIVED:
                        values.popitem(last=False)
            return value

        return self._once((key, name), kept, computed)

    def _once(self, slot: Hashable, kept: Callable[[], object], make: Callable[[], T]) -> T:
        """What ``kept`` finds (under the lock; `_MISSING` if nothing), else ``make``'s
        value, made by one thread while the others asking for the same ``slot`` wait."""
        with self._lock:
            found = kept()
            if found is not _MISSING:
                return cast(T, found)
            loading = self._loading.setdefault(slot, threading.Lock())
        with loading:
            with self._lock:
                found = kept()
            if found is not _MISSING:
                return cast(T, found)
            try:
                return make()
            finally:
                with self._lock:
                    if self._loading.get(slot) is loading:
                        del self._loading[slot]

    def _keep(self, key: str, exposure: Exposure) -> Exposure:
        with self._lock:
            self._items[key] = exposure
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                evicted, _ = self._items.popitem(last=False)
                self._derived.pop(evicted, None)
        return exposure
