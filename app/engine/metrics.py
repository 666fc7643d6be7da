"""The numbers a detect catalog is judged by against a simulation's truth (issue 19's targets).

Every metric here is computed from the truth (positions, fluxes, kinds, the true PSF, each
star's PSF S/N and Cramér–Rao bound) and the catalog alone, so the same code scores any engine:

* star completeness per bin of true PSF S/N (7–10, 10–20, > 20, isolated > 20) and purity;
* isolated bright stars (S/N > 50): median PSF flux / (true flux × EE₁₂), EE₁₂ the true PSF's
  light within the calibFlux radius (12 px, LSST's ``base_CircularApertureFlux_12_0``) at each
  star, since LSST's aperture corrections tie PSF fluxes to that aperture;
* faint stars (10 ≤ S/N < 30, no other object within max(10 px, 2.5 FWHM)): ``(F −
  F_true·EE₁₂)/σ`` median and robust std. The issue says S/N < 30; below S/N 10 a 5σ detection
  keeps the stars that fluctuated up, so their χ is biased by the selection, not the
  photometry. The robust std is the 4σ-clipped one: a MAD-based std has 37 % efficiency, so
  on the few hundred faint stars a field holds its own scatter (±0.07) would exceed the
  target's ±0.05; the clipped std's is ±0.03 on 600 stars;
* blank sky: forced PSF photometry (``run_forced``) at ≥ 2000 random positions where the true
  sources put less than 0.05 σ into a PSF fit, F/σ mean and std;
* centroids of isolated stars: scatter about the common offset (a smooth quadratic over the
  field, which a WCS absorbs) in units of each star's bound (S/N > 50), and the absolute rms
  (S/N > 100);
* pairs of stars: both deblended into children of one parent, each child's PSF flux within
  10 % of its truth × EE₁₂.

A metric whose sample is smaller than it needs is reported with ``passed = None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.stats import sigma_clipped_stats
from astropy.table import Table
from scipy.signal import oaconvolve

from app.engine.exposure import Exposure
from app.engine.forced import run_forced
from app.engine.simulate import SimulatedExposure
from app.engine.truth import Match, leaf_rows, match_positions, purity

CALIB_RADIUS = 12.0  # px: slot_CalibFlux = base_CircularApertureFlux_12_0, as LSST
SN_BINS = ((7.0, 10.0), (10.0, 20.0), (20.0, np.inf))
BLANK_POSITIONS = 2000
BLANK_CONTAMINATION = 0.05  # × σ of a PSF fit: what the true sources may add at a blank position
MIN_SAMPLE = {"completeness": 20, "flux": 20, "faint": 40, "blank": BLANK_POSITIONS,
              "centroid": 20, "centroid_bright": 10, "pairs": 15, "purity": 100}


@dataclass(frozen=True)
class Targets:
    """Issue 19's numbers. The 10–20 bin has no number there: it is held to the 7–10 one."""

    completeness_7_10: float = 0.95
    completeness_10_20: float = 0.95
    completeness_above_20: float = 0.99
    completeness_isolated: float = 0.995
    purity: float = 0.995
    flux_ratio_tolerance: float = 0.005
    faint_median: float = 0.1
    faint_std: tuple[float, float] = (0.95, 1.05)
    blank_mean_sigmas: float = 3.0  # |mean F/σ| ≤ this / √N
    blank_std: tuple[float, float] = (0.95, 1.05)
    centroid_crb_ratio: float = 1.15
    centroid_bright_px: float = 0.02
    pairs_deblended: float = 0.90
    pairs_flux: float = 0.90
    pairs_tolerance: float = 0.10
    isolated_stars: bool = True  # a crowded field has too few to judge flux, χ, centroids by


CROWDED = Targets(completeness_7_10=0.90, completeness_10_20=0.90, completeness_above_20=0.97,
                  purity=0.98, isolated_stars=False)


@dataclass
class Metric:
    """One number, its sample size, the target it is held to and whether it meets it."""

    name: str
    value: float
    n: int
    target: str
    passed: bool | None  # None: the sample is too small to judge

    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]


@dataclass
class Scored:
    """The per-star arrays the metrics share."""

    truth: Table
    catalog: Table  # leaves only (isolated sources and deblended children)
    match: Match
    ee: np.ndarray  # true EE within CALIB_RADIUS at every truth position
    star: np.ndarray
    isolated: np.ndarray
    separated: np.ndarray  # isolated enough for faint stars' χ
    extra: dict[str, float] = field(default_factory=dict)


def _judge(name: str, value: float, n: int, need: str, target: str, ok: bool) -> Metric:
    enough = n >= MIN_SAMPLE[need]
    return Metric(name, float(value), int(n), target,
                  (bool(ok) if np.isfinite(value) else False) if enough else None)


