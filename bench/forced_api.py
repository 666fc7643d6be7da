"""Benchmark ``POST /v1/forced`` latency under concurrent clients on the embedded default.

What it measures
----------------
A simulated calexp (default 4000 × 4072 px) is uploaded to ``skyphot serve`` (SQLite,
in-process worker, local storage, one serving process per core: the defaults; a subprocess
on a free port) and a detect job runs on it, so the characterized exposure is stored. After
warm-up requests (the first loads the calexp into each serving process) and three requests
for random blank-sky positions (the first maps the blank sky), ``--clients``
concurrent clients, each on its own keep-alive connection, send requests of ``--positions``
random RA/Dec positions, each request its own positions, for ``--seconds`` (closed loop:
each client sends its next request when the last is answered, so the server is saturated).
With ``--rate R`` it then also sends requests arriving at R per second (open loop) and
prints the latency at that load.

The clients run in a child process of their own, on raw HTTP/1.1 over asyncio streams
(uvloop when installed), so that the load they put on this machine's cores is small next to
the server's: an HTTP library's client would take about as much CPU as the server.
Target (issue 5): p50 < 20 ms and p99 < 100 ms for 10 positions with 50 concurrent clients.

Run by hand::

    .venv/bin/python bench/forced_api.py [--width 4000 --height 4072 --clients 50
                                          --positions 10 --seconds 20 --rate 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from service import server_process, simulate, submit, upload, wait  # noqa: E402

BODIES = 512  # distinct request bodies the clients cycle through


def request_bytes(host: str, body: dict) -> bytes:
    payload = json.dumps(body).encode()
    return (f"POST /v1/forced HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   request: bytes) -> int:
    """Send one request on a keep-alive connection and read its whole answer; the status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def closed_loop(host: str, port: int, requests: list[bytes], clients: int,
                      seconds: float) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    failures = 0
    stop = time.perf_counter() + seconds

    async def client(index: int) -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection(host, port)
        k = index
        while time.perf_counter() < stop:
            start = time.perf_counter()
            if await exchange(reader, writer, requests[k % len(requests)]) != 200:
                failures += 1
            latencies.append(time.perf_counter() - start)
            k += clients
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return latencies, time.perf_counter() - start, failures


async def open_loop(host: str, port: int, requests: list[bytes], clients: int, rate: float,
                    seconds: float, seed: int) -> tuple[list[float], int]:
    """Requests arriving at ``rate`` per second (Poisson) whatever the answers' pace, each
    on the first of ``clients`` connections that is free."""
    latencies: list[float] = []
    failures = 0
    free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(clients):
        free.put_nowait(await asyncio.open_connection(host, port))
    gaps = np.random.default_rng(seed).exponential(1 / rate, int(rate * seconds))

    async def one(request: bytes) -> None:
        nonlocal failures
        start = time.perf_counter()
        connection = await free.get()
        if await exchange(*connection, request) != 200:
            failures += 1
        latencies.append(time.perf_counter() - start)
        free.put_nowait(connection)

    tasks = []
    for k, gap in enumerate(gaps):
        tasks.append(asyncio.create_task(one(requests[k % len(requests)])))
        await asyncio.sleep(gap)
    await asyncio.gather(*tasks)
    while not free.empty():
        free.get_nowait()[1].close()
    return latencies, failures


def load(url: str, requests: list[bytes], args: argparse.Namespace, rate: float | None,
         results: multiprocessing.Queue) -> None:
    """The clients' process: the closed loop, or the open loop at ``rate``; the latencies
    (and the clients' own CPU seconds) back through ``results``."""
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    host, port = urlsplit(url).hostname, urlsplit(url).port
    assert host is not None and port is not None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    if rate is None:
        outcome = asyncio.run(closed_loop(host, port, requests, args.clients, args.seconds))
    else:
        outcome = asyncio.run(open_loop(host, port, requests, args.clients, rate,
                                        args.seconds, args.seed))
    after = resource.getrusage(resource.RUSAGE_SELF)
    results.put((outcome, after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime))


