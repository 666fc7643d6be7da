"""The test matrix: simulated fields that are not one simulator's comfort zone (issue 19, item 7).

Each case is a :class:`~app.engine.simulate.SimulationConfig` (≤ 1500² px, so the whole matrix
runs in minutes), the kind of file it is read back from (or none: the calexp in memory), and
the targets it is held to (:mod:`app.engine.metrics`). ``run_case`` simulates, runs the detect
pipeline at its defaults, and scores the result; a case the engine cannot run keeps its error.
"""

from __future__ import annotations

import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from app.engine.config import DetectConfig
from app.engine.exposure import Exposure
from app.engine.metrics import CROWDED, Metric, Targets, bright_galaxy_fraction, evaluate, score
from app.engine.pipeline import DetectResult, run_detect
from app.engine.simulate import SimulatedExposure, SimulationConfig, simulate_exposure

# Sparse enough that 7–10 σ stars are not lost in their neighbours' light, with bright stars
# for the PSF, ~600 stars of S/N 10–30 for χ (the faintest at S/N ≈ 6.5), close pairs for the
# deblender.
BASE = SimulationConfig(width=1024, height=1024, n_stars=1500, star_mag_range=(17.0, 23.3),
                        n_galaxies=250, galaxy_mag_range=(18.0, 24.0), n_pairs=30,
                        pair_mag_range=(17.5, 20.5), n_saturated=2, min_separation_px=10.0)


@dataclass(frozen=True)
class MatrixCase:
    """One field of the matrix."""

    name: str
    description: str
    config: SimulationConfig
    file: tuple[str, str] | None = None  # (layout, encoding) of app.io.fits_variants
    targets: Targets = field(default_factory=Targets)


def _case(name: str, description: str, seed: int, file: tuple[str, str] | None = None,
          targets: Targets | None = None, **changes: object) -> MatrixCase:
    return MatrixCase(name, description, replace(BASE, seed=seed, **changes), file,
                      targets or Targets())


CASES: tuple[MatrixCase, ...] = (
    _case("kolmogorov", "Kolmogorov 0.75″ (3.75 px), calexp in memory: today's field", 101),
    _case("moffat_b2.5", "Moffat β = 2.5 (broad wings), 3.75 px", 102, psf_family="moffat",
          moffat_beta=2.5),
    _case("moffat_b4.5", "Moffat β = 4.5 (near-Gaussian), elliptical e = 0.06", 103,
          psf_family="moffat", moffat_beta=4.5, psf_ellipticity=0.06, psf_angle_deg=35.0),
    _case("aberrated", "optics × atmosphere: coma and astigmatism growing over the field", 104,
          psf_family="aberrated", psf_ellipticity=0.05, psf_angle_deg=20.0),
    _case("fwhm_1.5px", "undersampled: Moffat β = 3, FWHM 1.5 px", 105, psf_family="moffat",
          moffat_beta=3.0, fwhm_arcsec=0.3, width=768, height=768, n_stars=1100,
          star_mag_range=(18.0, 24.3)),
    _case("fwhm_8px", "oversampled: Kolmogorov FWHM 8 px", 106, fwhm_arcsec=1.6, width=1500,
          height=1500, n_stars=900, star_mag_range=(16.2, 22.5), n_galaxies=100,
          min_separation_px=33.0),
    # bright_galaxy_fraction counts objects by total magnitude; a galaxy of that magnitude has
    # a lower PSF S/N than a star, so the share among bright *detections* is lower: these
    # requests give about 20, 50 and 90 % there (the bench prints the share it finds). The
    # galaxies are compact (hlr 0.3–1″) and none fainter than 21 (S/N 50 for a star is 20.8),
    # so that blank sky and isolated stars remain
    _case("galaxies_20", "galaxies ≈ 20 % of the bright single-peak detections", 107,
          galaxy_mag_range=(17.0, 21.0), hlr_range_arcsec=(0.3, 1.0),
          bright_galaxy_fraction=0.4),
    _case("galaxies_50", "galaxies ≈ 50 % of the bright single-peak detections", 108,
          galaxy_mag_range=(17.0, 21.0), hlr_range_arcsec=(0.3, 1.0),
          bright_galaxy_fraction=0.75),
    _case("galaxies_90", "galaxies ≈ 90 % of the bright single-peak detections", 109,
          width=1500, height=1500, n_stars=1200, galaxy_mag_range=(17.0, 21.0),
          hlr_range_arcsec=(0.3, 1.0), bright_galaxy_fraction=0.94),
    _case("crowded", "crowded: 3100 objects on 768² (5300 per 1000²)", 110, targets=CROWDED,
          width=768, height=768, n_stars=2800, star_mag_range=(17.0, 24.3), n_galaxies=250,
          n_pairs=30, min_separation_px=0.0),
    _case("sky_in", "sky left in with a 300-count gradient, read as a plain image", 111,
          ("plain", "float32"), sky_in=True, sky_gradient=300.0, bad_columns=()),
    _case("int16", "calexp with IMAGE as int16 + BSCALE, read from a file", 112,
          ("calexp", "int16")),
    _case("rice", "calexp RICE_1 tile-compressed (fpack), read from a file", 113,
          ("calexp", "rice")),
)

