"""base_SdssCentroid against the Cramér–Rao bound of each star, at FWHM 2, 3.75 and 6 px.

Fields of isolated Kolmogorov stars (S/N ≈ 25 to the saturation limit), the true PSF
installed so that the numbers are the centroider's (constant over the field, so it is
rendered once: bench/centroids.py measures the varying one); each star's bound from its
true PSF image, flux and variance, with x, y, flux and sky free (`app.engine.cramer_rao`).

SdssCentroid interpolates the peak of the image's correlation with the PSF. Where the sky
dominates a star's noise that is the efficient estimator, and it reaches the bound. Where
the star's own photons dominate (S/N ≳ 200 at gain 1 on a 1000-count sky) the PSF is no
longer the optimal weight and even the exact PSF-weighted centroid scatters up to 4/3 of
the bound (Gaussian PSF): there the test holds SdssCentroid to that estimator's own limit,
which is what meas_base keeps as the slot centroid. At FWHM 2 px its three-point
interpolation also carries a pixel-phase bias of up to 0.0044 px (measured noiselessly
below), comparable with the bound of the brightest stars.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from app.engine.config import DetectConfig
from app.engine.cramer_rao import centroid_bounds, kolmogorov_renderer
from app.engine.pipeline import run_detect
from app.engine.psf_kolmogorov import KolmogorovPsf
from app.engine.simulate import SimulationConfig, simulate_exposure
from app.engine.truth import match_positions

FWHMS = (2.0, 3.75, 6.0)
SCALE = 0.2  # arcsec per pixel


@dataclass(frozen=True)
class Offsets:
    """Matched unflagged unsaturated stars: offsets about the common offset, bounds, S/N."""

    dx: np.ndarray
    dy: np.ndarray
    crb_x: np.ndarray
    crb_y: np.ndarray
    psf_x: np.ndarray  # the scatter of the exact PSF-weighted centroid
    psf_y: np.ndarray
    sn: np.ndarray

    def ratio(self, sel: np.ndarray, to_psf: bool = False) -> float:
        """RMS of offset / bound over both axes of the selected stars."""
        bx, by = (self.psf_x, self.psf_y) if to_psf else (self.crb_x, self.crb_y)
        return float(np.sqrt(np.mean(np.r_[self.dx[sel] / bx[sel], self.dy[sel] / by[sel]]
                                     ** 2)))


class ConstantPsf:
    """The simulator's PSF where it does not vary, rendered once (a PsfModel)."""

    def __init__(self, psf: KolmogorovPsf) -> None:
        self._kernel = psf.kernel(0.0, 0.0)
        self._sigma = float(psf.sigma(0.0, 0.0))

    def kernel(self, x: float, y: float) -> np.ndarray:
        return self._kernel

    def sigma(self, x: float, y: float) -> float:
        return self._sigma


def _config(fwhm: float, **kw: object) -> SimulationConfig:
    shift = 2.5 * np.log10(fwhm / 3.75)  # S/N ∝ flux / FWHM on a given sky
    side = int(np.clip(np.sqrt(800) * 10 * fwhm, 1024, 4096))
    base = dict(width=side, height=side, fwhm_arcsec=fwhm * SCALE, pixel_scale_arcsec=SCALE,
                fwhm_gradient=0.0, n_stars=800,
                star_mag_range=(16.3 - shift, 21.8 - shift), mag_slope=0.0, n_galaxies=0,
                n_pairs=0, n_saturated=0, bad_columns=(), min_separation_px=8 * fwhm, seed=1)
    return SimulationConfig(**{**base, **kw})


def _detect_config() -> DetectConfig:
    config = DetectConfig()
    config.characterize.doMeasurePsf = False
    return config


@pytest.fixture(scope="module", params=FWHMS, ids=lambda f: f"fwhm{f:g}")
def offsets(request) -> tuple[float, Offsets]:
    fwhm = request.param
    sim = simulate_exposure(_config(fwhm))
    sim.exposure.psf = ConstantPsf(sim.psf)
    cat = run_detect(sim.exposure, _detect_config()).catalog
    cat = cat[np.asarray(cat["deblend_nChild"]) == 0]
    truth = sim.truth
    m = match_positions(np.asarray(cat["base_SdssCentroid_x"]),
                        np.asarray(cat["base_SdssCentroid_y"]),
                        np.asarray(truth["x"]), np.asarray(truth["y"]), 3.0)
    found = (m.det_index >= 0) & ~np.asarray(truth["saturated"])
    ok = ~np.asarray(cat["base_SdssCentroid_flag"])[m.det_index[found]]
    # within the PSF kernel's reach of the edge the fallback kernel flags them (near_edge);
    # elsewhere hardly any star is flagged
    x, y = np.asarray(truth["x"])[found], np.asarray(truth["y"])[found]
    reach = sim.exposure.psf.kernel(0, 0).shape[0] // 2 + 3
    inner = (np.minimum(x, y) > reach) & (np.maximum(x, y) < sim.exposure.width - 1 - reach)
    assert ok[inner].mean() >= 0.99 and ok.sum() >= 600
    t = truth[found][ok]
    d = m.det_index[found][ok]
    bounds = centroid_bounds(np.asarray(t["x"]), np.asarray(t["y"]), np.asarray(t["flux"]),
                             sim.exposure.variance,
                             kolmogorov_renderer(sim.psf, t["x"], t["y"]),
                             int(2 * np.ceil(3 * fwhm) + 1))
    dx = np.asarray(cat["base_SdssCentroid_x"])[d] - np.asarray(t["x"])
    dy = np.asarray(cat["base_SdssCentroid_y"])[d] - np.asarray(t["y"])
    assert abs(np.mean(dx)) < 0.005 and abs(np.mean(dy)) < 0.005  # no common offset to speak of
    return fwhm, Offsets(dx - dx.mean(), dy - dy.mean(), bounds["x"], bounds["y"],
                         bounds["psf_x"], bounds["psf_y"], np.asarray(t["psf_sn"]))


