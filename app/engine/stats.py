"""Robust statistics, vectorized along an axis, as afw.math's clipped statistics.

``clipped_stats`` follows afw's MEANCLIP/STDEVCLIP: start from the median and an IQR-based
width, then iterate keeping values within ``nsigma`` of the centre. NaNs are ignored, so a
masked pixel is simply set to NaN by the caller. Each slice is sorted once (numpy's SIMD sort
of float32 is the cheapest step here): quantiles and the clipped median are then index
look-ups, the values kept by a clip are a contiguous run of the sorted slice found by two
counts, and their sums come from the short runs at either end, never from a full pass.
"""

from __future__ import annotations

import numpy as np

IQR_TO_SIGMA = 0.741301109  # 1 / (2 * 0.6745)


def _at(sorted_: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Linear interpolation of each sorted slice at fractional index ``pos``."""
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, sorted_.shape[-1] - 1)
    a = np.take_along_axis(sorted_, lo[..., None], -1)[..., 0].astype(np.float64)
    b = np.take_along_axis(sorted_, hi[..., None], -1)[..., 0].astype(np.float64)
    return a + (pos - lo) * (b - a)


def _run_sums(data: np.ndarray, start: np.ndarray, stop: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Σx and Σx² (float64) of ``data[..., start:stop]`` for each slice's own run."""
    span = np.arange(int((stop - start).max(initial=0)))
    idx = np.minimum(start[..., None] + span, data.shape[-1] - 1)
    x = np.take_along_axis(data, idx, -1).astype(np.float64)
    x = np.where(span < (stop - start)[..., None], x, 0.0)
    return x.sum(axis=-1), (x * x).sum(axis=-1)


def _finite_totals(data: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Count, Σx and Σx² (float64) of the finite values of each sorted slice.

    The non-finite tail of each slice is zeroed for the sums and then set to NaN, in place
    rather than in a zeroed copy: later steps read only the first ``n`` values of a slice.
    """
    bad = ~np.isfinite(data)
    n = data.shape[-1] - bad.sum(axis=-1)
    np.copyto(data, np.float32(0), where=bad)
    totals = (data.sum(axis=-1, dtype=np.float64),
              np.einsum("...i,...i->...", data, data, dtype=np.float64))
    np.copyto(data, np.float32(np.nan), where=bad)
    return n, totals


def _count_sorted(data: np.ndarray, n: np.ndarray, bound: np.ndarray, *, strict: bool
                  ) -> np.ndarray:
    """How many of the first ``n`` values of each sorted slice are < ``bound`` (``strict``)
    or ≤ it: a binary search of every slice at once, ~log2(length) small gathers instead of
    a comparison of every value."""
    lo, hi = np.zeros_like(n), n.copy()
    active = lo < hi
    while active.any():
        mid = (lo + hi) // 2
        value = np.take_along_axis(data, np.minimum(mid, data.shape[-1] - 1)[..., None],
                                   -1)[..., 0]
        below = (value < bound) if strict else (value <= bound)
        lo = np.where(active & below, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)
        active = lo < hi
    return lo


def _kept_sums(data: np.ndarray, totals: tuple[np.ndarray, np.ndarray], n: np.ndarray,
               first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Σx and Σx² of the sorted run ``[first, last)``: summed directly, or as the totals
    minus the clipped head and tail, whichever reads fewer values."""
    if (last - first).max(initial=0) <= first.max(initial=0) + (n - last).max(initial=0):
        return _run_sums(data, first, last)
    head = _run_sums(data, np.zeros_like(first), first)
    tail = _run_sums(data, last, n)
    return totals[0] - head[0] - tail[0], totals[1] - head[1] - tail[1]


def nanmedian_rows(values: np.ndarray) -> np.ndarray:
    """Median of the non-NaN values of each row (NaN for an empty row), as ``np.nanmedian``
    along the last axis but with one sort for all rows rather than a loop over them."""
    data = np.sort(values, axis=-1)  # NaNs sort last
    n = (~np.isnan(data)).sum(axis=-1)
    lo = np.take_along_axis(data, np.maximum(n - 1, 0)[:, None] // 2, -1)[:, 0]
    hi = np.take_along_axis(data, np.maximum(n // 2, 0)[:, None], -1)[:, 0]
    return np.where(n > 0, (lo + hi) / data.dtype.type(2), np.nan)


def _quantiles(data: np.ndarray, fractions: tuple[float, ...]) -> list[float]:
    """Linearly interpolated quantiles of a 1-d array (reordered in place) by partitioning."""
    pos = [f * (data.size - 1) for f in fractions]
    idx = sorted({int(np.floor(p)) for p in pos} | {min(int(np.floor(p)) + 1, data.size - 1)
                                                   for p in pos})
    data.partition(idx)
    out = []
    for p in pos:
        lo = int(np.floor(p))
        a, b = float(data[lo]), float(data[min(lo + 1, data.size - 1)])
        out.append(a + (p - lo) * (b - a))
    return out


def _clipped_stats_1d(values: np.ndarray, nsigma: float, niter: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``clipped_stats`` of one flat array: quantiles by partitioning, not sorting (a
    single slice needs only a few order statistics), and masked float64 sums."""
    data = values[np.isfinite(values)]
    if data.size == 0:
        return np.array(np.nan), np.array(np.nan), np.array(np.nan)
    q25, centre, q75 = _quantiles(data, (0.25, 0.5, 0.75))
    width = IQR_TO_SIGMA * (q75 - q25)
    kept = data
    for _ in range(niter):
        lo, hi = np.float32(centre - nsigma * width), np.float32(centre + nsigma * width)
        keep = (data >= lo) & (data <= hi)
        if not keep.any():
            break
        kept = data[keep]
        centre = float(kept.sum(dtype=np.float64)) / kept.size
        mean_sq = float(np.einsum("i,i->", kept, kept, dtype=np.float64)) / kept.size
        width = np.sqrt(max(mean_sq - centre * centre, 0.0))
    (median,) = _quantiles(kept if kept is not data else data.copy(), (0.5,))
    return np.array(centre), np.array(median), np.array(width)


def clipped_stats(
    values: np.ndarray, *, nsigma: float = 3.0, niter: int = 3, axis: int | None = None,
    overwrite_input: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sigma-clipped (mean, median, stdev) of ``values`` along ``axis``, NaNs ignored.

    Returns arrays (0-d when ``axis`` is None); slices without finite values give NaN.
    Sums are accumulated in float64. ``overwrite_input`` lets a float32 ``values`` be
    sorted in place, saving a copy of a large array the caller no longer needs.
    """
    data = np.asarray(values, dtype=np.float32)
    if axis is None:
        return _clipped_stats_1d(data.reshape(-1), nsigma, niter)
    data = np.moveaxis(data, axis, -1)
    if overwrite_input and np.shares_memory(data, values):
        data.sort(axis=-1)  # NaNs sort last
    else:
        data = np.sort(data, axis=-1)
    if np.isneginf(data[..., :1]).any():  # keep the finite values first: -inf counts as NaN
        data = np.sort(np.where(np.isneginf(data), np.float32(np.nan), data), axis=-1)
    n, totals = _finite_totals(data)
    top = np.maximum(n - 1, 0).astype(np.float64)
    centre = _at(data, 0.5 * top)
    width = IQR_TO_SIGMA * (_at(data, 0.75 * top) - _at(data, 0.25 * top))
    first = np.zeros_like(n)
    last = n
    for _ in range(niter):
        lo = (centre - nsigma * width).astype(np.float32)[..., None]
        hi = (centre + nsigma * width).astype(np.float32)[..., None]
        new_first = _count_sorted(data, n, lo[..., 0], strict=True)
        new_last = _count_sorted(data, n, hi[..., 0], strict=False)
        count = new_last - new_first
        if not count.any():
            break
        first, last = new_first, new_last
        s1, s2 = _kept_sums(data, totals, n, first, last)
        safe = np.maximum(count, 1)
        centre = s1 / safe
        width = np.sqrt(np.maximum(s2 / safe - centre * centre, 0.0))
    kept = last - first
    median = _at(data, first + np.maximum(kept - 1, 0) / 2.0)
    empty = kept <= 0
    return (
        np.where(empty, np.nan, centre),
        np.where(empty, np.nan, median),
        np.where(empty, np.nan, width),
    )
