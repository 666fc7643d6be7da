"""The ``fetch`` job: download an exposure from a URL the client gave, then register it.

Only http(s) URLs whose host resolves to public addresses are fetched: loopback, private,
link-local and reserved addresses are refused (before queueing, and again before every
request and redirect, since DNS answers can change). The request then goes to the very
address that was checked (the host kept in the Host header and TLS SNI), so a DNS answer
that changes between the check and the connection cannot redirect it.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urljoin, urlparse

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from app.db.exposures import ExposureRepository, new_exposure
from app.db.models import JobRecord
from app.jobs.errors import TransientError, UsageError, unusable_input
from app.jobs.kinds import JobContext, JobKind, JobOutput, Progress, register_kind
from app.storage.blobs import BlobTooLargeError, exposure_key, open_store

MAX_REDIRECTS = 5
TIMEOUT = 60.0  # seconds without progress before a download is given up


class FetchParameters(BaseModel):
    """Where to fetch the exposure from."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(title="http or https URL of a FITS exposure", max_length=2048)


class UnsafeUrlError(ValueError):
    """A URL the service will not fetch."""


def check_public_url(url: str) -> str:
    """Refuse non-http(s) URLs and hosts resolving to non-public addresses; the address to
    connect to."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise UnsafeUrlError(f"only http and https URLs can be fetched, not {parsed.scheme!r}")
    if not parsed.hostname:
        raise UnsafeUrlError("the URL has no host")
    try:
        infos = socket.getaddrinfo(parsed.hostname, parsed.port or 443, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise UnsafeUrlError(f"host {parsed.hostname!r} does not resolve: {error}") from error
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global or address.is_multicast:
            raise UnsafeUrlError(
                f"host {parsed.hostname!r} resolves to {address}, which is not a public "
                "address; give a URL on the public internet"
            )
    return str(infos[0][4][0].split("%")[0])


def pinned(url: str, address: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(URL with the host replaced by ``address``, headers, httpx extensions) that reach
    ``address`` while the server sees, and TLS verifies, the original host."""
    parsed = urlparse(url)
    literal = f"[{address}]" if ":" in address else address
    netloc = literal + (f":{parsed.port}" if parsed.port else "")
    host = parsed.netloc.rsplit("@", 1)[-1]
    extensions = {"sni_hostname": parsed.hostname} if parsed.scheme == "https" else {}
    return parsed._replace(netloc=netloc).geturl(), {"Host": host}, extensions


def compute(context: JobContext, progress: Progress) -> JobOutput:
    """Run in the child process: download, check it is an exposure, store it by content."""
    import httpx

    from app.io.fits_exposure import read_exposure_metadata

    url = FetchParameters.model_validate(context.parameters).url
    store = open_store(context.storage_url)
    progress(0.0, "downloading")
    with store.stage(limit=context.max_bytes) as staged, httpx.Client(timeout=TIMEOUT) as client:
        try:
            for _ in range(MAX_REDIRECTS + 1):
                try:
                    target, headers, extensions = pinned(url, check_public_url(url))
                except UnsafeUrlError as error:
                    raise UsageError(str(error), "unsafe_url") from error
                with client.stream("GET", target, headers=headers,
                                   extensions=extensions) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code >= 500:
                        raise TransientError(f"{url} answered {response.status_code}")
                    if response.status_code >= 400:
                        raise UsageError(f"{url} answered {response.status_code}", "fetch_failed")
                    for chunk in response.iter_bytes():
                        staged.write(chunk)
                    break
            else:
                raise UsageError(f"more than {MAX_REDIRECTS} redirects", "fetch_failed")
        except BlobTooLargeError as error:
            raise UsageError(
                f"the file at {url} is larger than the limit of {error.limit} bytes", "too_large"
            ) from error
        except httpx.HTTPError as error:
            raise TransientError(f"fetching {url} failed: {error}") from error
        progress(0.8, "reading metadata")
        staged.close()
        try:
            metadata = read_exposure_metadata(staged.path)
        except ValueError as error:
            raise unusable_input(error) from error
        key = exposure_key(staged.sha256)
        store.publish(staged, key)
    filename = urlparse(url).path.rsplit("/", 1)[-1] or None
    exposure: dict[str, Any] = {
        "sha256": staged.sha256,
        "size": staged.size,
        "storage_key": key,
        "filename": filename,
        "metadata": metadata,
    }
    return JobOutput(exposure=exposure)


def finalize(session: Session, job: JobRecord, output: JobOutput) -> None:
    """Register the fetched exposure (or find the one with the same content) on the job."""
    assert output.exposure is not None
    exposures = ExposureRepository(session)
    record = exposures.by_hash(job.owner, output.exposure["sha256"])
    if record is None:
        record = new_exposure(owner=job.owner, **output.exposure)
        exposures.add(record)
    job.exposure_id = record.id
    job.summary = {"exposure_id": record.id}


FETCH = register_kind(
    JobKind(
        name="fetch",
        parameters=FetchParameters,
        compute=compute,
        finalize=finalize,
        exposure="none",
    )
)
