"""A small synchronous client of skyphot's REST API, for commands that drive a server.

It speaks only the public API (what any astronomer's script would), turns the API's error
shape into `ApiError` with the server's message, and reads catalogs as astropy tables.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from astropy.table import Table

TERMINAL_PHASES = {"COMPLETED", "ERROR", "ABORTED"}
POLL_SECONDS = 0.25


class ApiError(RuntimeError):
    """The server answered with an error (4xx/5xx) or a job did not complete."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code


class SkyphotClient:
    """One server at ``base_url``; use as a context manager to close its connections."""

    def __init__(self, base_url: str, timeout: float = 300.0) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)

    def __enter__(self) -> SkyphotClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; an error status raises `ApiError` with the server's message."""
        response = self._http.request(method, path, **kwargs)
        if response.is_error:
            try:
                error = response.json()["error"]
                code, message = error["code"], error["message"]
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", response.text[:500]
            raise ApiError(response.status_code, code, message)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def content(self, path: str, params: Mapping[str, Any] | None = None,
                body: Any = None) -> bytes:
        """GET ``path`` (or POST ``body`` as JSON when given) and return the bytes."""
        if body is None:
            return self.request("GET", path, params=params).content
        return self.request("POST", path, params=params, json=body).content

    def table(self, path: str, params: Mapping[str, Any] | None = None,
              body: Any = None) -> Table:
        """A catalog endpoint's answer as an astropy table (fetched as FITS)."""
        data = self.content(path, {**(params or {}), "format": "fits"}, body)
        return Table.read(io.BytesIO(data), format="fits")

    def upload(self, path: Path) -> dict[str, Any]:
        """Store a FITS exposure; the server's record of it."""
        with path.open("rb") as f:
            return self.json("POST", "/v1/exposures",
                             files={"file": (path.name, f, "application/fits")})

    def submit(self, kind: str, exposure_id: str, config: Mapping[str, Any]) -> dict[str, Any]:
        return self.json("POST", "/v1/jobs",
                         json={"kind": kind, "exposure_id": exposure_id, "config": config})

    def wait(self, job_id: str, on_progress: Callable[[float, str], None] | None = None,
             timeout: float = 3600.0) -> dict[str, Any]:
        """Poll a job until it ends; a job that did not complete raises `ApiError`."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.json("GET", f"/v1/jobs/{job_id}")
            if on_progress is not None:
                on_progress(job["progress"], job["step"] or job["phase"].lower())
            if job["phase"] in TERMINAL_PHASES:
                break
            if time.monotonic() > deadline:
                raise ApiError(504, "timeout", f"job {job_id} still {job['phase']} after "
                                               f"{timeout:.0f} s")
            time.sleep(POLL_SECONDS)
        if job["phase"] != "COMPLETED":
            error = job.get("error") or {}
            raise ApiError(500, error.get("code") or job["phase"].lower(),
                           error.get("message") or f"job {job_id} ended {job['phase']}")
        return job