def run_clients(url: str, requests: list[bytes], args: argparse.Namespace,
                rate: float | None = None) -> tuple[tuple, float]:
    results: multiprocessing.Queue = multiprocessing.Queue()
    child = multiprocessing.Process(target=load, args=(url, requests, args, rate, results))
    child.start()
    outcome = results.get()
    child.join()
    return outcome


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its children still alive (the serving processes)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):  # ended since it was listed
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` alive now."""
    out = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return out
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for child in map(int, children):
            out += [child, *_children(child)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=4072)
    parser.add_argument("--objects", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--positions", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-level", default="INFO",
                        help="the server's SKYPHOT_LOG_LEVEL (the default, INFO, logs every "
                             "request)")
    parser.add_argument("--rate", type=float, default=None,
                        help="also send requests open-loop at this many per second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        path = workdir / "calexp.fits"
        simulate(path, args.width, args.height, args.objects, args.seed)
        env = {**os.environ, "SKYPHOT_DATABASE_URL": f"sqlite:///{workdir / 'b.sqlite3'}",
               "SKYPHOT_BROKER_URL": "memory://", "SKYPHOT_STORAGE_URL": str(workdir / "s"),
               "SKYPHOT_LOG_LEVEL": args.log_level}
        with server_process(env) as (url, pid), httpx.Client(base_url=url,
                                                               timeout=600) as client:
            exposure_id = upload(client, path)
            wait(client, [submit(client, exposure_id)])
            corners = np.array(client.get(f"/v1/exposures/{exposure_id}").json()["corners"])
            rng = np.random.default_rng(args.seed)
            host = urlsplit(url).netloc
            bodies = []
            for _ in range(BODIES):
                ra = rng.uniform(corners[:, 0].min(), corners[:, 0].max(), args.positions)
                dec = rng.uniform(corners[:, 1].min(), corners[:, 1].max(), args.positions)
                bodies.append({"exposure_id": exposure_id, "positions": [
                    {"ra": float(a), "dec": float(d)} for a, d in zip(ra, dec, strict=True)]})
            start = time.perf_counter()
            client.post("/v1/forced", json=bodies[0]).raise_for_status()
            first = time.perf_counter() - start
            for body in bodies[:20]:  # each serving process loads the calexp once
                httpx.post(f"{url}/v1/forced", json=body, timeout=60).raise_for_status()
            blank_sky = []  # the first draw computes the blank-sky map, the next reuse it
            for seed in range(3):
                start = time.perf_counter()
                client.post(f"/v1/exposures/{exposure_id}/random-positions",
                            json={"n": 32, "seed": seed}).raise_for_status()
                blank_sky.append(time.perf_counter() - start)
            requests = [request_bytes(host, b) for b in bodies]
            cpu_before = server_cpu_seconds(pid)
            (latencies, elapsed, failures), client_cpu = run_clients(url, requests, args)
            cpu_server = server_cpu_seconds(pid) - cpu_before
            opened = (run_clients(url, requests, args, args.rate)[0]
                      if args.rate is not None else None)
    ms = 1000 * np.array(latencies)
    p50, p99 = np.percentile(ms, [50, 99])
    print(f"{args.width}x{args.height}; {args.positions} positions per request, each its own; "
          f"{args.clients} concurrent clients; {len(ms)} requests in {elapsed:.1f} s; "
          f"{os.cpu_count()} cores; server log level {args.log_level}")
    print(f"first request (loads the calexp)  {1000 * first:8.1f} ms")
    print(f"32 random blank-sky positions: first {1000 * blank_sky[0]:.0f} ms (maps the blank "
          f"sky in that serving process), then {1000 * blank_sky[1]:.1f} and "
          f"{1000 * blank_sky[2]:.1f} ms")
    print(f"p50 {p50:7.1f} ms   p90 {np.percentile(ms, 90):7.1f} ms   p99 {p99:7.1f} ms   "
          f"max {ms.max():7.1f} ms   throughput {len(ms) / elapsed:7.1f} req/s   "
          f"non-200 answers {failures}")
    print(f"CPU per request: server {1000 * cpu_server / len(ms):.2f} ms, "
          f"clients {1000 * client_cpu / len(ms):.2f} ms")
    if opened is not None:
        paced, paced_failures = opened
        p = 1000 * np.percentile(paced, [50, 99])
        print(f"open loop at {args.rate:g} req/s:  p50 {p[0]:7.1f} ms   p99 {p[1]:7.1f} ms   "
              f"non-200 answers {paced_failures}")
    print(f"targets: p50 < 20 ms [{'PASS' if p50 < 20 else 'FAIL'}], "
          f"p99 < 100 ms [{'PASS' if p99 < 100 else 'FAIL'}]")


if __name__ == "__main__":  # the service's child processes re-import this module
    main()
