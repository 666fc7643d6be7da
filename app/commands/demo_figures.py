"""The tutorial's matplotlib figures, drawn from what the API returned.

Images (planes, cutouts, overlays, the mask) come from the server as PNG; the plots here
are the ones the tutorial draws itself: a heavy footprint's pixels, forced vs detection flux
and the flux and S/N histograms. ``Figure`` objects, not pyplot: no global state, no display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure

DPI = 110


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def heavy_footprint(image: np.ndarray, mask: np.ndarray, source_id: int, path: Path) -> Path:
    """Tutorial figures 3 and 4: a heavy footprint's image pixels and its mask values."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    im = left.imshow(image, origin="lower", cmap="gray_r", interpolation="nearest")
    fig.colorbar(im, ax=left, label="counts")
    left.set_title(f"source {source_id}: heavy footprint pixels")
    values = np.unique(mask)
    cmap = ListedColormap(["white", "tab:green", "gold", "tab:red", "tab:purple"][:len(values)])
    bounds = np.append(values - 0.5, values[-1] + 0.5)
    mk = right.imshow(mask, origin="lower", cmap=cmap, norm=BoundaryNorm(bounds, cmap.N),
                      interpolation="nearest")
    bar = fig.colorbar(mk, ax=right, ticks=values, label="mask value")
    bar.ax.set_yticklabels([str(int(v)) for v in values])
    right.set_title("its mask (32 DETECTED, 48 EDGE|DETECTED)")
    for ax in (left, right):
        ax.set_xlabel("x (footprint box)")
    left.set_ylabel("y (footprint box)")
    return _save(fig, path)


def forced_vs_detection(detection: np.ndarray, forced: np.ndarray, forced_err: np.ndarray,
                        path: Path) -> Path:
    """Tutorial figure 5: detection PSF flux against forced PSF flux, one-to-one line."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    ok = np.isfinite(detection) & np.isfinite(forced)
    lo, hi = np.nanmin(detection[ok]) * 0.8, np.nanmax(detection[ok]) * 1.2
    ax.plot([lo, hi], [lo, hi], lw=0.8, color="black", label="1:1")
    ax.errorbar(detection[ok], forced[ok], yerr=forced_err[ok], fmt="o", ms=4, alpha=0.8,
                label="4 < S/N < 5 detections")
    ax.set_xlabel("detection base_PsfFlux_instFlux (counts)")
    ax.set_ylabel("forced base_PsfFlux_instFlux (counts)")
    ax.legend(loc="upper left")
    return _save(fig, path)


def flux_histograms(random: np.ndarray, faint: np.ndarray, path: Path) -> Path:
    """Tutorial figure 7: forced PSF flux at random blank positions and at faint detections."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    values = np.concatenate([random, faint])
    values = values[np.isfinite(values)]
    bins = np.linspace(values.min(), values.max(), 30)
    ax.hist(random[np.isfinite(random)], bins=bins, histtype="step", lw=2,
            label=f"random blank sky (N={np.isfinite(random).sum()})")
    ax.hist(faint[np.isfinite(faint)], bins=bins, histtype="step", lw=2,
            label=f"4 < S/N < 5 detections (N={np.isfinite(faint).sum()})")
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_xlabel("forced base_PsfFlux_instFlux (counts)")
    ax.set_ylabel("number of forced positions")
    ax.legend(loc="upper right")
    return _save(fig, path)


def snr_histogram(snr: np.ndarray, threshold: float, path: Path) -> Path:
    """PSF S/N of every detected source, with the detection threshold marked."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    good = snr[np.isfinite(snr) & (snr > 0)]
    ax.hist(good, bins=np.logspace(np.log10(max(good.min(), 0.5)), np.log10(good.max()), 40),
            histtype="stepfilled", alpha=0.7)
    ax.axvline(threshold, color="black", ls="--", lw=1, label=f"thresholdValue {threshold:g}")
    ax.set_xscale("log")
    ax.set_xlabel("base_PsfFlux S/N")
    ax.set_ylabel("number of sources")
    ax.legend()
    return _save(fig, path)
