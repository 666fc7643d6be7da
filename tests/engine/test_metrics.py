"""The matrix's metrics on catalogs made from the truth: an ideal one meets every target, and
each metric catches the fault it is there for."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from app.engine.metrics import (
    Targets,
    blank_sky,
    centroids,
    completeness,
    faint_chi,
    flux_ratio,
    pairs,
    purity_metric,
    score,
)
from app.engine.psf import GaussianPsf
from app.engine.simulate import SimulationConfig, simulate_exposure


@pytest.fixture(scope="module")
def sim():
    return simulate_exposure(SimulationConfig(
        width=1024, height=1024, n_stars=1500, star_mag_range=(17.0, 23.3), n_galaxies=100,
        n_pairs=40, pair_mag_range=(17.5, 20.5), n_saturated=1, min_separation_px=10.0,
        seed=21))


def ideal_catalog(sim, seed=0, detect_sn=5.0):
    """A catalog as a perfect pipeline would make it: every object above ``detect_sn``,
    centroids scattered by their Cramér–Rao bounds, PSF fluxes tied to the 12-px aperture and
    scattered by their errors, each pair a parent with two children."""
    t = sim.truth
    rng = np.random.default_rng(seed)
    keep = np.asarray(t["psf_sn"]) >= detect_sn
    n = int(keep.sum())
    crb_x = np.nan_to_num(np.asarray(t["crb_x"])[keep], nan=0.05)
    crb_y = np.nan_to_num(np.asarray(t["crb_y"])[keep], nan=0.05)
    ee = sim.psf.encircled_energies(t["x"][keep], t["y"][keep], 12.0)
    err = np.asarray(t["flux"])[keep] / np.asarray(t["psf_sn"])[keep]
    pid = np.asarray(t["pair_id"])[keep]
    cat = Table({
        "id": np.arange(1, n + 1),
        "base_SdssCentroid_x": np.asarray(t["x"])[keep] + rng.normal(size=n) * crb_x,
        "base_SdssCentroid_y": np.asarray(t["y"])[keep] + rng.normal(size=n) * crb_y,
        "base_SdssCentroid_flag": np.zeros(n, bool),
        "base_PsfFlux_instFlux": np.asarray(t["flux"])[keep] * ee + rng.normal(size=n) * err,
        "base_PsfFlux_instFluxErr": err,
        "base_PsfFlux_flag": np.zeros(n, bool),
        "deblend_nChild": np.zeros(n, int),
        "parent": np.where(pid >= 0, 100000 + pid, 0),
    })
    return cat


def values(metrics):
    return {m.name: m for m in metrics}


def test_an_ideal_catalog_meets_every_target(sim):
    s = score(sim, ideal_catalog(sim))
    targets = Targets()
    metrics = [*completeness(s, targets), purity_metric(s, targets), flux_ratio(s, targets),
               *faint_chi(s, targets), *centroids(s, targets), *pairs(s, targets)]
    for m in metrics:
        assert m.passed, (m.name, m.value, m.n, m.target)
    got = values(metrics)
    assert got["faint chi robust std"].value == pytest.approx(1.0, abs=0.2)
    assert got["centroid scatter / CRB, S/N>50"].value == pytest.approx(1.0, abs=0.2)
    assert got["PSF flux / (F_true EE12), S/N>50"].n >= 40


def test_each_metric_catches_its_fault(sim):
    cat = ideal_catalog(sim, seed=1)
    t = sim.truth
    s = score(sim, cat)
    targets = Targets()
    # PSF fluxes tied to the total instead of the 12-px aperture: 1/EE12 ≈ 1.5 % high
    total = cat.copy()
    sel = s.match.det_matched >= 0
    rows = s.match.det_matched[sel]
    total["base_PsfFlux_instFlux"][sel] /= s.ee[rows]
    assert not flux_ratio(score(sim, total), targets).passed
    # errors underestimated by 20 %: the χ spread shows it
    tight = cat.copy()
    tight["base_PsfFlux_instFluxErr"] *= 0.8
    assert not values(faint_chi(score(sim, tight), targets))["faint chi robust std"].passed
    # centroids 30 % noisier than the bound
    noisy = cat.copy()
    rng = np.random.default_rng(2)
    extra = 0.7 * np.nan_to_num(np.asarray(t["crb_x"])[rows], nan=0.0)
    noisy["base_SdssCentroid_x"][sel] += rng.normal(size=sel.sum()) * extra
    noisy["base_SdssCentroid_y"][sel] += rng.normal(size=sel.sum()) * extra
    assert not centroids(score(sim, noisy), targets)[0].passed
    # a smooth offset over the field is a WCS term, not scatter
    shifted = cat.copy()
    shifted["base_SdssCentroid_x"] += 0.05 + 1e-4 * shifted["base_SdssCentroid_y"]
    assert centroids(score(sim, shifted), targets)[0].passed
    # the faintest detections lost, spurious ones added
    lossy = cat[np.isin(np.arange(len(cat)), np.flatnonzero(sel)[::8], invert=True)
                | (np.asarray(t["psf_sn"])[np.maximum(s.match.det_matched, 0)] > 20)]
    assert not completeness(score(sim, lossy), targets)[0].passed
    junk = Table({name: np.concatenate([np.asarray(cat[name]),
                                        np.full(20, cat[name][0])]) for name in cat.colnames})
    junk["base_SdssCentroid_x"][-20:] = np.linspace(5, 1000, 20)
    junk["base_SdssCentroid_y"][-20:] = 3.3
    assert not purity_metric(score(sim, junk), targets).passed
    # pairs left blended: one detection per pair
    blended = cat[(np.asarray(cat["parent"]) == 0)
                  | (np.arange(len(cat)) % 2 == 0)]
    blended["parent"] = 0
    assert not pairs(score(sim, blended), targets)[0].passed


def test_blank_sky_forced_fluxes_on_the_truth_are_pure_noise(sim):
    """The positions hold no true light: a PSF fit there is noise, N(0, 1) in F/σ (a Gaussian
    of the true size: forced photometry evaluates other models per position, slowly)."""
    exposure = sim.exposure.copy()
    exposure.psf = GaussianPsf(float(sim.psf.sigma(511.5, 511.5)))
    mean, std = blank_sky(sim, exposure, Targets())
    assert mean.n == 2000 and mean.passed and std.passed
    biased = exposure.copy()
    biased.image = biased.image + np.float32(0.1 * np.sqrt(np.median(biased.variance)))
    assert not blank_sky(sim, biased, Targets())[0].passed  # a sky left 0.1 σ too high
