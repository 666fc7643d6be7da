"""base_SdssCentroid against the Cramér–Rao bound on simulated isolated stars.

For each PSF FWHM, one field of isolated Kolmogorov stars (no galaxies, no pairs) is
simulated with ``app.engine.simulate``; the true PSF is installed on the exposure
(``doMeasurePsf=false``), so the figures are the centroider's alone, and the default detect
pipeline runs; saturated stars are left out. Each matched star's offset from truth is
compared with its own Cramér–Rao bound (``app.engine.cramer_rao``: the true PSF image,
flux and variance; x, y, flux and sky free). Printed per S/N bin: the number of stars, the
RMS offset per axis about the common (mean) offset, the RMS bound, the RMS of offset /
bound (1 for an efficient estimator), and the RMS of offset / the scatter of the ideal
PSF-weighted centroid (the maximum of the correlation with the PSF, which SdssCentroid
interpolates; 4/3 of the bound for a Gaussian PSF where the star's own photons dominate
the noise).

Run::

    .venv/bin/python bench/centroids.py [--fwhm 2 3.75 6] [--stars 1500] [--seed 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from app.engine.config import DetectConfig
from app.engine.cramer_rao import centroid_bounds, kolmogorov_renderer
from app.engine.pipeline import run_detect
from app.engine.simulate import SimulationConfig, simulate_exposure
from app.engine.truth import match_positions

BINS = [(30, 50), (50, 100), (100, 200), (200, 500), (500, 2000), (2000, 1e9)]


def field(fwhm: float, n_stars: int, seed: int) -> SimulationConfig:
    """Stars from S/N ≈ 25 to ≈ 3000 whatever the FWHM (the brightest saturate and are left
    out), kept ≥ 8 FWHM apart."""
    scale = 0.2
    # S/N ∝ flux / FWHM at fixed sky: shift the magnitudes with the FWHM
    shift = 2.5 * np.log10(fwhm / 3.75)
    side = int(np.clip(np.sqrt(n_stars) * 10 * fwhm, 1024, 4096))
    return SimulationConfig(
        width=side, height=side, fwhm_arcsec=fwhm * scale, pixel_scale_arcsec=scale,
        n_stars=n_stars, star_mag_range=(16.3 - shift, 21.8 - shift), mag_slope=0.0,
        fwhm_gradient=float(np.clip(1 - 1.98 / fwhm, 0.0, 0.04)),  # the simulator's range
        n_galaxies=0, n_pairs=0, n_saturated=0, bad_columns=(), min_separation_px=8 * fwhm,
        seed=seed)


def measure(fwhm: float, n_stars: int, seed: int) -> dict[str, np.ndarray]:
    """Offsets, bounds and S/N of the matched unflagged stars of one field."""
    cfg = field(fwhm, n_stars, seed)
    sim = simulate_exposure(cfg)
    sim.exposure.psf = sim.psf
    config = DetectConfig()
    config.characterize.doMeasurePsf = False
    started = time.perf_counter()
    cat = run_detect(sim.exposure, config).catalog
    seconds = time.perf_counter() - started
    truth = sim.truth
    cat = cat[np.asarray(cat["deblend_nChild"]) == 0]
    m = match_positions(np.asarray(cat["base_SdssCentroid_x"]),
                        np.asarray(cat["base_SdssCentroid_y"]),
                        np.asarray(truth["x"]), np.asarray(truth["y"]), 3.0)
    found = (m.det_index >= 0) & ~np.asarray(truth["saturated"])
    d = m.det_index[found]
    ok = ~np.asarray(cat["base_SdssCentroid_flag"])[d]
    t = truth[found][ok]
    d = d[ok]
    size = int(2 * np.ceil(3 * fwhm) + 1)
    bounds = centroid_bounds(np.asarray(t["x"]), np.asarray(t["y"]), np.asarray(t["flux"]),
                             sim.exposure.variance,
                             kolmogorov_renderer(sim.psf, t["x"], t["y"]), size)
    return {
        "dx": np.asarray(cat["base_SdssCentroid_x"])[d] - np.asarray(t["x"]),
        "dy": np.asarray(cat["base_SdssCentroid_y"])[d] - np.asarray(t["y"]),
        "bx": bounds["x"], "by": bounds["y"], "mx": bounds["psf_x"], "my": bounds["psf_y"],
        "sn": np.asarray(t["psf_sn"]), "x": np.asarray(t["x"]), "y": np.asarray(t["y"]),
        "flagged": np.array([int((~ok).sum()), int(found.sum())]),
        "seconds": np.array([seconds]),
    }


def report(fwhm: float, r: dict[str, np.ndarray]) -> None:
    dx, dy = r["dx"] - np.mean(r["dx"]), r["dy"] - np.mean(r["dy"])
    print(f"FWHM {fwhm:g} px: {len(dx)} unflagged matched stars "
          f"({r['flagged'][0]} of {r['flagged'][1]} flagged), mean offset "
          f"({np.mean(r['dx']):+.4f}, {np.mean(r['dy']):+.4f}) px, "
          f"pipeline {r['seconds'][0]:.1f} s")
    print("   S/N bin        N   rms(dx,dy)  rms CRB   rms(d/CRB)  rms(d/PSF-weighted)")
    for lo, hi in BINS:
        sel = (r["sn"] >= lo) & (r["sn"] < hi)
        if sel.sum() < 5:
            continue
        rms = np.sqrt(np.mean(np.r_[dx[sel], dy[sel]] ** 2))
        crb = np.sqrt(np.mean(np.r_[r["bx"][sel], r["by"][sel]] ** 2))
        ratio = np.sqrt(np.mean(np.r_[dx[sel] / r["bx"][sel], dy[sel] / r["by"][sel]] ** 2))
        weighted = np.sqrt(np.mean(np.r_[dx[sel] / r["mx"][sel], dy[sel] / r["my"][sel]] ** 2))
        print(f"  {lo:5g}–{hi:<7g} {sel.sum():5d}   {rms:8.4f}   {crb:7.4f}   {ratio:6.3f}"
              f"      {weighted:6.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fwhm", type=float, nargs="+", default=[2.0, 3.75, 6.0])
    parser.add_argument("--stars", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    for fwhm in args.fwhm:
        report(fwhm, measure(fwhm, args.stars, args.seed))


if __name__ == "__main__":
    main()
