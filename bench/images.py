"""Benchmark image products on the embedded default: PNG renders, cutouts and overlays.

What it measures
----------------
Two simulated calexps — 1024 × 1024 and 4000 × 4072 px — are uploaded to ``skyphot serve``
(SQLite, in-process worker, local storage; a subprocess on a free port) and a detect job runs
on each. After one warm-up request per exposure (which loads its calexp into memory), each
product is requested ``--repeat`` times by one client and the latency percentiles are
printed: the whole 1024² image as PNG (plain, background added back, mask plane), 1024²
cutouts of the large exposure as PNG and FITS, and a 1024² overlay of its sources. Target
(issue 6): a 1024 × 1024 PNG render or cutout answers in < 200 ms.

Run by hand::

    .venv/bin/python bench/images.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from service import server, simulate, submit, upload, wait  # noqa: E402

TARGET_MS = 200.0


def timed(client: httpx.Client, path: str, params: dict, repeat: int) -> np.ndarray:
    client.get(path, params=params).raise_for_status()  # warm: calexp and PSF in memory
    ms = []
    for _ in range(repeat):
        start = time.perf_counter()
        client.get(path, params=params).raise_for_status()
        ms.append(1000 * (time.perf_counter() - start))
    return np.array(ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        small, large = workdir / "small.fits", workdir / "large.fits"
        simulate(small, 1024, 1024, 200, args.seed)
        simulate(large, 4000, 4072, 3000, args.seed)
        env = {**os.environ, "SKYPHOT_DATABASE_URL": f"sqlite:///{workdir / 'b.sqlite3'}",
               "SKYPHOT_BROKER_URL": "memory://", "SKYPHOT_STORAGE_URL": str(workdir / "s"),
               "SKYPHOT_LOG_LEVEL": "WARNING"}
        with server(env) as url, httpx.Client(base_url=url, timeout=600) as client:
            small_id, large_id = upload(client, small), upload(client, large)
            small_job, large_job = submit(client, small_id), submit(client, large_id)
            wait(client, [small_job, large_job])
            box = {"x0": 1500, "y0": 1500, "width": 1024, "height": 1024}
            cases = {
                "1024² image PNG (asinh)": (f"/v1/exposures/{small_id}/image", {}),
                "1024² image PNG, background added": (
                    f"/v1/exposures/{small_id}/image", {"add_background": "true",
                                                       "stretch": "zscale"}),
                "1024² mask PNG with legend": (
                    f"/v1/exposures/{small_id}/image", {"plane": "mask"}),
                "1024² cutout of 4000x4072, PNG": (
                    f"/v1/exposures/{large_id}/image", box),
                "1024² cutout of 4000x4072, FITS": (
                    f"/v1/exposures/{large_id}/image", {**box, "format": "fits"}),
                "1024² overlay of 4000x4072 sources": (
                    f"/v1/jobs/{large_job}/overlay.png", box),
            }
            results = {name: timed(client, path, params, args.repeat)
                       for name, (path, params) in cases.items()}
    print(f"{args.repeat} requests each, one client, warm calexp cache")
    for name, ms in results.items():
        p50, p95 = np.percentile(ms, [50, 95])
        verdict = "PASS" if p95 < TARGET_MS else "FAIL"
        print(f"{name:38s} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   [{verdict} < "
              f"{TARGET_MS:.0f} ms]")


if __name__ == "__main__":  # the service's child processes re-import this module
    main()
