"""PSF star selection in the manner of LSST's objectSize star selector.

Point sources share the PSF's size; galaxies spread above it. LSST's ObjectSizeStarSelector
clusters the sizes of the bright candidates and takes the cluster of the smallest sizes,
sigma-clipped about its median. Two departures, both because that selector assumes one PSF
size over the field and a stellar locus that is the densest cluster:

- the PSF's size may change across the field (by ±15 % and more), which smears one global
  locus into the galaxies; the locus is therefore followed as a smooth function of position
  (a low-order polynomial in log size fitted to the members, refitted as they are refined),
  and sources are judged by their size relative to it;
- galaxies may outnumber stars many times, so that the densest cluster of sizes is made of
  compact galaxies; among the clusters holding a fair share of the candidates, the one of
  smallest size is taken (stars are the smallest real objects), not the most populous.
"""

from __future__ import annotations

import numpy as np

from app.engine.psf_model import poly_terms

LOCUS_WINDOW = 0.04  # half-width in log size of the window that finds clusters
MIN_CLUSTER_SHARE = 0.25  # a cluster must hold this share of the best one's members
MIN_CLUSTER = 3  # ... and at least this many
MIN_SIZE_PX = 0.35  # smaller "sources" are single hot pixels or cosmic rays (σ of a pixel 0.29)
MIN_SPREAD = 0.01  # the locus is never taken narrower than this in log size
STARS_PER_TERM = 6  # members per polynomial term before a higher order of the locus is fitted


def select_stars(radius: np.ndarray, x: np.ndarray, y: np.ndarray, snr: np.ndarray,
                 ok: np.ndarray, width: int, height: int) -> np.ndarray:
    """Indices of the candidates on the stellar locus.

    ``radius`` is each candidate's adaptive-moment determinant radius (pixels), ``x``, ``y``
    its position (array frame), ``snr`` its S/N, ``ok`` which candidates may be stars at all
    (clean, measured). Returns indices into the inputs.
    """
    idx = np.flatnonzero(ok & np.isfinite(radius) & (radius > MIN_SIZE_PX))
    if len(idx) == 0:
        return idx
    logr = np.log(radius[idx])
    u = 2 * x[idx] / max(width - 1, 1) - 1
    v = 2 * y[idx] / max(height - 1, 1) - 1
    trend = np.zeros(len(idx))
    members = _smallest_cluster(logr)
    for _ in range(4):
        trend = _locus_trend(logr, u, v, members, snr[idx])
        resid = logr - trend
        centre = np.median(resid[members])
        spread = max(1.4826 * np.median(np.abs(resid[members] - centre)), MIN_SPREAD)
        new = np.abs(resid - centre) < max(3 * spread, 0.03)
        if np.array_equal(new, members) or new.sum() < MIN_CLUSTER:
            break
        members = new
    return idx[members]


def _smallest_cluster(logr: np.ndarray) -> np.ndarray:
    """Members of the smallest-size cluster that holds a fair share of the candidates."""
    counts = (np.abs(logr[:, None] - logr[None, :]) < LOCUS_WINDOW).sum(axis=1)
    needed = max(MIN_CLUSTER, int(MIN_CLUSTER_SHARE * counts.max()))
    if counts.max() < needed:
        needed = counts.max()
    dense = np.flatnonzero(counts >= needed)
    # the smallest dense size, then the local peak of counts just above it
    start = logr[dense].min()
    near = dense[logr[dense] < start + 2 * LOCUS_WINDOW]
    best = near[np.argmax(counts[near])]
    return np.abs(logr - logr[best]) < LOCUS_WINDOW


def _locus_trend(logr: np.ndarray, u: np.ndarray, v: np.ndarray, members: np.ndarray,
                 snr: np.ndarray) -> np.ndarray:
    """log size of the locus at every candidate: a clipped polynomial in position fitted to
    the members, of an order their number supports (a constant for a handful)."""
    n = int(members.sum())
    order = 0
    while order < 2 and n >= STARS_PER_TERM * (order + 2) * (order + 3) // 2:
        order += 1
    a = poly_terms(u, v, order)
    # weights by S/N, capped so a few bright stars do not decide the shape alone
    w = np.sqrt(np.clip(np.nan_to_num(snr), 1.0, 200.0))
    keep = members.copy()
    coef = np.zeros(a.shape[1])
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(a[keep] * w[keep, None], logr[keep] * w[keep], rcond=None)
        r = logr - a @ coef
        mad = 1.4826 * np.median(np.abs(r[keep])) + 1e-6
        new = members & (np.abs(r) < 4 * max(mad, MIN_SPREAD))
        if new.sum() < a.shape[1] or np.array_equal(new, keep):
            break
        keep = new
    return a @ coef
