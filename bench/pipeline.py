"""Benchmark skyphot's detect pipeline against sep and photutils on a simulated LSST calexp.

What it measures
----------------
One LSST-like calexp (default 4000 × 4072 px, ~3000 objects: 2/3 stars, 1/3 galaxies, one
object in 60 in a close pair of stars) is simulated with ``app.engine.simulate`` and written
once to a temporary FITS file. Each tool then runs in its own fresh process (multiprocessing,
'spawn'), which reads the file (timed apart, not counted) and runs:

* skyphot   ``run_detect(exposure, DetectConfig())``: PSF, detection, deblending and the
            default measurement plugins; per-step times from its progress callback.
* sep       ``Background`` (128 px mesh), subtraction, ``extract`` (5 × global rms, minarea 5,
            default 3×3 filter and deblending), ``sum_circle`` at r = 3, 6, 12 px.
* photutils ``Background2D`` (128 px box, 3σ clip, median), subtraction, convolution with a
            Gaussian of the true PSF FWHM (2·round(FWHM)+1 px square), ``detect_sources``
            (5 × background rms, 5 px), ``deblend_sources`` (32 levels, contrast 0.001),
            ``SourceCatalog`` with x_centroid, y_centroid, segment_flux and kron_flux evaluated.

Every child runs with ``--threads`` BLAS/OpenMP threads (default 1, as the service's job
children: ``SKYPHOT_JOB_COMPUTE_THREADS``), set through ``OMP_NUM_THREADS``,
``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` before it starts and printed with the
results. sep is single-threaded C and photutils' chain is numpy, scipy, astropy and
scikit-image code that does not use threads here, so one thread takes nothing from them.

For each tool: wall time (``time.perf_counter``) and CPU time (``time.process_time``, which
a loaded machine inflates less), the child's peak RSS (``ru_maxrss``, which
includes the interpreter, the imports and the exposure read, given alone as "baseline"),
detections (skyphot: leaf sources, ``deblend_nChild == 0``), completeness of unsaturated true
stars per true PSF S/N bin (one-to-one match within 3 px) and purity, both from
``app.engine.truth``.

sep and photutils compare the *smoothed* image with 5 × the *unsmoothed* rms, i.e. they
detect at ≈ 13σ (sep's 3×3 filter) and ≈ 28σ (the PSF Gaussian) of their detection image,
where skyphot (as LSST) detects at 5σ of its PSF-smoothed image. ``--equal-significance``
lowers their thresholds to 5σ of their smoothed image.

Needs scikit-image (photutils' deblend_sources uses its watershed). Run (takes a few minutes
at full size)::

    .venv/bin/python bench/pipeline.py [--width 4000 --height 4072 --objects 3000 --seed 1]
                                       [--equal-significance] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sep
from astropy.convolution import convolve
from astropy.stats import SigmaClip
from astropy.table import Table
from photutils.background import Background2D, MedianBackground
from photutils.segmentation import (
    SourceCatalog,
    deblend_sources,
    detect_sources,
    make_2dgaussian_kernel,
)

from app.engine.config import DetectConfig
from app.engine.exposure import Exposure
from app.engine.pipeline import run_detect
from app.engine.simulate import SimulationConfig, simulate_exposure
from app.engine.truth import completeness_by_snr, leaf_rows, match_positions, purity
from app.io.fits_exposure import read_exposure, write_exposure

SN_BINS = [(5.0, 7.0), (7.0, 10.0), (10.0, 20.0), (20.0, 50.0), (50.0, np.inf)]
MATCH_RADIUS = 3.0  # pixels
MESH = 128  # background mesh / box, pixels
THRESHOLD = 5.0  # detection threshold, × background rms
MIN_AREA = 5  # pixels
APERTURE_RADII = (3.0, 6.0, 12.0)  # sep.sum_circle radii, pixels
SEP_KERNEL = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])  # sep's default
SKYPHOT_STEPS = ("characterize", "detect", "deblend", "measure")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
MAX_SEP_RATIO = 5.0  # target: skyphot time ≤ this × sep's
MAX_RSS_MB = 2048.0  # target: skyphot peak RSS ≤ 2 GB

Positions = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Setup:
    """What every tool is told: the true PSF FWHM and how to set its threshold."""

    fwhm_px: float
    equal_significance: bool  # threshold in units of the smoothed image's noise, as skyphot's

    def noise_factor(self, kernel: np.ndarray) -> float:
        """Noise of the image smoothed by ``kernel`` (normalised) over the image's noise,
        if thresholds are to be set in smoothed-image σ; else 1 (the tools' convention)."""
        if not self.equal_significance:
            return 1.0
        return float(np.sqrt((kernel**2).sum()) / kernel.sum())


@dataclass
class ToolRun:
    """What one tool's child process reports."""

    name: str
    seconds: float
    cpu_seconds: float  # the child's CPU time over the same span, all its threads
    read_seconds: float
    peak_rss_mb: float
    x: np.ndarray
    y: np.ndarray
    steps: dict[str, float]


class StepClock:
    """Wall time of consecutive named steps."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, step: str) -> None:
        """End ``step`` now; the next one starts."""
        now = time.perf_counter()
        self.steps[step] = now - self._last
        self._last = now


# ---------------------------------------------------------------------------------------------
# The tools: each takes the exposure and the Setup and returns detection positions and its
# per-step times.


def run_skyphot(exposure: Exposure, setup: Setup) -> tuple[Positions, dict[str, float]]:
    """Full ``run_detect``; steps timed from the first progress report of each."""
    started: dict[str, float] = {}

    def progress(_fraction: float, step: str) -> None:
        started.setdefault(step, time.perf_counter())

    catalog = run_detect(exposure, DetectConfig(), progress=progress).catalog
    started.setdefault("done", time.perf_counter())
    ends = [*SKYPHOT_STEPS[1:], "done"]
    steps = {s: started[e] - started[s] for s, e in zip(SKYPHOT_STEPS, ends, strict=True)}
    leaves = catalog[leaf_rows(catalog)]
    return (np.asarray(leaves["base_SdssCentroid_x"], float),
            np.asarray(leaves["base_SdssCentroid_y"], float)), steps


def run_sep(exposure: Exposure, setup: Setup) -> tuple[Positions, dict[str, float]]:
    """Background, subtraction, extraction and circular-aperture sums with sep."""
    clock = StepClock()
    data = np.ascontiguousarray(exposure.image, dtype=np.float32)  # native order, C order
    bkg = sep.Background(data, bw=MESH, bh=MESH)
    data = data - bkg.back()
    clock.mark("background")
    thresh = THRESHOLD * setup.noise_factor(SEP_KERNEL)
    objects = sep.extract(data, thresh, err=bkg.globalrms, minarea=MIN_AREA,
                          filter_kernel=SEP_KERNEL)
    clock.mark("extract")
    for radius in APERTURE_RADII:
        sep.sum_circle(data, objects["x"], objects["y"], radius, err=bkg.globalrms)
    clock.mark("sum_circle")
    return (np.asarray(objects["x"], float), np.asarray(objects["y"], float)), clock.steps


def run_photutils(exposure: Exposure, setup: Setup) -> tuple[Positions, dict[str, float]]:
    """Background2D, convolution, detect_sources, deblend_sources and a SourceCatalog."""
    clock = StepClock()
    bkg = Background2D(exposure.image, MESH, sigma_clip=SigmaClip(sigma=3.0),
                       bkg_estimator=MedianBackground())
    data = exposure.image - bkg.background
    clock.mark("background")
    kernel = make_2dgaussian_kernel(setup.fwhm_px, size=2 * int(round(setup.fwhm_px)) + 1)
    convolved = convolve(data, kernel)
    clock.mark("convolve")
    threshold = THRESHOLD * setup.noise_factor(kernel.array) * bkg.background_rms
    segments = detect_sources(convolved, threshold, n_pixels=MIN_AREA)
    clock.mark("detect")
    segments = deblend_sources(convolved, segments, n_pixels=MIN_AREA, n_levels=32,
                               contrast=0.001, progress_bar=False)
    clock.mark("deblend")
    cat = SourceCatalog(data, segments, convolved_data=convolved)
    table = cat.to_table(columns=["x_centroid", "y_centroid", "segment_flux"])
    clock.mark("catalog")
    cat.to_table(columns=["kron_flux"])
    clock.mark("kron_flux")
    return (np.asarray(table["x_centroid"], float), np.asarray(table["y_centroid"], float)), \
        clock.steps


def read_only(exposure: Exposure, setup: Setup) -> tuple[Positions, dict[str, float]]:
    """No tool: the child's peak RSS is then the baseline every tool's includes."""
    return (np.zeros(0), np.zeros(0)), {}


TOOLS: dict[str, Callable[[Exposure, Setup], tuple[Positions, dict[str, float]]]] = {
    "skyphot": run_skyphot, "sep": run_sep, "photutils": run_photutils, "baseline": read_only,
}


def run_tool(name: str, path: str, setup: Setup) -> ToolRun:
    """In the child: read the exposure, run the tool, report times and peak RSS."""
    t0 = time.perf_counter()
    exposure = read_exposure(path)
    t1, c1 = time.perf_counter(), time.process_time()
    (x, y), steps = TOOLS[name](exposure, setup)
    t2, c2 = time.perf_counter(), time.process_time()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return ToolRun(name, t2 - t1, c2 - c1, t1 - t0, rss_mb, x, y, steps)


def run_in_child(name: str, path: str, setup: Setup) -> ToolRun:
    """``run_tool`` in a fresh spawned process, so its peak RSS is its own."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(run_tool, (name, path, setup))


# ---------------------------------------------------------------------------------------------
# Simulation, scoring and the report


def simulation_config(args: argparse.Namespace) -> SimulationConfig:
    """~2/3 stars, ~1/3 galaxies, 1 object in 60 in a pair (3000 → 2000, 950, 25 pairs)."""
    pairs = args.objects // 120
    galaxies = round(args.objects * 0.95 / 3)
    stars = args.objects - galaxies - 2 * pairs
    return SimulationConfig(width=args.width, height=args.height, n_stars=stars,
                            n_galaxies=galaxies, n_pairs=pairs, seed=args.seed)


def score(run: ToolRun, truth: Table) -> tuple[list[float], float]:
    """Completeness of unsaturated stars per S/N bin, and purity, of the run's detections."""
    ok = np.isfinite(run.x) & np.isfinite(run.y)
    x, y = run.x[ok], run.y[ok]
    match = match_positions(x, y, np.asarray(truth["x"]), np.asarray(truth["y"]), MATCH_RADIUS)
    stars = (np.asarray(truth["kind"]) == "star") & ~np.asarray(truth["saturated"])
    rows = completeness_by_snr(truth, match, SN_BINS, select=stars)
    return [frac for *_, frac in rows], purity(x, y, truth)[0]


def bin_label(lo: float, hi: float) -> str:
    return f">{lo:g}" if np.isinf(hi) else f"{lo:g}-{hi:g}"


def print_table(runs: list[ToolRun], truth: Table, baseline: ToolRun) -> None:
    """The comparison table, each tool's step split, the ratios and the targets."""
    names = [r.name for r in runs]
    scores = [score(r, truth) for r in runs]
    stars = (np.asarray(truth["kind"]) == "star") & ~np.asarray(truth["saturated"])
    sn = np.asarray(truth["psf_sn"])

    def row(label: str, cells: list[str]) -> None:
        print(f"{label:<34}" + "".join(f"{c:>12}" for c in cells))

    row("", names)
    row("wall time (s, read excluded)", [f"{r.seconds:.1f}" for r in runs])
    row("CPU time (s, read excluded)", [f"{r.cpu_seconds:.1f}" for r in runs])
    row("reading the FITS (s)", [f"{r.read_seconds:.1f}" for r in runs])
    row("peak RSS (MB)", [f"{r.peak_rss_mb:.0f}" for r in runs])
    row("detections (skyphot: leaves)", [f"{r.x.size}" for r in runs])
    for k, (lo, hi) in enumerate(SN_BINS):
        n = int((stars & (sn >= lo) & (sn < hi)).sum())
        row(f"completeness S/N {bin_label(lo, hi)} ({n} stars)",
            [f"{s[0][k]:.3f}" for s in scores])
    row("purity", [f"{s[1]:.3f}" for s in scores])
    print(f"\nbaseline peak RSS (interpreter + imports + exposure read): "
          f"{baseline.peak_rss_mb:.0f} MB")
    for r in runs:
        split = ", ".join(f"{k} {v:.1f}" for k, v in r.steps.items())
        print(f"{r.name} steps (s): {split}")
    print_targets({r.name: r for r in runs})


def print_targets(runs: dict[str, ToolRun]) -> None:
    """skyphot's time ratios and peak RSS against the targets, PASS or FAIL."""
    sky = runs["skyphot"]
    sep_ratio = sky.seconds / runs["sep"].seconds
    phot_ratio = sky.seconds / runs["photutils"].seconds
    print("\ntargets:")
    for text, ok in (
        (f"skyphot/sep time = {sep_ratio:.2f} (target <= {MAX_SEP_RATIO:g})",
         sep_ratio <= MAX_SEP_RATIO),
        (f"skyphot/photutils time = {phot_ratio:.2f} (target < 1)", phot_ratio < 1),
        (f"skyphot peak RSS = {sky.peak_rss_mb:.0f} MB (target <= {MAX_RSS_MB:.0f} MB)",
         sky.peak_rss_mb <= MAX_RSS_MB),
    ):
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=4072)
    parser.add_argument("--objects", type=int, default=3000, help="simulated objects")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--equal-significance", action="store_true",
        help="set sep's and photutils' thresholds at 5 sigma of their smoothed detection image "
             "(skyphot's convention) instead of 5 x the unsmoothed rms",
    )
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS/OpenMP threads of every tool's process (default 1)")
    args = parser.parse_args()
    if importlib.util.find_spec("skimage") is None:
        parser.error("photutils' deblend_sources needs scikit-image (pip install scikit-image)")
    return args


