"""Simulated exposures with known truth, and the pipeline run on them, shared per session.

Each simulation is built for one question: a survey-like field (completeness, purity, noise),
a field of many bright isolated stars (flux calibration, centroids, PSF), and a field of
close pairs (deblending).
"""

from __future__ import annotations

import pytest

from app.engine.config import DetectConfig
from app.engine.pipeline import DetectResult, run_detect
from app.engine.simulate import SimulatedExposure, SimulationConfig, simulate_exposure


def _run(sim: SimulatedExposure) -> DetectResult:
    return run_detect(sim.exposure, DetectConfig())


@pytest.fixture(scope="session")
def survey() -> tuple[SimulatedExposure, DetectResult]:
    """2048² field, stars from saturated to S/N ≈ 3, galaxies, a few pairs; 5σ detection."""
    sim = simulate_exposure(SimulationConfig(
        width=2048, height=2048, n_stars=1400, n_galaxies=300, n_pairs=10,
        min_separation_px=10.0, seed=3))
    return sim, _run(sim)


@pytest.fixture(scope="session")
def bright_stars() -> tuple[SimulatedExposure, DetectResult]:
    """2048² field dominated by bright, well-separated stars: the photometric calibration."""
    sim = simulate_exposure(SimulationConfig(
        width=2048, height=2048, n_stars=900, star_mag_range=(17.0, 21.5), n_galaxies=100,
        n_pairs=0, n_saturated=2, min_separation_px=25.0, seed=5))
    return sim, _run(sim)


@pytest.fixture(scope="session")
def pairs() -> tuple[SimulatedExposure, DetectResult]:
    """Star pairs 2 FWHM apart, flux ratios 1–5, both members bright enough to measure."""
    sim = simulate_exposure(SimulationConfig(
        width=2048, height=2048, n_stars=300, n_galaxies=100, n_pairs=100,
        pair_mag_range=(17.0, 19.5), min_separation_px=30.0, seed=11))
    return sim, _run(sim)
