"""Benchmark skyphot's forced photometry against photutils and sep on a simulated LSST calexp.

What it measures
----------------
One LSST-like calexp (default 4000 × 4072 px: 2000 stars, 950 galaxies, 25 close pairs of
stars) is simulated with ``app.engine.simulate`` and characterized once with
``characterize(exposure, CharacterizeConfig())``, which sets its PSF and aperture corrections
(both timed, not counted). N random positions (default 100 000, uniform over the image, pixels)
are then measured, single-threaded (``OMP_NUM_THREADS`` etc. are set to 1 below, before numpy
is imported), by:

* skyphot   ``run_forced(exposure, Table({'x': x, 'y': y}))`` with the default plugins
            (base_TransformedCentroid, base_PsfFlux, base_TransformedShape, base_PixelFlags),
            again with ``ForcedConfig(plugins=['base_PsfFlux'])`` alone, and as the service's
            synchronous endpoint calls it: 10 positions per call (median of many calls).
* photutils ``PSFPhotometry`` with an ``ImagePSF`` built from the measured PSF's kernel at the
            image centre, x_0 / y_0 fixed (only the flux is fitted), ``fit_shape``
            2·round(2.2·FWHM)+1 px square, no grouper, initial flux from an aperture of
            r = FWHM. It is slow, so it runs on the first ``--photutils-subset`` positions only
            and its rate is *extrapolated* from that subset.
* sep       ``sum_circle`` at r = 1 FWHM on all N positions of the image (already
            background-subtracted, as a calexp is), with the variance plane as ``var``.

Rates are positions per second of wall time (``time.perf_counter``), the best of ``--repeat``
runs for skyphot and sep, one run for photutils.

Accuracy is measured at the true positions of the unsaturated, isolated stars of the truth
table (not in a pair, nearest other object > 20 px): the median of measured / true flux, and
for stars with true PSF S/N < 30 the robust (1.4826 × MAD) standard deviation of
(measured − true) / error. skyphot's PSF flux is aperture-corrected to total flux; photutils'
PSF flux is the total flux of its (normalized) kernel stamp; sep's aperture flux at r = 1 FWHM
is *not* corrected and holds only part of a star's light, so its ratio is well below 1 and its
pull is not given.

``--profile`` also prints the functions where one default ``run_forced`` call spends its time
(cProfile, by own time).

Run (takes a few minutes at full size)::

    .venv/bin/python bench/forced.py [--width 4000 --height 4072 --positions 100000 --seed 1]
                                     [--photutils-subset 2000 --repeat 3 --profile]
"""

from __future__ import annotations

# ruff: noqa: E402  (the thread limits below must be set before numpy is imported)
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # single-threaded: set before numpy (and its BLAS) is imported

import argparse
import cProfile
import io
import pstats
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sep
from astropy.table import Table
from photutils.psf import ImagePSF, PSFPhotometry

from app.engine.characterize import characterize
from app.engine.config import CharacterizeConfig, ForcedConfig
from app.engine.exposure import Exposure
from app.engine.forced import run_forced
from app.engine.psf import psf_fwhm
from app.engine.simulate import SimulationConfig, simulate_exposure

N_STARS, N_GALAXIES, N_PAIRS = 2000, 950, 25
ISOLATION_PX = 20.0  # accuracy stars: nearest other object farther than this
LOW_SN = 30.0  # pull statistics on stars with true PSF S/N below this
SMALL_CALL = 10  # positions per synchronous-endpoint call
SMALL_CALLS = 200  # calls timed for the median
FIT_HALF_PER_FWHM = 2.2  # photutils fit_shape = 2·round(2.2·FWHM)+1
TARGET_RATE = 1e5  # target: skyphot ≥ 1e5 positions/s on one core
TOOLS = ("skyphot", "photutils", "sep")

Measure = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class ToolResult:
    """One tool's rate on the random positions and its accuracy on the true stars."""

    name: str
    n_timed: int
    seconds: float
    ratio: float  # median measured / true flux
    pull_std: float  # robust std of (measured − true) / error, S/N < LOW_SN; NaN if n/a
    note: str = ""

    @property
    def rate(self) -> float:
        return self.n_timed / self.seconds


