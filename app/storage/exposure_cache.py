"""Exposures read from the blob store, kept in memory for the requests that follow.

A synchronous forced-photometry request or an image render must not re-read a 130 MB calexp
each time: the most recently used exposures stay in memory (with their PSF models, whose
pre-shifted bases are cached on them), keyed by blob key. Blob keys are immutable (content
hashes, per-attempt artifact paths), so an entry never goes stale; deleting a blob only makes
its entry unreachable until it ages out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from app.engine.exposure import Exposure
from app.io.fits_exposure import read_exposure
from app.storage.blobs import BlobStore


class NotInMemory(LookupError):
    """The exposure asked for without loading it is not in the cache."""


class ExposureCache:
    """A small thread-safe LRU of exposures by blob key."""

    def __init__(self, max_items: int = 4) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, Exposure] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

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
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            exposure = read_exposure(store.path(key))
            with self._lock:
                self._items[key] = exposure
                self._items.move_to_end(key)
                while len(self._items) > self.max_items:
                    self._items.popitem(last=False)
                self._loading.pop(key, None)
            return exposure
