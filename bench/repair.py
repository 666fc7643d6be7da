"""Benchmark the cosmic-ray repair (app/engine/repair.py) on a simulated LSST calexp.

What it measures
----------------
One calexp (default 4000 × 4072 px, 3000 stars, 1500 galaxies, FWHM 0.75″ = 3.75 px) is
simulated with ``app.engine.simulate``; ``--rays`` cosmic rays (default 0, 100, 1000 and 3000:
none, a ground-based 30 s exposure's few dozen to hundred, and a space-like load) are rendered
with ``app.engine.simulate_cosmic_rays`` and added. ``repair_cosmic_rays`` then runs with the
simulator's true PSF, single-threaded (``OMP_NUM_THREADS`` etc. set to 1 before numpy is
imported). Times are the best of ``--repeat`` runs, wall (``perf_counter``) and CPU
(``process_time``: the machine may be shared). For each load it prints how many rays were
significant (their charge, smoothed by the detection kernel, above 5σ of the smoothed sky),
the fraction of those found (a pixel the ray put 2σ into is flagged), and the flagged pixels.

Run::

    .venv/bin/python bench/repair.py [--width 4000 --height 4072 --rays 0 100 1000 3000]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from app.engine.config import RepairConfig  # noqa: E402
from app.engine.detection import gaussian_kernel_1d, smooth  # noqa: E402
from app.engine.repair import repair_cosmic_rays  # noqa: E402
from app.engine.simulate import SimulationConfig, simulate_exposure  # noqa: E402
from app.engine.simulate_cosmic_rays import (  # noqa: E402
    CosmicRayConfig,
    add_cosmic_rays,
    render_cosmic_rays,
)


def significance(rays, sigma_psf: float, sky_sigma: float) -> np.ndarray:
    """Each ray's peak in the detection-smoothed image, in sigmas of the smoothed sky."""
    kernel = gaussian_kernel_1d(sigma_psf)
    k = len(kernel)
    noise = sky_sigma * np.sqrt((np.outer(kernel, kernel) ** 2).sum())
    out = np.zeros(len(rays))
    order = np.argsort(rays.pix_ray, kind="stable")
    bounds = np.searchsorted(rays.pix_ray[order], np.arange(len(rays) + 1))
    for i in range(len(rays)):
        idx = order[bounds[i]:bounds[i + 1]]
        if not len(idx):
            continue
        y, x = rays.pix_y[idx], rays.pix_x[idx]
        stamp = np.zeros((y.max() - y.min() + 2 * k + 1, x.max() - x.min() + 2 * k + 1),
                         np.float32)
        stamp[y - y.min() + k, x - x.min() + k] = rays.pix_counts[idx]
        out[i] = smooth(stamp, kernel).max() / noise
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=4072)
    parser.add_argument("--rays", type=int, nargs="+", default=[0, 100, 1000, 3000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    cfg = SimulationConfig(width=args.width, height=args.height, n_stars=3000,
                           n_galaxies=1500, seed=args.seed)
    t = time.perf_counter()
    sim = simulate_exposure(cfg)
    print(f"simulated {args.width}×{args.height} in {time.perf_counter() - t:.1f} s "
          f"(FWHM {cfg.fwhm_px:.2f} px)")
    sky_sigma = float(np.sqrt(cfg.sky_counts / cfg.gain + (cfg.read_noise / cfg.gain) ** 2))
    sigma_psf = sim.psf.sigma(args.width / 2, args.height / 2)
    print(f"{'rays':>6} {'wall s':>7} {'cpu s':>7} {'signif.':>8} {'found':>6} "
          f"{'CRs':>6} {'pixels':>8}")
    for n in args.rays:
        hit = sim.exposure.copy()
        rays = render_cosmic_rays(hit.shape, CosmicRayConfig(n_rays=n, gain=cfg.gain,
                                                             seed=args.seed + 1))
        add_cosmic_rays(hit, rays, gain=cfg.gain)
        walls, cpus = [], []
        for _ in range(args.repeat):
            work = hit.copy()
            w0, c0 = time.perf_counter(), time.process_time()
            result = repair_cosmic_rays(work, sim.psf, RepairConfig())
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        flagged = np.zeros(hit.shape, bool)
        flagged[result.y, result.x] = True
        sig = significance(rays, sigma_psf, sky_sigma) > 5 if n else np.zeros(0, bool)
        sigma = np.sqrt(sim.exposure.variance)
        strong = rays.pix_counts > 2 * sigma[rays.pix_y, rays.pix_x]
        found = np.bincount(rays.pix_ray, weights=strong & flagged[rays.pix_y, rays.pix_x],
                            minlength=n) > 0
        frac = f"{found[sig].mean():.3f}" if sig.any() else "-"
        print(f"{n:>6} {min(walls):>7.2f} {min(cpus):>7.2f} {int(sig.sum()):>8} {frac:>6} "
              f"{result.n_cosmic_rays:>6} {result.n_pixels:>8}")


if __name__ == "__main__":
    main()