def best_time(func: Callable[[], object], repeat: int) -> float:
    """Smallest wall time of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return min(times)


def robust_std(values: np.ndarray) -> float:
    """1.4826 × median absolute deviation of the finite values."""
    v = values[np.isfinite(values)]
    return float(1.4826 * np.median(np.abs(v - np.median(v)))) if v.size else float("nan")


# ---------------------------------------------------------------------------------------------
# The tools: each returns a function measuring (flux, error) at pixel positions (x, y).


def skyphot_measure(exposure: Exposure, config: ForcedConfig | None = None) -> Measure:
    """``run_forced`` with ``config`` (default plugins when None); aperture-corrected PSF flux."""

    def measure(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = run_forced(exposure, Table({"x": x, "y": y}), config)
        return (np.asarray(out["base_PsfFlux_instFlux"], float),
                np.asarray(out["base_PsfFlux_instFluxErr"], float))

    return measure


def photutils_measure(exposure: Exposure, fwhm: float) -> Measure:
    """PSFPhotometry at fixed positions with the measured PSF at the centre as an ImagePSF."""
    assert exposure.psf is not None
    kernel = exposure.psf.kernel(exposure.width / 2, exposure.height / 2)
    model = ImagePSF(kernel)
    model.x_0.fixed = True
    model.y_0.fixed = True
    fit_size = 2 * int(round(FIT_HALF_PER_FWHM * fwhm)) + 1
    phot = PSFPhotometry(model, (fit_size, fit_size), aperture_radius=fwhm)
    data = np.asarray(exposure.image, float)
    error = np.sqrt(np.asarray(exposure.variance, float))

    def measure(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # partial-overlap and convergence warnings
            out = phot(data, error=error, init_params=Table({"x": x, "y": y}))
        return np.asarray(out["flux_fit"], float), np.asarray(out["flux_err"], float)

    return measure


def sep_measure(exposure: Exposure, fwhm: float) -> Measure:
    """sep.sum_circle at r = 1 FWHM with the variance plane (no aperture correction)."""
    data = np.ascontiguousarray(exposure.image, dtype=np.float32)  # native order, C order
    var = np.ascontiguousarray(exposure.variance, dtype=np.float32)

    def measure(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flux, err, _ = sep.sum_circle(data, x, y, fwhm, var=var)
        return np.asarray(flux, float), np.asarray(err, float)

    return measure


# ---------------------------------------------------------------------------------------------
# Timing and accuracy


def accuracy(measure: Measure, stars: Table, with_pull: bool) -> tuple[float, float]:
    """Median measured / true flux and robust pull std (S/N < LOW_SN) at the true stars."""
    x, y = np.asarray(stars["x"], float), np.asarray(stars["y"], float)
    flux, err = measure(x, y)
    true = np.asarray(stars["flux"], float)
    ratio = float(np.nanmedian(flux / true))
    if not with_pull:
        return ratio, float("nan")
    low = (np.asarray(stars["psf_sn"]) < LOW_SN) & (err > 0)  # photutils may give err 0
    return ratio, robust_std((flux[low] - true[low]) / err[low])


def time_tool(name: str, measure: Measure, x: np.ndarray, y: np.ndarray, stars: Table,
              repeat: int, with_pull: bool = True, note: str = "") -> ToolResult:
    """Best-of-``repeat`` time on (x, y), and the accuracy on ``stars``."""
    seconds = best_time(lambda: measure(x, y), repeat)
    ratio, pull = accuracy(measure, stars, with_pull)
    return ToolResult(name, x.size, seconds, ratio, pull, note)


def small_call_ms(measure: Measure, x: np.ndarray, y: np.ndarray) -> float:
    """Median wall time (ms) of SMALL_CALLS calls on SMALL_CALL positions each."""
    times = []
    for k in range(SMALL_CALLS):
        sl = slice(k * SMALL_CALL, (k + 1) * SMALL_CALL)
        t0 = time.perf_counter()
        measure(x[sl], y[sl])
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def accuracy_stars(truth: Table) -> Table:
    """Unsaturated, isolated single stars."""
    keep = ((np.asarray(truth["kind"]) == "star") & ~np.asarray(truth["saturated"])
            & ~np.asarray(truth["is_pair"]) & (np.asarray(truth["nearest_px"]) > ISOLATION_PX))
    return truth[keep]


def profile_forced(exposure: Exposure, x: np.ndarray, y: np.ndarray, top: int = 10) -> None:
    """Print the ``top`` functions by own time in one default ``run_forced`` call."""
    profiler = cProfile.Profile()
    profiler.enable()
    run_forced(exposure, Table({"x": x, "y": y}))
    profiler.disable()
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(top)
    lines = buffer.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    print(f"\nprofile of one default run_forced call on {x.size} positions (by own time):")
    print("\n".join(lines[start:]).rstrip())


# ---------------------------------------------------------------------------------------------
# The report


def print_table(results: list[ToolResult], n_positions: int, n_stars: int, n_low: int) -> None:
    """Rate, time and accuracy per tool."""

    def row(label: str, cells: list[str]) -> None:
        print(f"{label:<44}" + "".join(f"{c:>14}" for c in cells))

    def fmt(v: float, spec: str) -> str:
        return "n/a" if not np.isfinite(v) else format(v, spec)

    row("", [r.name for r in results])
    row("positions timed", [f"{r.n_timed}" for r in results])
    row("wall time (s)", [f"{r.seconds:.3f}" for r in results])
    row("positions/s", [f"{r.rate:,.0f}" for r in results])
    row(f"extrapolated time for {n_positions} (s)",
        [f"{n_positions / r.rate:.1f}" for r in results])
    row(f"median flux/true ({n_stars} stars)", [fmt(r.ratio, ".4f") for r in results])
    row(f"robust std of pull (S/N<{LOW_SN:g}, {n_low})", [fmt(r.pull_std, ".3f")
                                                          for r in results])
    for r in results:
        if r.note:
            print(f"  {r.name}: {r.note}")


def print_targets(rate: float) -> None:
    ok = rate >= TARGET_RATE
    print("\ntargets:")
    print(f"  [{'PASS' if ok else 'FAIL'}] skyphot run_forced (default plugins) = {rate:,.0f} "
          f"positions/s on one core (target >= {TARGET_RATE:,.0f})")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=4072)
    parser.add_argument("--positions", type=int, default=100_000, help="random positions N")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--photutils-subset", type=int, default=2000,
                        help="positions photutils is timed on (its rate is extrapolated)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of skyphot and sep; the best is kept")
    parser.add_argument("--profile", action="store_true",
                        help="also cProfile one default run_forced call")
    args = parser.parse_args()
    if args.positions < SMALL_CALL * SMALL_CALLS:
        parser.error(f"--positions must be >= {SMALL_CALL * SMALL_CALLS}")
    return args


def main() -> None:
    args = parse_args()
    config = SimulationConfig(width=args.width, height=args.height, n_stars=N_STARS,
                              n_galaxies=N_GALAXIES, n_pairs=N_PAIRS, seed=args.seed)
    t0 = time.perf_counter()
    sim = simulate_exposure(config)
    exposure, truth = sim.exposure, sim.truth
    t1 = time.perf_counter()
    characterize(exposure, CharacterizeConfig())
    t2 = time.perf_counter()
    assert exposure.psf is not None
    fwhm = psf_fwhm(exposure.psf, exposure.width / 2, exposure.height / 2)
    print(f"simulated {config.width}x{config.height}: {config.n_stars} stars, "
          f"{config.n_galaxies} galaxies, {config.n_pairs} pairs in {t1 - t0:.1f} s; "
          f"characterized in {t2 - t1:.1f} s (neither counted); PSF FWHM {fwhm:.2f} px")

    rng = np.random.default_rng(args.seed)
    x = rng.uniform(-0.5, exposure.width - 0.5, args.positions)
    y = rng.uniform(-0.5, exposure.height - 0.5, args.positions)
    stars = accuracy_stars(truth)
    n_low = int((np.asarray(stars["psf_sn"]) < LOW_SN).sum())
    print(f"{args.positions} random positions; accuracy on {len(stars)} unsaturated isolated "
          f"stars ({n_low} with S/N < {LOW_SN:g}); single-threaded (OMP/BLAS threads = 1)\n")

    sub = slice(0, min(args.photutils_subset, args.positions))
    psf_only = ForcedConfig(plugins=["base_PsfFlux"])
    sky = time_tool("skyphot", skyphot_measure(exposure), x, y, stars, args.repeat)
    results = [
        sky,
        time_tool("skyphot PSF", skyphot_measure(exposure, psf_only), x, y, stars, args.repeat,
                  note="plugins=['base_PsfFlux'] only"),
        time_tool("photutils", photutils_measure(exposure, fwhm), x[sub], y[sub], stars, 1,
                  note=f"rate extrapolated from {x[sub].size} positions; flux of the "
                       "normalized ImagePSF stamp"),
        time_tool("sep", sep_measure(exposure, fwhm), x, y, stars, args.repeat, with_pull=False,
                  note=f"aperture flux at r = {fwhm:.2f} px, not aperture-corrected "
                       "(ratio < 1 by design; pull n/a)"),
    ]
    print_table(results, args.positions, len(stars), n_low)
    ms = small_call_ms(skyphot_measure(exposure), x, y)
    print(f"\nskyphot run_forced on {SMALL_CALL} positions (the synchronous endpoint): "
          f"median {ms:.2f} ms per call over {SMALL_CALLS} calls")
    print_targets(sky.rate)
    if args.profile:
        profile_forced(exposure, x, y)


if __name__ == "__main__":
    main()
