"""The local blob store: atomic publication, hashing on the way, limits, safe keys."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest

from app.engine.footprints import PEAK_DTYPE, SPAN_DTYPE, Footprint
from app.storage.blobs import BlobNotFoundError, BlobTooLargeError, exposure_key, open_store
from app.storage.footprints import footprints_archive, read_footprint


def test_staged_write_hashes_and_publishes_atomically(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    data = b"x" * 3_000_000
    with store.stage() as staged:
        for i in range(0, len(data), 65536):
            staged.write(data[i : i + 65536])
        assert not store.exists("a/b.bin")
        store.publish(staged, "a/b.bin")
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert staged.size == len(data)
    assert b"".join(store.iter_chunks("a/b.bin")) == data
    assert list((tmp_path / ".staging").iterdir()) == []


def test_unpublished_stage_leaves_nothing(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    with pytest.raises(BlobTooLargeError), store.stage(limit=10) as staged:
        staged.write(b"0123456789abc")
    assert list((tmp_path / ".staging").iterdir()) == []


def test_keys_cannot_escape_the_root(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "root"))
    for key in ("../outside", ".staging/x", "/etc/passwd"):
        with pytest.raises(ValueError, match="invalid storage key"):
            store.put_bytes(key, b"x")
    with pytest.raises(BlobNotFoundError):
        store.path("missing")


def test_delete_removes_empty_directories(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    key = exposure_key("ab" + "0" * 62)
    store.put_bytes(key, b"data")
    store.delete(key)
    assert not (tmp_path / "exposures").exists()


def test_footprint_archive_round_trip() -> None:
    spans = np.array([(3, 2, 5), (4, 1, 6)], SPAN_DTYPE)
    peaks = np.array([(1, 3, 3, 10.0)], PEAK_DTYPE)
    image = np.arange(100, dtype=np.float32).reshape(10, 10)
    heavy = Footprint(spans=spans, peaks=peaks).make_heavy(
        image, np.full((10, 10), 32, np.int32), image * 2
    )
    light = Footprint(spans=spans[:1])
    archive = footprints_archive({7: heavy, 3: light})
    back = read_footprint(io.BytesIO(archive), 7)
    assert back is not None and back.is_heavy
    assert back.bbox == (1, 3, 6, 4) and back.area == 10
    np.testing.assert_array_equal(back.image, heavy.image)
    np.testing.assert_array_equal(back.mask, heavy.mask)
    assert back.peaks.tolist() == peaks.tolist()
    light_back = read_footprint(io.BytesIO(archive), 3)
    assert light_back is not None and not light_back.is_heavy and light_back.area == 4
    assert read_footprint(io.BytesIO(archive), 5) is None
