"""Storing and paging a forced job's rows: bulk insert of N rows into ``forced_sources``.

Run by hand: ``.venv/bin/python bench/forced_rows.py [N] [DATABASE_URL]`` (default 10⁶ rows
on a temporary SQLite file). Prints the insert rate and the time of a filtered page.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid

import numpy as np
from sqlalchemy.orm import sessionmaker

from app.db.base import utcnow
from app.db.filters import SourceFilter
from app.db.forced_sources import ForcedRows, ForcedSourceRepository
from app.db.migrate import upgrade
from app.db.models import JobPhase, JobRecord
from app.db.session import make_engine


def rows(n: int, rng: np.random.Generator) -> ForcedRows:
    flux = rng.normal(0, 10, n)
    core = {
        "position": np.arange(n), "exposure_id": np.full(n, "e" * 32, dtype=object),
        "position_kind": np.full(n, "input", dtype=object),
        "client_id": np.array([f"t{i}" for i in range(n)], dtype=object),
        "coord_ra": rng.uniform(62, 62.1, n), "coord_dec": rng.uniform(-37.1, -37, n),
        "coord_cx": rng.normal(size=n), "coord_cy": rng.normal(size=n),
        "coord_cz": rng.normal(size=n), "x": rng.uniform(0, 4000, n),
        "y": rng.uniform(0, 4000, n), "psf_inst_flux": flux, "psf_inst_flux_err": np.full(n, 10.0),
        "psf_flux": flux * 50, "psf_flux_err": np.full(n, 500.0), "psf_snr": flux / 10,
        "flags": rng.integers(0, 4, n),
    }
    return ForcedRows(core, {"name": [f"n{i}" for i in range(n)], "rank": list(range(n))})


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    url = sys.argv[2] if len(sys.argv) > 2 else f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    upgrade(url)
    sessions = sessionmaker(make_engine(url))
    job_id = uuid.uuid4().hex
    with sessions.begin() as session:
        session.add(JobRecord(id=job_id, owner="bench", kind="forced", parameters={},
                              phase=JobPhase.COMPLETED, heartbeat_at=utcnow()))
    data = rows(n, np.random.default_rng(1))
    for attempt in (1, 2):  # the second is a re-run: delete, then insert again
        started = time.perf_counter()
        with sessions.begin() as session:
            ForcedSourceRepository(session, "bench").replace(job_id, data)
        elapsed = time.perf_counter() - started
        print(f"run {attempt}: {n} rows in {elapsed:.1f} s = {n / elapsed:,.0f} rows/s")
    started = time.perf_counter()
    with sessions.begin() as session:
        page = ForcedSourceRepository(session, "bench").page(
            job_id, SourceFilter(min_psf_snr=2), {}, after=n // 2, limit=1000)
    print(f"filtered page of {len(page)} rows after row {n // 2}: "
          f"{(time.perf_counter() - started) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
