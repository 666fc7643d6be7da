"""Aperture corrections: a flux's ratio to a large aperture, as a smooth field over the image.

LSST's ApCorrMap: measured on bright point sources, one field per corrected flux
(``base_PsfFlux``, ``base_GaussianFlux``), applied to every source measured on the exposure,
forced measurements included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.engine.fields import ChebyshevBoundedField
from app.engine.measure.context import MeasurementContext
from app.engine.measure.plugins.flux import naive_aperture_sums

APCORR_FLUXES = ("base_PsfFlux", "base_GaussianFlux")
APCORR_MIN_STARS = 6
APCORR_MIN_SNR = 50.0
MIN_RATIO_ERR = 1e-6  # a star's ratio is never known better than this
CLEAN = ["SAT", "EDGE", "BAD", "INTRP", "NO_DATA", "CR", "SUSPECT"]


@dataclass
class ApCorr:
    """One aperture-correction field (a Chebyshev series over the image, array frame), the
    uncertainty of its mean, and the number of stars it was fitted to (0: not measured
    here, e.g. read from an archive)."""

    field: ChebyshevBoundedField
    err: float
    n_stars: int

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The correction at array-frame positions."""
        return self.field(x, y)


def fit_apcorr(x: np.ndarray, y: np.ndarray, ratio: np.ndarray, err: np.ndarray, width: int,
               height: int) -> ApCorr | None:
    """Weighted, clipped fit of the ratio: a constant, or linear in position where the stars
    show a gradient.

    Each star's ratio carries the noise of a large aperture (several per cent for a star of
    PSF S/N 50), so a gradient fitted to a few dozen of them is mostly noise, and applied to
    every flux it would add that noise to them all. The linear field is kept only when it
    fits the stars better than the constant by more than its two extra parameters explain
    (the Bayesian information criterion, on the stars both fits keep).
    """
    if len(ratio) < APCORR_MIN_STARS:
        return None
    constant = _clipped_fit(x, y, ratio, err, width, height, 0)
    if constant is None:
        return None
    linear = (_clipped_fit(x, y, ratio, err, width, height, 1)
              if len(ratio) >= 3 * APCORR_MIN_STARS else None)
    if linear is None:
        return constant[0]
    keep = constant[1] & linear[1]
    err = np.maximum(err[keep], MIN_RATIO_ERR)
    chi2 = [float((((ratio[keep] - f[0](x[keep], y[keep])) / err) ** 2).sum())
            for f in (constant, linear)]
    # stars that scatter more than their errors say (neighbours, PSF-model error) would
    # make any gradient look significant: judge it against their real scatter
    scatter = max(chi2[1] / max(keep.sum() - 3, 1), 1.0)
    return linear[0] if (chi2[0] - chi2[1]) / scatter > 2 * np.log(keep.sum()) else constant[0]


def _clipped_fit(x: np.ndarray, y: np.ndarray, ratio: np.ndarray, err: np.ndarray, width: int,
                 height: int, order: int) -> tuple[ApCorr, np.ndarray] | None:
    """The field of this polynomial order fitted with 3σ clipping, and the stars it kept;
    None when fewer than ``APCORR_MIN_STARS`` remain."""
    bbox = (0, 0, width - 1, height - 1)
    err = np.maximum(err, MIN_RATIO_ERR)
    wts = 1.0 / err**2
    keep = np.ones(len(ratio), dtype=bool)
    field = ChebyshevBoundedField.constant(bbox, 1.0)
    for _ in range(3):
        field = ChebyshevBoundedField.fit(bbox, x[keep], y[keep], ratio[keep],
                                          np.sqrt(wts[keep]), order_x=order)
        resid = (ratio - field(x, y)) / err
        keep = np.abs(resid) < 3 * max(1.4826 * np.median(np.abs(resid[keep])), 1.0)
        if keep.sum() < APCORR_MIN_STARS:
            return None
    err_mean = float(1.0 / np.sqrt(wts[keep].sum()))
    return ApCorr(field, err_mean, int(keep.sum())), keep


def measure_ap_corr(ctx: MeasurementContext, out: dict[str, np.ndarray], candidates: np.ndarray,
                    radius: float) -> dict[str, ApCorr]:
    """Correction fields from the ``candidates`` that are clean, bright point sources.

    For each flux in ``APCORR_FLUXES`` present in ``out``: the ratio of the reference
    aperture flux (``radius``, local sky) to that flux, fitted over the image.
    """
    ref, ref_err = reference_flux(ctx, radius)
    n = ctx.n_sources
    clean = candidates & ~ctx.mask_in_footprints(ctx.exposure.planes.bitmask(CLEAN))
    psf = out.get("base_PsfFlux_instFlux")
    gauss = out.get("base_GaussianFlux_instFlux")
    pointlike = np.ones(n, dtype=bool)
    if psf is not None and gauss is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            r = psf / gauss
            pointlike = np.abs(r - np.nanmedian(r[clean])) < 0.05
    h, w = ctx.exposure.shape
    fields: dict[str, ApCorr] = {}
    for stem in APCORR_FLUXES:
        if f"{stem}_instFlux" not in out:
            continue
        flux = out[f"{stem}_instFlux"]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = ref / flux
            snr = flux / out[f"{stem}_instFluxErr"]
        use = clean & pointlike & np.isfinite(ratio) & (snr > APCORR_MIN_SNR) & ~out[
            f"{stem}_flag"]
        field = fit_apcorr(ctx.x[use], ctx.y[use], ratio[use], ref_err[use] / flux[use], w, h)
        if field is not None:
            fields[stem] = field
    return fields


def reference_flux(ctx: MeasurementContext, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Aperture flux within ``radius`` about a local sky from the annulus 1.5r–2r.

    Measured with the other sources replaced by noise (the star's wings outside every
    footprint stay), so neighbours do not count. The local sky removes a residual
    background, which a large aperture would otherwise multiply by πr².
    """
    (flux, outer, inner), (var, outer_var, inner_var) = naive_aperture_sums(
        ctx, [radius, 2.0 * radius, 1.5 * radius])
    area = np.pi * radius**2
    ann_area = np.pi * (4.0 - 2.25) * radius**2
    sky = (outer - inner) / ann_area
    ref = flux - sky * area
    ref_var = var + (area / ann_area) ** 2 * (outer_var - inner_var)
    return ref, np.sqrt(np.maximum(ref_var, 0))
