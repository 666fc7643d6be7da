"""Deblending and peak finding against simulated truth: close pairs and the survey field.

What it measures
----------------
* ``pairs``: a field of star pairs ``--separation`` × FWHM apart, flux ratios 1–5, both members
  bright (brighter member i = 17–19.5), as tests/engine/conftest.py's ``pairs`` fixture. A pair
  is split when both members match (within 3 px, one-to-one) distinct children of a parent;
  it is good when each child's ``base_PsfFlux_instFlux`` is within 10 % of its truth.
  ``deblend_psf_instFlux`` (the deblender's own PSF fit) is scored the same way.
* ``survey``: the conftest ``survey`` field (1400 stars, 300 galaxies, 10 pairs): completeness
  of isolated unsaturated stars at true PSF S/N 7–10 and > 20, of stars (pair members too)
  with S/N > 10 and another object within 20 px ("near"), and purity of all leaf sources.
* ``default``: the same figures on ``SimulationConfig()``'s own field (300 stars, 300 galaxies).

``--fwhm`` (pixels) and ``--pixel-scale`` set the PSF sampling (FWHM = fwhm_px × scale arcsec);
``--true-psf`` gives the pipeline the simulation's own PSF, so the figures are the deblender's
alone, not the PSF model's.
Prints one line per field; run by hand::

    PYTHONPATH=. .venv/bin/python bench/deblend.py [--field pairs|survey|both] [--fwhm 3.75]
        [--separation 2.0] [--seed 11] [--true-psf] [--set deblend.strayFluxRule=r-to-peak ...]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from app.engine.config import DetectConfig, apply_overrides
from app.engine.pipeline import run_detect
from app.engine.simulate import SimulationConfig, simulate_exposure
from app.engine.truth import completeness_by_snr, leaf_rows, match_positions, purity


def _matched(sim, cat):
    leaf = cat[leaf_rows(cat)]
    m = match_positions(np.asarray(leaf["base_SdssCentroid_x"]),
                        np.asarray(leaf["base_SdssCentroid_y"]),
                        np.asarray(sim.truth["x"]), np.asarray(sim.truth["y"]), 3.0)
    return leaf, m


def score_pairs(sim, cat) -> dict[str, float]:
    """Split fraction and the fraction of split pairs with both fluxes within 10 %."""
    leaf, m = _matched(sim, cat)
    pid = np.asarray(sim.truth["pair_id"])
    flux = np.asarray(sim.truth["flux"])
    ids = np.unique(pid[pid >= 0])
    two = good_psf = good_deb = 0
    for p in ids:
        members = np.nonzero(pid == p)[0]
        d = m.det_index[members]
        if (d >= 0).all() and (np.asarray(leaf["parent"])[d] > 0).all() and d[0] != d[1]:
            two += 1
            r_psf = np.asarray(leaf["base_PsfFlux_instFlux"])[d] / flux[members]
            good_psf += bool(np.all(np.abs(r_psf - 1) < 0.10))
            if "deblend_psf_instFlux" in leaf.colnames:
                r_deb = np.asarray(leaf["deblend_psf_instFlux"])[d] / flux[members]
                good_deb += bool(np.all(np.abs(r_deb - 1) < 0.10))
    n = len(ids)
    return {"pairs": n, "split": two / n, "psf_flux_good": good_psf / max(two, 1),
            "deblend_psf_good": good_deb / max(two, 1)}


def score_survey(sim, cat) -> dict[str, float]:
    """Completeness of isolated stars (S/N 7–10, > 20) and purity of leaf sources."""
    truth = sim.truth
    leaf, m = _matched(sim, cat)
    iso = ((np.asarray(truth["kind"]) == "star") & ~np.asarray(truth["saturated"])
           & ~np.asarray(truth["is_pair"]))
    (_, _, nf, cf), (_, _, nb, cb) = completeness_by_snr(truth, m, [(7, 10), (20, 1e9)], iso)
    near = ((np.asarray(truth["kind"]) == "star") & ~np.asarray(truth["saturated"])
            & (np.asarray(truth["nearest_px"]) < 20) & (np.asarray(truth["psf_sn"]) > 10))
    p, _ = purity(np.asarray(leaf["base_SdssCentroid_x"]), np.asarray(leaf["base_SdssCentroid_y"]),
                  truth)
    return {"complete_7_10": cf, "n_7_10": nf, "complete_20": cb, "n_20": nb,
            "complete_near": float((m.det_index[near] >= 0).mean()) if near.any() else np.nan,
            "n_near": int(near.sum()), "purity": p, "leaves": len(leaf)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--field", choices=["pairs", "survey", "default", "both"], default="both",
                    help="both: pairs and survey")
    ap.add_argument("--fwhm", type=float, default=3.75, help="PSF FWHM in pixels")
    ap.add_argument("--pixel-scale", type=float, default=0.2)
    ap.add_argument("--separation", type=float, default=2.0, help="pair separation / FWHM")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--true-psf", action="store_true",
                    help="install the simulation's PSF and skip measuring it (characterize."
                         "doMeasurePsf=false): the deblender's numbers without the PSF model's")
    args = ap.parse_args()
    config = apply_overrides(DetectConfig(), args.set
                             + (["characterize.doMeasurePsf=false"] if args.true_psf else []))
    common = dict(pixel_scale_arcsec=args.pixel_scale, fwhm_arcsec=args.fwhm * args.pixel_scale,
                  pair_separation_fwhm=args.separation)
    fields = {
        "pairs": SimulationConfig(width=2048, height=2048, n_stars=300, n_galaxies=100,
                                  n_pairs=100, pair_mag_range=(17.0, 19.5),
                                  min_separation_px=30.0, seed=11 if args.seed is None
                                  else args.seed, **common),
        "survey": SimulationConfig(width=2048, height=2048, n_stars=1400, n_galaxies=300,
                                   n_pairs=10, min_separation_px=10.0,
                                   seed=3 if args.seed is None else args.seed, **common),
        "default": SimulationConfig(seed=0 if args.seed is None else args.seed, **common),
    }
    for name, cfg in fields.items():
        if args.field != name and (args.field != "both" or name == "default"):
            continue
        sim = simulate_exposure(cfg)
        if args.true_psf:
            sim.exposure.psf = sim.psf
        t0 = time.perf_counter()
        result = run_detect(sim.exposure, config)
        dt = time.perf_counter() - t0
        score = score_pairs if name == "pairs" else score_survey
        figures = score(sim, result.catalog)
        text = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in figures.items())
        print(f"{name} fwhm={args.fwhm:g}px sep={args.separation:g} {text} "
              f"parents={result.summary['n_parents']} seconds={dt:.1f}", flush=True)


if __name__ == "__main__":
    main()
