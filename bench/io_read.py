"""Benchmark reading pixels: skyphot's reader against astropy's own read of the same file.

What it measures
----------------
Two 4000 × 4072 frames are written: the int16 + BSCALE/BZERO/BLANK layout of many survey
images (a sky with stars, a column of BLANK pixels), and the same pixels tile-compressed
with RICE_1 (fpack's ``.fits.fz``). Each reader runs in a fresh process; its time is the best
of ``--repeat`` runs, its peak memory the rise of the process's resident high-water mark
(Linux ``clear_refs``) during the first run, and the peak of Python allocations
(tracemalloc) is printed beside it.

- ``pixels``: skyphot's image plane (``fits_pixels.read_float``: float32, BLANK → NaN),
  what every read of the file costs, against astropy's ``hdul[i].data`` (float32 scaled,
  BLANK → NaN). Target (issue 15): no more than 1.5× astropy in time and peak memory.
- ``exposure``: ``read_exposure`` (image, an empty mask, a variance estimated from the sky
  noise) against astropy's read plus the int32 mask and float32 variance planes every
  exposure holds, filled by numpy. Printed for information: the baseline does no
  sky-noise estimate (sigma-clipped statistics of 2¹⁸ pixels), which skyphot must.

Run by hand::

    .venv/bin/python bench/io_read.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPE = (4072, 4000)
TARGET = 1.5
READERS = ("astropy", "pixels", "astropy+planes", "exposure")


def write_frames(root: Path) -> dict[str, Path]:
    """The int16+BSCALE frame and its RICE_1 twin."""
    from astropy.io import fits

    rng = np.random.default_rng(1)
    sky = rng.normal(1000.0, 8.0, SHAPE).astype(np.float32)
    yy, xx = np.mgrid[0:32, 0:32]
    for x, y in rng.uniform(20, min(SHAPE) - 40, (2000, 2)):
        flux = rng.uniform(1e3, 1e5)
        ix, iy = int(x), int(y)
        sky[iy:iy + 32, ix:ix + 32] += (flux / (2 * np.pi * 2.0**2) * np.exp(
            -((xx - 16 - (x - ix)) ** 2 + (yy - 16 - (y - iy)) ** 2) / 8.0)).astype(np.float32)
    bscale, bzero, blank = 0.05, 2600.0, -32768
    stored = np.clip(np.round((sky - bzero) / bscale), -32767, 32767).astype(np.int16)
    stored[:, 1234] = blank
    plain = fits.PrimaryHDU(stored)
    plain.header["BSCALE"], plain.header["BZERO"], plain.header["BLANK"] = bscale, bzero, blank
    paths = {"int16+BSCALE": root / "scaled.fits", "RICE_1": root / "rice.fits.fz"}
    plain.writeto(paths["int16+BSCALE"])
    rice = fits.CompImageHDU(stored, compression_type="RICE_1")
    rice.header["BSCALE"], rice.header["BZERO"], rice.header["BLANK"] = bscale, bzero, blank
    fits.HDUList([fits.PrimaryHDU(), rice]).writeto(paths["RICE_1"])
    return paths


def read_once(reader: str, path: Path) -> object:
    """One read; the result is kept until the caller drops it."""
    from astropy.io import fits

    from app.io.fits_exposure import read_exposure
    from app.io.fits_open import first_image, open_fits
    from app.io.fits_pixels import read_float

    if reader in ("astropy", "astropy+planes"):
        with fits.open(path) as hdul:
            data = hdul[first_image(hdul)].data
            data = np.asarray(data)
        if reader == "astropy":
            return data
        return data, np.full(SHAPE, 0, np.int32), np.full(SHAPE, 64.0, np.float32)
    if reader == "pixels":
        with open_fits(path, []) as hdul:
            return read_float(hdul[first_image(hdul)], "IMAGE", SHAPE)
    return read_exposure(path)


def measure(reader: str, path: Path, repeat: int) -> dict[str, float]:
    """In this (fresh) process: peak memory of a first read, then the best time."""
    read_once("astropy", path)  # imports, page cache and first-call costs out of the way
    status = Path("/proc/self/status")

    def kb(field: str) -> int:
        line = next(v for v in status.read_text().splitlines() if v.startswith(field))
        return int(line.split()[1])

    before = kb("VmRSS:")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
        resettable = True
    except OSError:
        resettable = False
    tracemalloc.start()
    result = read_once(reader, path)
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = (kb("VmHWM:") - before) * 1024 if resettable else float("nan")
    del result
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = read_once(reader, path)
        seconds.append(time.perf_counter() - start)
        del result
    return {"seconds": min(seconds), "peak": peak, "traced": traced}


def run_child(reader: str, path: Path, repeat: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--measure", reader, str(path),
                          "--repeat", str(repeat)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--measure", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]), args.repeat)))
        return
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        frames = write_frames(Path(tmp))
        print(f"{SHAPE[1]}×{SHAPE[0]} px; best of {args.repeat} reads, each reader in its own "
              "process\n")
        print(f"{'frame':14} {'reader':15} {'seconds':>8} {'peak MB':>8} {'traced MB':>9}  "
              "vs astropy (time, peak)")
        for frame, path in frames.items():
            got = {reader: run_child(reader, path, args.repeat) for reader in READERS}
            for reader in READERS:
                r = got[reader]
                line = (f"{frame:14} {reader:15} {r['seconds']:8.3f} {r['peak'] / 2**20:8.1f} "
                        f"{r['traced'] / 2**20:9.1f}")
                if reader in ("pixels", "exposure"):
                    base = got["astropy" if reader == "pixels" else "astropy+planes"]
                    time_ratio = r["seconds"] / base["seconds"]
                    peak_ratio = r["peak"] / base["peak"]
                    line += f"  {time_ratio:4.2f}×, {peak_ratio:4.2f}×"
                    if reader == "pixels":
                        ok = time_ratio <= TARGET and peak_ratio <= TARGET
                        failed |= not ok
                        line += f"  {'PASS' if ok else 'FAIL'} (≤ {TARGET}×)"
                    else:
                        line += "  (information: includes the sky-noise estimate)"
                print(line)
            print(f"{'':14} file {path.stat().st_size / 2**20:.1f} MB\n")
    print("FAIL" if failed else "PASS",
          f"(target: reading the pixels costs ≤ {TARGET}× astropy in time and peak memory)")


if __name__ == "__main__":
    main()