def main() -> None:
    args = parse_args()
    for name in THREAD_VARIABLES:  # read by the spawned children's numerical libraries
        os.environ[name] = str(args.threads)
    config = simulation_config(args)
    t0 = time.perf_counter()
    sim = simulate_exposure(config)
    print(f"simulated {config.width}x{config.height}: {config.n_stars} stars, "
          f"{config.n_galaxies} galaxies, {config.n_pairs} pairs, {config.n_saturated} "
          f"saturated stars in {time.perf_counter() - t0:.1f} s (not counted)")
    print("sep/photutils thresholds: " + ("5 sigma of their smoothed image"
          if args.equal_significance else "5 x unsmoothed rms (their convention)"))
    print(f"every tool: {args.threads} BLAS/OpenMP thread(s) ({', '.join(THREAD_VARIABLES)}) "
          f"on a machine with {os.cpu_count()} cores\n")
    truth = sim.truth
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "calexp.fits")
        write_exposure(sim.exposure, path)
        del sim
        setup = Setup(config.fwhm_px, args.equal_significance)
        baseline = run_in_child("baseline", path, setup)
        runs = [run_in_child(name, path, setup) for name in ("skyphot", "sep", "photutils")]
    print_table(runs, truth, baseline)


if __name__ == "__main__":
    main()