def test_the_bound_is_reached_where_the_sky_dominates(offsets):
    """Stars of S/N > 50 whose PSF-weighted scatter is within 5 % of the bound (the sky's
    noise dominates theirs): scatter ≤ 1.15 × the bound (measured 0.99, 1.12, 1.04 here;
    1.04, 0.99, 1.00 at FWHM 3.75 with seeds 2–4: ±5 % is the statistics of 200 stars)."""
    _, o = offsets
    sel = (o.sn > 50) & (o.psf_x < 1.05 * o.crb_x) & (o.psf_y < 1.05 * o.crb_y)
    assert sel.sum() >= 80
    assert o.ratio(sel) <= 1.15


# measured 1.19, 1.04, 0.99 (against the bound itself: 1.34, 1.13, 1.05)
PSF_WEIGHTED_LIMIT = {2.0: 1.25, 3.75: 1.1, 6.0: 1.1}


def test_bright_stars_reach_the_psf_weighted_limit(offsets):
    """All stars of S/N > 50 against the exact PSF-weighted centroid's scatter; at 2 px
    the interpolation's phase bias adds to it (see the noiseless test)."""
    fwhm, o = offsets
    sel = o.sn > 50
    assert sel.sum() >= 500
    assert o.ratio(sel, to_psf=True) <= PSF_WEIGHTED_LIMIT[fwhm]


def test_scatter_is_below_two_hundredths_of_a_pixel_above_snr_100(offsets):
    """Measured 0.0066, 0.0096 and 0.0143 px; at 6 px the bound of an S/N-100 star is
    itself 0.024 px, so the brighter stars carry the figure."""
    _, o = offsets
    sel = o.sn > 100
    assert sel.sum() >= 300
    assert np.sqrt(np.mean(np.r_[o.dx[sel], o.dy[sel]] ** 2)) <= 0.02


@pytest.mark.parametrize(("fwhm", "limit"), [(2.0, 0.005), (3.75, 0.0015)])
def test_pixel_phase_bias_without_noise(fwhm, limit):
    """The three-point interpolation's bias, star by star on a noiseless image: ≤ 0.0044 px
    at FWHM 2 and ≤ 0.0014 px at 3.75 (0 at phases 0 and ½, largest near ±¼)."""
    rng = np.random.default_rng(0)
    grid = np.arange(40, 512 - 40, 32)
    positions = [(x + rng.uniform(-0.5, 0.5), y + rng.uniform(-0.5, 0.5), 3e4, "star")
                 for y in grid for x in grid]
    sim = simulate_exposure(_config(fwhm, width=512, height=512, n_stars=0,
                                    positions=positions))
    ex = sim.exposure
    ex.image[:] = sim.model.astype(np.float32)
    ex.psf = ConstantPsf(sim.psf)
    config = _detect_config()
    config.detection.thresholdType = "value"
    config.detection.thresholdValue = 50.0  # counts: the stars' footprints stay apart
    config.detection.reEstimateBackground = False
    config.measurement.doApCorr = False  # stars 32 px apart: none isolated to 35 px
    cat = run_detect(ex, config).catalog
    t = sim.truth
    m = match_positions(np.asarray(cat["base_SdssCentroid_x"]),
                        np.asarray(cat["base_SdssCentroid_y"]),
                        np.asarray(t["x"]), np.asarray(t["y"]), 1.0)
    assert (m.det_index >= 0).all()
    c = cat[m.det_index]
    assert not np.asarray(c["base_SdssCentroid_flag"]).any()
    err = np.r_[np.asarray(c["base_SdssCentroid_x"]) - t["x"],
                np.asarray(c["base_SdssCentroid_y"]) - t["y"]]
    assert np.abs(err).max() <= limit
