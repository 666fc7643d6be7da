"""The blob store: keys to immutable files, written atomically and streamed.

Keys are relative, ``/``-separated paths such as ``exposures/ab/<sha256>.fits`` or
``jobs/<id>/catalog.fits``. A key is written in full or not at all: writers go to a staging
file first and are published by rename, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlparse

CHUNK_SIZE = 1024 * 1024


class BlobNotFoundError(LookupError):
    """No blob under this key."""


class BlobTooLargeError(ValueError):
    """A staged write went over its size limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


class StagedBlob:
    """A file being written: sha256 and size are computed on the way through.

    Publish it under a key with `BlobStore.publish`; otherwise it is removed on exit.
    """

    def __init__(self, path: Path, limit: int | None) -> None:
        self.path = path
        self.size = 0
        self._limit = limit
        self._hash = hashlib.sha256()
        self._file: BinaryIO = path.open("wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._limit is not None and self.size > self._limit:
            raise BlobTooLargeError(self._limit)
        self._hash.update(chunk)
        self._file.write(chunk)

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class BlobStore(Protocol):
    """What the service needs of a blob store; `LocalBlobStore` is the one implementation."""

    def path(self, key: str) -> Path:
        """A local file holding the blob (readers such as astropy want a file)."""
        ...

    def exists(self, key: str) -> bool: ...

    def stage(self, limit: int | None = None) -> AbstractContextManager[StagedBlob]: ...

    def publish(self, staged: StagedBlob, key: str) -> None: ...

    def put_bytes(self, key: str, data: bytes) -> int: ...

    def open(self, key: str) -> BinaryIO: ...

    def iter_chunks(self, key: str) -> Iterator[bytes]: ...

    def delete(self, key: str) -> None: ...

    def delete_prefix(self, prefix: str) -> None: ...


class LocalBlobStore:
    """Blobs as files under a root directory (shared by API and workers on one host or NFS)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._staging = root / ".staging"
        self._staging.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """Local file of ``key``; raises if there is none."""
        path = self._resolve(key)
        if not path.is_file():
            raise BlobNotFoundError(key)
        return path

    def exists(self, key: str) -> bool:
        return self._resolve(key).is_file()

    @contextmanager
    def stage(self, limit: int | None = None) -> Iterator[StagedBlob]:
        """A staging file to write into; removed on exit unless published."""
        staged = StagedBlob(self._staging / uuid.uuid4().hex, limit)
        try:
            yield staged
        finally:
            staged.close()
            staged.path.unlink(missing_ok=True)

    def publish(self, staged: StagedBlob, key: str) -> None:
        """Move a finished staging file to ``key`` atomically (replacing any old blob)."""
        staged.close()
        target = self._resolve(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.path, target)

    def put_bytes(self, key: str, data: bytes) -> int:
        """Write small content to ``key`` atomically; returns its size."""
        with self.stage() as staged:
            staged.write(data)
            self.publish(staged, key)
        return len(data)

    def open(self, key: str) -> BinaryIO:
        return self.path(key).open("rb")

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        """The blob in chunks, for streaming responses."""
        with self.open(key) as f:
            while chunk := f.read(CHUNK_SIZE):
                yield chunk

    def delete(self, key: str) -> None:
        """Remove ``key`` if present, and the directories it leaves empty."""
        path = self._resolve(key)
        path.unlink(missing_ok=True)
        for parent in path.parents:
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def delete_prefix(self, prefix: str) -> None:
        """Remove every blob under a ``prefix/`` (a job's artifact directory)."""
        shutil.rmtree(self._resolve(prefix), ignore_errors=True)

    def _resolve(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or key.startswith("."):
            raise ValueError(f"invalid storage key {key!r}")
        return path


def open_store(storage_url: str) -> BlobStore:
    """The store at a path or ``file://`` URL (the only kind so far)."""
    parsed = urlparse(storage_url)
    if parsed.scheme in ("", "file"):
        path = parsed.path if parsed.scheme == "file" else storage_url
        return LocalBlobStore(Path(path))
    raise ValueError(f"unsupported storage URL {storage_url!r}: use a directory path")


def exposure_key(sha256: str) -> str:
    """Content-addressed key of an exposure file."""
    return f"exposures/{sha256[:2]}/{sha256}.fits"


def job_prefix(job_id: str) -> str:
    """Where a job's files live; deleting it deletes them all."""
    return f"jobs/{job_id}"


def attempt_prefix(job_id: str, attempt: int) -> str:
    """Where one attempt writes, so attempts never overwrite each other's files."""
    return f"{job_prefix(job_id)}/attempt-{attempt}"