def match_radius(fwhm: float) -> float:
    """Detections within max(3 px, 0.75 FWHM) of a true position match it."""
    return max(3.0, 0.75 * fwhm)


def faint_isolation_radius(fwhm: float) -> float:
    """Faint stars for χ: no other true object within max(10 px, 2.5 FWHM)."""
    return max(10.0, 2.5 * fwhm)


def isolation_radius(fwhm: float) -> float:
    """A star is isolated when no other true object lies within max(10 px, 4 FWHM)."""
    return max(10.0, 4.0 * fwhm)


def score(sim: SimulatedExposure, catalog: Table) -> Scored:
    """Match the catalog's leaves to the truth and select the stars the metrics use: unsaturated,
    their centre ≥ 2 px inside the image (and, for the flux metrics, the calibFlux aperture)."""
    t = sim.truth
    fwhm = float(np.median(t["fwhm_px"])) if len(t) else 1.0
    leaves = catalog[leaf_rows(catalog)]
    match = match_positions(np.asarray(leaves["base_SdssCentroid_x"], float),
                            np.asarray(leaves["base_SdssCentroid_y"], float),
                            np.asarray(t["x"]), np.asarray(t["y"]), match_radius(fwhm))
    x, y = np.asarray(t["x"]), np.asarray(t["y"])
    h, w = sim.exposure.shape
    inside = (x >= 2) & (y >= 2) & (x <= w - 3) & (y <= h - 3)
    star = (np.asarray(t["kind"]) == "star") & ~np.asarray(t["saturated"]) & inside
    margin = CALIB_RADIUS + 2
    in_aperture = (x >= margin) & (y >= margin) & (x <= w - 1 - margin) & (y <= h - 1 - margin)
    isolated = (star & in_aperture & ~np.asarray(t["is_pair"])
                & (np.asarray(t["nearest_px"]) >= isolation_radius(fwhm)))
    separated = (star & in_aperture & ~np.asarray(t["is_pair"])
                 & (np.asarray(t["nearest_px"]) >= faint_isolation_radius(fwhm)))
    ee = sim.psf.encircled_energies(x, y, CALIB_RADIUS) if len(t) else np.zeros(0)
    return Scored(t, leaves, match, np.asarray(ee), star, isolated, separated)


def _column(s: Scored, name: str, select: np.ndarray) -> np.ndarray:
    """Catalog column ``name`` for the truth rows ``select`` (which must be matched)."""
    return np.asarray(s.catalog[name])[s.match.det_index[select]]


def _good_flux(s: Scored, select: np.ndarray) -> np.ndarray:
    """``select`` narrowed to matched rows with a finite, unflagged PSF flux."""
    out = select & (s.match.det_index >= 0)
    if out.any():
        ok = np.isfinite(_column(s, "base_PsfFlux_instFlux", out))
        ok &= ~_column(s, "base_PsfFlux_flag", out).astype(bool)
        out[np.flatnonzero(out)[~ok]] = False
    return out


def completeness(s: Scored, targets: Targets) -> list[Metric]:
    sn = np.asarray(s.truth["psf_sn"])
    found = s.match.det_index >= 0
    goals = (targets.completeness_7_10, targets.completeness_10_20,
             targets.completeness_above_20)
    out = []
    for (lo, hi), goal in zip(SN_BINS, goals, strict=True):
        sel = s.star & (sn >= lo) & (sn < hi)
        label = f"{lo:g}-{hi:g}" if np.isfinite(hi) else f">{lo:g}"
        value = float(found[sel].mean()) if sel.any() else np.nan
        out.append(_judge(f"completeness S/N {label}", value, int(sel.sum()), "completeness",
                          f">= {goal:g}", value >= goal))
    sel = s.isolated & (sn >= 20)
    value = float(found[sel].mean()) if sel.any() else np.nan
    goal = targets.completeness_isolated
    out.append(_judge("completeness isolated S/N >20", value, int(sel.sum()), "completeness",
                      f">= {goal:g}", value >= goal))
    return out


def purity_metric(s: Scored, targets: Targets) -> Metric:
    cat = s.catalog
    p, _ = purity(np.asarray(cat["base_SdssCentroid_x"], float),
                  np.asarray(cat["base_SdssCentroid_y"], float), s.truth)
    return _judge("purity", p, len(cat), "purity", f">= {targets.purity:g}", p >= targets.purity)


def flux_ratio(s: Scored, targets: Targets) -> Metric:
    sel = _good_flux(s, s.isolated & (np.asarray(s.truth["psf_sn"]) > 50))
    ratio = (_column(s, "base_PsfFlux_instFlux", sel)
             / (np.asarray(s.truth["flux"])[sel] * s.ee[sel]))
    value = float(np.median(ratio)) if sel.any() else np.nan
    tol = targets.flux_ratio_tolerance
    return _judge("PSF flux / (F_true EE12), S/N>50", value, int(sel.sum()), "flux",
                  f"1 ± {tol:g}", abs(value - 1) <= tol)


