"""Benchmark the service: its overhead over the engine, and how it scales with workers.

What it measures
----------------
1. The engine alone: ``read_exposure`` + ``run_detect`` on a simulated LSST-like calexp
   (default 4000 × 4072 px, ~3000 objects), in this process.
2. The embedded default: ``skyphot serve`` (SQLite, in-process worker, local storage) in a
   subprocess; the time from the start of the upload to the catalog downloaded, through
   ``POST /v1/exposures``, ``POST /v1/jobs``, polling ``GET /v1/jobs/{id}`` and
   ``GET /v1/jobs/{id}/catalog``. Target: at most 1.5 × the engine's time.
3. The distributed setup: a batch of detect jobs on PostgreSQL (a fresh schema of database
   ``test`` at 127.0.0.1:5432, dropped afterwards) and Redis (127.0.0.1:6379, a dedicated
   queue name), processed by one ``skyphot worker`` and then by two. Target: two workers at
   least 1.7 × faster than one. (On a 2-core machine each worker gets one core.)

Run by hand (takes several minutes at full size)::

    .venv/bin/python bench/service.py [--width 4000 --height 4072 --objects 3000 --jobs 8]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

SKYPHOT = Path(sys.executable).with_name("skyphot")
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/15"


def simulate(path: Path, width: int, height: int, objects: int, seed: int) -> None:
    from app.engine.simulate import SimulationConfig, simulate_exposure
    from app.io.fits_exposure import write_exposure

    stars = int(objects * 2 / 3)
    sim = simulate_exposure(SimulationConfig(width=width, height=height, n_stars=stars,
                                             n_galaxies=objects - stars - 50, n_pairs=25,
                                             seed=seed))
    write_exposure(sim.exposure, path)


def engine_seconds(path: Path) -> float:
    from app.engine.pipeline import run_detect
    from app.io.fits_exposure import read_exposure

    start = time.perf_counter()
    run_detect(read_exposure(path))
    return time.perf_counter() - start


@contextmanager
def server(env: dict[str, str]) -> Iterator[str]:
    """``skyphot serve`` on a free port until the block ends; yields its base URL."""
    with server_process(env) as (url, _):
        yield url


@contextmanager
def server_process(env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """``skyphot serve`` on a free port until the block ends; yields its URL and pid."""
    from app.commands.embedded import free_port

    port = free_port()
    process = subprocess.Popen([str(SKYPHOT), "serve", "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("skyphot serve did not become ready")
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def upload(client: httpx.Client, path: Path) -> str:
    with path.open("rb") as f:
        response = client.post("/v1/exposures", files={"file": (path.name, f)})
    response.raise_for_status()
    return str(response.json()["id"])


def submit(client: httpx.Client, exposure_id: str) -> str:
    response = client.post("/v1/jobs", json={"kind": "detect", "exposure_id": exposure_id})
    response.raise_for_status()
    return str(response.json()["id"])


def wait(client: httpx.Client, job_ids: list[str]) -> None:
    pending = set(job_ids)
    while pending:
        for job_id in list(pending):
            phase = client.get(f"/v1/jobs/{job_id}").json()["phase"]
            if phase in ("ERROR", "ABORTED"):
                raise RuntimeError(f"job {job_id} ended {phase}")
            if phase == "COMPLETED":
                pending.discard(job_id)
        time.sleep(0.2)


def embedded_seconds(path: Path, workdir: Path) -> float:
    env = {**os.environ, "SKYPHOT_DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
           "SKYPHOT_BROKER_URL": "memory://", "SKYPHOT_STORAGE_URL": str(workdir / "storage")}
    with server(env) as url, httpx.Client(base_url=url, timeout=600) as client:
        start = time.perf_counter()
        exposure_id = upload(client, path)
        job_id = submit(client, exposure_id)
        wait(client, [job_id])
        client.get(f"/v1/jobs/{job_id}/catalog").raise_for_status()
        return time.perf_counter() - start


@contextmanager
def postgres_schema() -> Iterator[str]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            base = POSTGRES.replace("postgresql://", "postgresql+psycopg://", 1)
            yield f"{base}?options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def distributed_seconds(path: Path, workdir: Path, jobs: int, workers: int) -> float:
    """Wall time for ``jobs`` detect jobs on one uploaded exposure with ``workers`` workers."""
    with postgres_schema() as database_url:
        env = {**os.environ, "SKYPHOT_DATABASE_URL": database_url, "SKYPHOT_BROKER_URL": REDIS,
               "SKYPHOT_QUEUE_NAME": f"bench-{uuid.uuid4().hex[:8]}",
               "SKYPHOT_STORAGE_URL": str(workdir / f"storage-{workers}")}
        with server(env) as url, httpx.Client(base_url=url, timeout=600) as client:
            exposure_id = upload(client, path)
            procs = [subprocess.Popen([str(SKYPHOT), "worker"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for _ in range(workers)]
            try:
                start = time.perf_counter()
                wait(client, [submit(client, exposure_id) for _ in range(jobs)])
                return time.perf_counter() - start
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=4072)
    parser.add_argument("--objects", type=int, default=3000)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        path = workdir / "calexp.fits"
        simulate(path, args.width, args.height, args.objects, args.seed)
        engine = engine_seconds(path)
        embedded = embedded_seconds(path, workdir)
        print(f"{args.width}x{args.height}, {args.objects} objects")
        print(f"engine (read + run_detect)             {engine:8.1f} s")
        print(f"embedded: upload → COMPLETED → catalog {embedded:8.1f} s  "
              f"= {embedded / engine:.2f} × engine (target ≤ 1.5)")
        one = distributed_seconds(path, workdir, args.jobs, 1)
        two = distributed_seconds(path, workdir, args.jobs, 2)
        print(f"{args.jobs} jobs, 1 Redis worker              {one:8.1f} s")
        print(f"{args.jobs} jobs, 2 Redis workers             {two:8.1f} s  "
              f"= {one / two:.2f} × faster (target ≥ 1.7)")


if __name__ == "__main__":  # the service's child processes re-import this module
    main()
