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
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlparse

from pydantic import Field
from sqlalchemy.orm import Session

from app.db.exposures import ExposureRepository, new_exposure
from app.db.models import JobRecord
from app.io.read_request import COMPANIONS, ReadRequest
from app.jobs.errors import TransientError, UsageError, unusable_input
from app.jobs.kinds import JobContext, JobKind, JobOutput, Progress, register_kind
from app.storage.blobs import BlobTooLargeError, StagedBlob, exposure_key, open_store

if TYPE_CHECKING:
    import httpx

MAX_REDIRECTS = 5
TIMEOUT = 60.0  # seconds without progress before a download is given up


class FetchParameters(ReadRequest):
    """Where to fetch the exposure (and its companion planes) from, and how to read it."""

    url: str = Field(title="http or https URL of a FITS exposure", max_length=2048)
    variance_url: str | None = Field(None, title="URL of a variance map", max_length=2048)
    weight_url: str | None = Field(None, title="URL of a weight map", max_length=2048)
    mask_url: str | None = Field(None, title="URL of a data-quality map", max_length=2048)
    background_url: str | None = Field(None, title="URL of the subtracted background",
                                       max_length=2048)

    def urls(self) -> dict[str, str]:
        """The files to download: ``file`` (the exposure), then the companions given."""
        companions = {name: getattr(self, f"{name}_url") for name in COMPANIONS}
        return {"file": self.url, **{k: v for k, v in companions.items() if v is not None}}


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
    """Run in the child process: download, check it is an exposure, store it by content.

    With companion URLs or reading options, the exposure they assemble is stored, as for an
    upload (:mod:`app.io.intake`); a file that cannot be used fails the job with the reason.
    """
    import httpx

    from app.io.intake import assemble_exposure, check_exposure

    parameters = FetchParameters.model_validate(context.parameters)
    urls = parameters.urls()
    store = open_store(context.storage_url)
    with ExitStack() as stack:
        client = stack.enter_context(httpx.Client(timeout=TIMEOUT))
        staged: dict[str, StagedBlob] = {}
        names: dict[str, str | None] = {}
        for done, (part, url) in enumerate(urls.items()):
            progress(0.8 * done / len(urls), f"downloading {part}")
            staged[part] = stack.enter_context(store.stage(limit=context.max_bytes))
            final = _download(client, url, staged[part])
            staged[part].close()
            names[part] = urlparse(final).path.rsplit("/", 1)[-1] or None
        progress(0.8, "reading")
        files = {part: (blob.path, names[part]) for part, blob in staged.items()
                 if part != "file"}
        try:
            options = parameters.options(files)
            if options.is_default:
                metadata = check_exposure(staged["file"].path, max_bytes=context.max_bytes)
                stored = staged["file"]
            else:
                stored = stack.enter_context(store.stage())
                metadata = assemble_exposure(staged["file"].path, options, stored,
                                             names["file"], max_bytes=context.max_bytes)
        except ValueError as error:  # ExposureReadError, OptionError
            raise unusable_input(error) from error
        key = exposure_key(stored.sha256)
        store.publish(stored, key)
    exposure: dict[str, Any] = {
        "sha256": stored.sha256,
        "size": stored.size,
        "storage_key": key,
        "filename": names["file"],
        "metadata": metadata,
    }
    return JobOutput(exposure=exposure)


def _download(client: httpx.Client, url: str, staged: StagedBlob) -> str:
    """Stream ``url`` into ``staged``, following redirects to public addresses only; the
    final URL."""
    import httpx

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
                return url
        raise UsageError(f"more than {MAX_REDIRECTS} redirects", "fetch_failed")
    except BlobTooLargeError as error:
        raise UsageError(
            f"the file at {url} is larger than the limit of {error.limit} bytes", "too_large"
        ) from error
    except httpx.HTTPError as error:
        raise TransientError(f"fetching {url} failed: {error}") from error


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
