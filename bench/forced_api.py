"""Benchmark ``POST /v1/forced`` latency under concurrent clients on the embedded default.

What it measures
----------------
A simulated calexp (default 4000 × 4072 px) is uploaded to ``skyphot serve`` (SQLite,
in-process worker, local storage; a subprocess on a free port) and a detect job runs on it,
so the characterized exposure is stored. After one warm-up request (which loads the calexp
into memory), ``--clients`` concurrent clients each send requests of ``--positions`` random
RA/Dec positions until ``--requests`` have been answered (closed loop: each client sends
its next request when the last is answered, so the server is saturated). It prints the
latency percentiles and the throughput; with ``--rate R`` it then also sends ``--requests``
requests arriving at R per second (open loop) and prints the latency at that load.
Target (issue 5): p50 < 20 ms and p99 < 100 ms for 10 positions with 50 concurrent clients.

Run by hand::

    .venv/bin/python bench/forced_api.py [--width 4000 --height 4072 --clients 50
                                          --positions 10 --requests 2000 --rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from service import server, simulate, submit, upload, wait  # noqa: E402


async def client_loop(client: httpx.AsyncClient, body: dict, latencies: list[float],
                      remaining: list[int]) -> None:
    while remaining[0] > 0:
        remaining[0] -= 1
        start = time.perf_counter()
        response = await client.post("/v1/forced", json=body)
        latencies.append(time.perf_counter() - start)
        response.raise_for_status()


async def open_loop(url: str, body: dict, clients: int, requests: int, rate: float,
                    seed: int) -> tuple[list[float], float]:
    """Requests arriving at ``rate`` per second (Poisson), whatever the answers' pace, over
    at most ``clients`` connections: the latency a client sees at that load."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients)
    gaps = np.random.default_rng(seed).exponential(1 / rate, requests)

    async def one(client: httpx.AsyncClient) -> None:
        start = time.perf_counter()
        response = await client.post("/v1/forced", json=body)
        latencies.append(time.perf_counter() - start)
        response.raise_for_status()

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        start = time.perf_counter()
        tasks = []
        for gap in gaps:
            tasks.append(asyncio.create_task(one(client)))
            await asyncio.sleep(gap)
        await asyncio.gather(*tasks)
        return latencies, time.perf_counter() - start


async def hammer(url: str, body: dict, clients: int, requests: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    remaining = [requests]
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client, body, latencies, remaining)
                               for _ in range(clients)))
        return latencies, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=4072)
    parser.add_argument("--objects", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--positions", type=int, default=10)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=None,
                        help="also send requests open-loop at this many per second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        path = workdir / "calexp.fits"
        simulate(path, args.width, args.height, args.objects, args.seed)
        env = {**os.environ, "SKYPHOT_DATABASE_URL": f"sqlite:///{workdir / 'b.sqlite3'}",
               "SKYPHOT_BROKER_URL": "memory://", "SKYPHOT_STORAGE_URL": str(workdir / "s"),
               "SKYPHOT_LOG_LEVEL": "WARNING"}
        with server(env) as url, httpx.Client(base_url=url, timeout=600) as client:
            exposure_id = upload(client, path)
            wait(client, [submit(client, exposure_id)])
            corners = np.array(client.get(f"/v1/exposures/{exposure_id}").json()["corners"])
            rng = np.random.default_rng(args.seed)
            ra = rng.uniform(corners[:, 0].min(), corners[:, 0].max(), args.positions)
            dec = rng.uniform(corners[:, 1].min(), corners[:, 1].max(), args.positions)
            positions = [{"ra": float(a), "dec": float(d)} for a, d in zip(ra, dec, strict=True)]
            body = {"exposure_id": exposure_id, "positions": positions}
            start = time.perf_counter()
            client.post("/v1/forced", json=body).raise_for_status()
            first = time.perf_counter() - start
            latencies, elapsed = asyncio.run(hammer(url, body, args.clients, args.requests))
            if args.rate is not None:
                paced, _ = asyncio.run(open_loop(url, body, args.clients, args.requests,
                                                 args.rate, args.seed))
    ms = 1000 * np.array(latencies)
    p50, p99 = np.percentile(ms, [50, 99])
    print(f"{args.width}x{args.height}; {args.positions} positions per request; "
          f"{args.clients} concurrent clients; {len(ms)} requests")
    print(f"first request (loads the calexp)  {1000 * first:8.1f} ms")
    print(f"p50 {p50:7.1f} ms   p90 {np.percentile(ms, 90):7.1f} ms   p99 {p99:7.1f} ms   "
          f"max {ms.max():7.1f} ms   throughput {len(ms) / elapsed:7.1f} req/s")
    if args.rate is not None:
        p = 1000 * np.percentile(paced, [50, 99])
        print(f"open loop at {args.rate:g} req/s:  p50 {p[0]:7.1f} ms   p99 {p[1]:7.1f} ms")
    print(f"targets: p50 < 20 ms [{'PASS' if p50 < 20 else 'FAIL'}], "
          f"p99 < 100 ms [{'PASS' if p99 < 100 else 'FAIL'}]")


if __name__ == "__main__":  # the service's child processes re-import this module
    main()
