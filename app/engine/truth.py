"""Scoring a catalog against a simulation's truth: matching, completeness and purity.

Tests, benchmarks and the demo all need the same matching, so it lives here once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from scipy.spatial import cKDTree


@dataclass
class Match:
    """For every truth row: index of the matched detection (-1 if none) and distance."""

    det_index: np.ndarray
    distance: np.ndarray
    det_matched: np.ndarray  # per detection: index of its truth row (-1 if none)


def match_positions(det_x: np.ndarray, det_y: np.ndarray, true_x: np.ndarray,
                    true_y: np.ndarray, radius: float) -> Match:
    """One-to-one nearest matching within ``radius`` pixels, closest pairs first."""
    nt, nd = len(true_x), len(det_x)
    det_index = np.full(nt, -1, dtype=np.int64)
    distance = np.full(nt, np.inf)
    det_matched = np.full(nd, -1, dtype=np.int64)
    if nt == 0 or nd == 0:
        return Match(det_index, distance, det_matched)
    tree = cKDTree(np.column_stack([det_x, det_y]))
    pairs = tree.query_ball_point(np.column_stack([true_x, true_y]), radius)
    ti = np.repeat(np.arange(nt), [len(p) for p in pairs])
    di = np.concatenate([np.asarray(p, dtype=np.int64) for p in pairs]) if len(ti) else ti
    d = np.hypot(det_x[di] - true_x[ti], det_y[di] - true_y[ti])
    for k in np.argsort(d, kind="stable"):
        if det_index[ti[k]] < 0 and det_matched[di[k]] < 0:
            det_index[ti[k]] = di[k]
            distance[ti[k]] = d[k]
            det_matched[di[k]] = ti[k]
    return Match(det_index, distance, det_matched)


def leaf_rows(catalog: Table) -> np.ndarray:
    """Sources that are objects (not blends): isolated sources and deblended children."""
    return np.asarray(catalog["deblend_nChild"]) == 0


def completeness_by_snr(truth: Table, match: Match, bins: list[tuple[float, float]],
                        select: np.ndarray | None = None) -> list[tuple[float, float, int, float]]:
    """(lo, hi, n_true, fraction detected) per bin of true PSF S/N."""
    sn = np.asarray(truth["psf_sn"])
    sel = np.ones(len(truth), bool) if select is None else select
    rows = []
    for lo, hi in bins:
        inbin = sel & (sn >= lo) & (sn < hi)
        n = int(inbin.sum())
        rows.append((lo, hi, n, float((match.det_index[inbin] >= 0).mean()) if n else np.nan))
    return rows


def purity(det_x: np.ndarray, det_y: np.ndarray, truth: Table, star_radius: float = 3.0
           ) -> tuple[float, np.ndarray]:
    """Fraction of detections lying on a real object, and the mask of those that do not.

    A detection is real if it is within ``star_radius`` pixels of a true star, or within
    the larger of that and 1.5 half-light radii of a true galaxy (whose centroid may wander
    on an extended, noisy profile).
    """
    tx, ty = np.asarray(truth["x"]), np.asarray(truth["y"])
    hlr_px = np.asarray(truth["hlr_arcsec"], float) / _pixel_scale(truth)
    radius = np.where(np.isfinite(hlr_px), np.maximum(star_radius, 1.5 * hlr_px), star_radius)
    if len(det_x) == 0:
        return 1.0, np.zeros(0, bool)
    tree = cKDTree(np.column_stack([tx, ty]))
    near = tree.query_ball_point(np.column_stack([det_x, det_y]), float(radius.max()))
    real = np.array([any(np.hypot(tx[j] - x, ty[j] - y) <= radius[j] for j in js)
                     for x, y, js in zip(det_x, det_y, near, strict=True)], dtype=bool)
    return float(real.mean()), ~real


def _pixel_scale(truth: Table) -> float:
    """Arcsec per pixel, from the truth table's PIXSCALE metadata (0.2 by default)."""
    return float(truth.meta.get("PIXSCALE", 0.2))
