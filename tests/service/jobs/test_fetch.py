"""The ``fetch`` job: the address guard, and download + registration run in-process.

Tests must not reach the internet, so the download runs against a loopback server with the
guard switched off for that call only; through the API, loopback URLs are refused.
"""

from __future__ import annotations

import http.server
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from app.db.base import utcnow
from app.db.migrate import upgrade
from app.db.models import ExposureRecord, JobPhase, JobRecord
from app.io.fits_exposure import read_exposure
from app.jobs import fetch
from app.jobs.errors import UsageError
from app.jobs.kinds import JobContext
from app.jobs.runtime import Runtime
from app.settings import Settings
from service.fits_files import calexp_bytes


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.fits",
        "http://localhost:8080/x.fits",
        "https://10.1.2.3/x.fits",
        "http://192.168.0.10/x.fits",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x.fits",
        "http://[fe80::1]/x.fits",
        "http://0.0.0.0/x.fits",
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
        "http:///nohost",
    ],
)
def test_non_public_urls_are_refused(url: str) -> None:
    with pytest.raises(fetch.UnsafeUrlError):
        fetch.check_public_url(url)


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server for files in ``tmp_path/www``."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    upgrade(database_url)
    runtime = Runtime.open(
        Settings(database_url=database_url, storage_url=str(tmp_path / "storage"))
    )
    yield runtime
    runtime.close()


def fetch_job(runtime: Runtime, url: str, max_bytes: int = 10**7,
              **options: str) -> tuple[JobRecord, JobContext]:
    parameters = {"url": url, **options}
    job = JobRecord(
        id=uuid.uuid4().hex,
        owner="local",
        kind="fetch",
        parameters=parameters,
        phase=JobPhase.EXECUTING,
        attempt=1,
        heartbeat_at=utcnow(),
    )
    with runtime.sessions.begin() as session:
        session.add(job)
    context = JobContext(
        job_id=job.id,
        owner="local",
        attempt=1,
        parameters=parameters,
        exposure_id=None,
        exposure_key=None,
        storage_url=runtime.settings.storage_url,
        max_bytes=max_bytes,
    )
    return job, context


def test_fetch_downloads_checks_and_registers_once(
    runtime: Runtime, file_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "check_public_url", lambda url: "127.0.0.1")
    data = calexp_bytes()
    (tmp_path / "www" / "calexp.fits").write_bytes(data)
    exposure_ids = []
    for _ in range(2):
        job, context = fetch_job(runtime, f"{file_server}/calexp.fits")
        output = fetch.compute(context, lambda fraction, step: None)
        assert output.exposure is not None and output.exposure["size"] == len(data)
        assert runtime.store.path(output.exposure["storage_key"]).read_bytes() == data
        with runtime.sessions.begin() as session:
            record = session.get(JobRecord, job.id)
            fetch.finalize(session, record, output)
            exposure_ids.append(record.exposure_id)
    assert exposure_ids[0] is not None and exposure_ids[0] == exposure_ids[1]
    with runtime.sessions() as session:
        exposure = session.get(ExposureRecord, exposure_ids[0])
        assert exposure.filename == "calexp.fits"
        assert exposure.meta["shape"] == [64, 80]


def test_fetch_refuses_large_missing_and_non_fits_files(
    runtime: Runtime, file_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "check_public_url", lambda url: "127.0.0.1")
    (tmp_path / "www" / "calexp.fits").write_bytes(calexp_bytes())
    (tmp_path / "www" / "notes.txt").write_text("not a FITS file\n" * 100)
    cases = [
        ("calexp.fits", 1000, "too_large"),
        ("missing.fits", 10**7, "fetch_failed"),
        ("notes.txt", 10**7, "invalid_exposure_not_fits"),
    ]
    for name, limit, code in cases:
        _, context = fetch_job(runtime, f"{file_server}/{name}", max_bytes=limit)
        with pytest.raises(UsageError) as caught:
            fetch.compute(context, lambda fraction, step: None)
        assert caught.value.code == code
    assert not (runtime.store.root / "exposures").exists()


def test_requests_go_to_the_checked_address_with_the_original_host() -> None:
    url, headers, extensions = fetch.pinned("https://data.example.org:8443/a/b.fits?x=1",
                                            "93.184.216.34")
    assert url == "https://93.184.216.34:8443/a/b.fits?x=1"
    assert headers == {"Host": "data.example.org:8443"}
    assert extensions == {"sni_hostname": "data.example.org"}
    url, headers, extensions = fetch.pinned("http://data.example.org/c.fits", "2606:2800::1")
    assert url == "http://[2606:2800::1]/c.fits" and headers == {"Host": "data.example.org"}
    assert extensions == {}


REAL = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "real"


def test_fetch_with_companions_stores_the_assembled_exposure(
    runtime: Runtime, file_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "check_public_url", lambda url: "127.0.0.1")
    for letter in "iwd":
        name = f"decam_oo{letter}.fits"
        (tmp_path / "www" / name).write_bytes((REAL / name).read_bytes())
    _, context = fetch_job(runtime, f"{file_server}/decam_ooi.fits",
                           weight_url=f"{file_server}/decam_oow.fits",
                           mask_url=f"{file_server}/decam_ood.fits", mask_codes="decam")
    output = fetch.compute(context, lambda fraction, step: None)
    assert output.exposure is not None
    meta = output.exposure["metadata"]
    assert meta["source"]["weight"] == "decam_oow.fits" and meta["layout"] == "calexp"
    assert meta["provenance"]["variance"] == "1/weight, weight map decam_oow.fits[#1 N2]"
    exposure = read_exposure(runtime.store.path(output.exposure["storage_key"]))
    assert exposure.planes.any(exposure.mask, "CR").sum() == 177
    assert output.exposure["filename"] == "decam_ooi.fits"


def test_fetch_of_an_unusable_file_fails_with_the_reason(
    runtime: Runtime, file_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "check_public_url", lambda url: "127.0.0.1")
    fits.PrimaryHDU(np.full((20, 20), np.nan, np.float32)).writeto(tmp_path / "www" / "n.fits")
    fits.PrimaryHDU(np.zeros((20, 20), np.float32)).writeto(tmp_path / "www" / "w.fits")
    fits.PrimaryHDU(np.ones((20, 20), np.float32)).writeto(tmp_path / "www" / "i.fits")
    for name, options, code in (
        ("n.fits", {}, "invalid_exposure_all_nan"),
        ("i.fits", {"weight_url": f"{file_server}/w.fits"}, "invalid_exposure_bad_weight"),
        ("i.fits", {"hdu": "SCI"}, "invalid_exposure_bad_hdu"),
    ):
        _, context = fetch_job(runtime, f"{file_server}/{name}", **options)
        with pytest.raises(UsageError) as caught:
            fetch.compute(context, lambda fraction, step: None)
        assert caught.value.code == code, caught.value
    assert not (runtime.store.root / "exposures").exists()