def _robust_std(z: np.ndarray) -> float:
    """4σ-clipped standard deviation (iterated about the median)."""
    if not z.size:
        return np.nan
    return float(sigma_clipped_stats(z, sigma=4.0, maxiters=10, cenfunc="median")[2])


def faint_chi(s: Scored, targets: Targets) -> list[Metric]:
    sn = np.asarray(s.truth["psf_sn"])
    sel = _good_flux(s, s.separated & (sn >= 10) & (sn < 30))
    f = _column(s, "base_PsfFlux_instFlux", sel)
    err = _column(s, "base_PsfFlux_instFluxErr", sel)
    chi = (f - np.asarray(s.truth["flux"])[sel] * s.ee[sel]) / err
    chi = chi[np.isfinite(chi)]
    med = float(np.median(chi)) if chi.size else np.nan
    std = _robust_std(chi)
    lo, hi = targets.faint_std
    return [
        _judge("faint chi median, S/N 10-30", med, chi.size, "faint",
               f"|x| <= {targets.faint_median:g}", abs(med) <= targets.faint_median),
        _judge("faint chi robust std", std, chi.size, "faint", f"{lo:g}-{hi:g}",
               lo <= std <= hi),
    ]


def blank_positions(sim: SimulatedExposure, n: int = BLANK_POSITIONS, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` random positions where the true sources add < 0.05 σ to a PSF fit.

    The expected forced flux of the noiseless sources, ``(model ⊛ P)/ΣP²`` with the true
    PSF at the centre, is compared with the fit's sky noise; positions also keep a PSF radius
    from the image's edge and from masked (SAT, BAD, EDGE) pixels.
    """
    h, w = sim.exposure.shape
    kernel = sim.psf.kernel((w - 1) / 2.0, (h - 1) / 2.0, 41)
    p2 = float((kernel**2).sum())
    contamination = oaconvolve(sim.model, kernel[::-1, ::-1], mode="same") / p2
    sky_var = float(np.median(sim.exposure.variance))  # the sky's, where sources are sparse
    sigma = np.sqrt(sky_var * p2) / p2
    ok = np.abs(contamination) < BLANK_CONTAMINATION * sigma
    masked = sim.exposure.mask != 0
    if masked.any():
        ok &= oaconvolve(masked.astype(np.float32), np.ones((41, 41), np.float32),
                         mode="same") < 0.5
    border = np.zeros_like(ok)
    border[21:-21, 21:-21] = True
    yy, xx = np.nonzero(ok & border)
    rng = np.random.default_rng(seed)
    pick = rng.choice(xx.size, size=min(n, xx.size), replace=False)
    jitter = rng.uniform(-0.5, 0.5, size=(2, pick.size))
    return xx[pick] + jitter[0], yy[pick] + jitter[1]


def blank_sky(sim: SimulatedExposure, result_exposure: Exposure, targets: Targets
              ) -> list[Metric]:
    """Forced PSF photometry at :func:`blank_positions` on the characterized exposure."""
    x, y = blank_positions(sim)
    z = np.zeros(0)
    if x.size:
        forced = run_forced(result_exposure, Table({"x": x, "y": y}))
        z = (np.asarray(forced["base_PsfFlux_instFlux"], float)
             / np.asarray(forced["base_PsfFlux_instFluxErr"], float))
        z = z[np.isfinite(z) & ~np.asarray(forced["base_PsfFlux_flag"], bool)]
    mean = float(np.mean(z)) if z.size else np.nan
    std = float(np.std(z)) if z.size else np.nan
    bound = targets.blank_mean_sigmas / np.sqrt(max(z.size, 1))
    lo, hi = targets.blank_std
    return [
        _judge("blank-sky forced F/sigma mean", mean, z.size, "blank", f"|x| <= {bound:.3f}",
               abs(mean) <= bound),
        _judge("blank-sky forced F/sigma std", std, z.size, "blank", f"{lo:g}-{hi:g}",
               lo <= std <= hi),
    ]


def centroids(s: Scored, targets: Targets) -> list[Metric]:
    sn = np.asarray(s.truth["psf_sn"])
    sel = s.isolated & (sn > 50) & (s.match.det_index >= 0)
    if sel.any():
        bad = (_column(s, "base_SdssCentroid_flag", sel).astype(bool)
               | ~np.isfinite(_column(s, "base_SdssCentroid_x", sel)))
        sel[np.flatnonzero(sel)[bad]] = False
    dx = _column(s, "base_SdssCentroid_x", sel) - np.asarray(s.truth["x"])[sel]
    dy = _column(s, "base_SdssCentroid_y", sel) - np.asarray(s.truth["y"])[sel]
    bx, by = np.asarray(s.truth["crb_x"])[sel], np.asarray(s.truth["crb_y"])[sel]
    ratio = _scatter_about_offset(np.asarray(s.truth["x"])[sel], np.asarray(s.truth["y"])[sel],
                                  dx, dy, bx, by)
    bright = sn[sel] > 100
    rms = float(np.sqrt(np.mean((dx[bright] ** 2 + dy[bright] ** 2) / 2))) if bright.any() \
        else np.nan
    return [
        _judge("centroid scatter / CRB, S/N>50", ratio, int(sel.sum()), "centroid",
               f"<= {targets.centroid_crb_ratio:g}", ratio <= targets.centroid_crb_ratio),
        _judge("centroid rms px, S/N>100", rms, int(bright.sum()), "centroid_bright",
               f"<= {targets.centroid_bright_px:g}", rms <= targets.centroid_bright_px),
    ]


def _scatter_about_offset(x: np.ndarray, y: np.ndarray, dx: np.ndarray, dy: np.ndarray,
                          bx: np.ndarray, by: np.ndarray) -> float:
    """RMS of the centroid residuals in units of each star's bound, about their common offset:
    a smooth (quadratic) offset over the field, fitted with weights 1/bound², as an
    astrometric solution absorbs it; degrees of freedom counted. Constant below 30 stars."""
    n = x.size
    if n == 0:
        return np.nan
    if n >= 30:
        u, v = x / max(float(np.ptp(x)), 1.0), y / max(float(np.ptp(y)), 1.0)
        design = np.column_stack([np.ones(n), u, v, u * u, u * v, v * v])
    else:
        design = np.ones((n, 1))
    chi2 = 0.0
    for d, b in ((dx, bx), (dy, by)):
        coef, *_ = np.linalg.lstsq(design / b[:, None], d / b, rcond=None)
        chi2 += float((((d - design @ coef) / b) ** 2).sum())
    return float(np.sqrt(chi2 / (2 * (n - design.shape[1])))) if n > design.shape[1] else np.nan


def pairs(s: Scored, targets: Targets) -> list[Metric]:
    """Pairs with both members fully on the image and flux ratio ≤ 5."""
    t = s.truth
    pid = np.asarray(t["pair_id"])
    parent = np.asarray(s.catalog["parent"])
    flux = np.asarray(s.catalog["base_PsfFlux_instFlux"], float)
    ids = [p for p in np.unique(pid[pid >= 0]) if s.star[pid == p].all()]
    two = good = 0
    for p in ids:
        members = np.flatnonzero(pid == p)
        d = s.match.det_index[members]
        if (d >= 0).all() and d[0] != d[1] and parent[d[0]] > 0 and parent[d[0]] == parent[d[1]]:
            two += 1
            ratio = flux[d] / (np.asarray(t["flux"])[members] * s.ee[members])
            good += bool(np.all(np.abs(ratio - 1) <= targets.pairs_tolerance))
    frac = two / len(ids) if ids else np.nan
    ok = good / two if two else np.nan
    return [
        _judge("pairs deblended into two children", frac, len(ids), "pairs",
               f">= {targets.pairs_deblended:g}", frac >= targets.pairs_deblended),
        _judge(f"pairs: both children within {targets.pairs_tolerance:.0%}", ok, two, "pairs",
               f">= {targets.pairs_flux:g}", ok >= targets.pairs_flux),
    ]


def bright_galaxy_fraction(s: Scored) -> tuple[float, int]:
    """Galaxies' share of the bright (PSF S/N ≥ 50) single-peak detections matched to truth:
    what a star selector sees, reported to check the simulation's ``bright_galaxy_fraction``."""
    cat = s.catalog
    single = (np.asarray(cat["parent"]) == 0)
    sn = np.asarray(cat["base_PsfFlux_instFlux"], float) / np.asarray(
        cat["base_PsfFlux_instFluxErr"], float)
    bright = single & (sn >= 50) & (s.match.det_matched >= 0)
    kinds = np.asarray(s.truth["kind"])[s.match.det_matched[bright]]
    return (float(np.mean(kinds == "galaxy")) if kinds.size else np.nan), int(kinds.size)


def evaluate(sim: SimulatedExposure, s: Scored, exposure: Exposure,
             targets: Targets = Targets()) -> list[Metric]:
    """Every metric of a detect run on ``sim``: its catalog :func:`score`d, and its
    characterized exposure (for blank-sky forced photometry)."""
    isolated = [flux_ratio(s, targets), *faint_chi(s, targets), *centroids(s, targets)]
    if not targets.isolated_stars:
        for m in isolated:
            m.passed, m.target = None, "not judged"
    return [*completeness(s, targets), purity_metric(s, targets), *isolated[:3],
            *blank_sky(sim, exposure, targets), *isolated[3:], *pairs(s, targets)]