Loader = Callable[[SimulatedExposure, MatrixCase], Exposure]


@dataclass
class CaseRun:
    """A case's simulation, detect result (None if it raised), metrics and timings."""

    case: MatrixCase
    sim: SimulatedExposure
    result: DetectResult | None
    metrics: list[Metric]
    error: str | None
    seconds: dict[str, float]
    cpu_seconds: float = 0.0  # process time of the whole case: less inflated by a busy machine
    galaxy_fraction: tuple[float, int] | None = None


class CpuLimitExceeded(Exception):
    """The detect pipeline used more CPU time than the case allows."""


@contextmanager
def cpu_limit(seconds: float | None) -> Iterator[None]:
    """Raise `CpuLimitExceeded` once the process has used ``seconds`` more CPU time (a
    profiling timer, so a busy machine does not trip it; main thread, POSIX only)."""
    usable = (seconds is not None and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise CpuLimitExceeded(f"detect used more than {seconds:g} s of CPU time")

    previous = signal.signal(signal.SIGPROF, expire)
    signal.setitimer(signal.ITIMER_PROF, float(seconds))  # type: ignore[arg-type]
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0.0)
        signal.signal(signal.SIGPROF, previous)


def run_case(case: MatrixCase, load: Loader | None = None,
             cpu_seconds: float | None = None) -> CaseRun:
    """Simulate ``case``, read it back through ``load`` (for file cases), detect at the
    defaults (within ``cpu_seconds`` of CPU time, when given) and score; an exception from
    reading or detecting is kept, not raised."""
    started, cpu = time.perf_counter(), time.process_time()
    sim = simulate_exposure(case.config)
    seconds = {"simulate": time.perf_counter() - started}
    try:
        t0 = time.perf_counter()
        exposure = sim.exposure if load is None or case.file is None else load(sim, case)
        seconds["read"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with cpu_limit(cpu_seconds):
            result = run_detect(exposure, DetectConfig())
        seconds["detect"] = time.perf_counter() - t0
    except Exception as exc:  # the engine may fail on a case; the matrix reports it
        last = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}"
        return CaseRun(case, sim, None, [], f"{type(exc).__name__}: {exc} ({where})", seconds,
                       time.process_time() - cpu)
    t0 = time.perf_counter()
    scored = score(sim, result.catalog)
    metrics = evaluate(sim, scored, result.exposure, case.targets)
    seconds["metrics"] = time.perf_counter() - t0
    return CaseRun(case, sim, result, metrics, None, seconds, time.process_time() - cpu,
                   bright_galaxy_fraction(scored))
