"""Aperture corrections, LSST's MeasureApCorrTask (meas_algorithms measureApCorr.py).

For every corrected flux (``base_PsfFlux``, ``base_GaussianFlux``) the ratio of
``slot_CalibFlux`` (``base_CircularApertureFlux_12_0`` by default, LSST's choice) to that
flux is measured on the PSF stars and fitted over the image as a ChebyshevBoundedField of
order 2: starting from the median, ``numIter`` rounds keep the stars within ``numSigmaClip``
robust sigmas of the fit, lowering the order when too few stars remain for
``minDegreesOfFreedom``; the field is finally shifted so the residuals' median is zero.
Every measurement on the exposure, forced ones included, is then tied to that aperture: it
is what "total" means in skyphot's catalogs, and the catalog metadata names it.

Departures from MeasureApCorrTask, each for a shallower frame than LSST's:
- stars need PSF S/N ``minSignalToNoise`` (200, LSST's); when fewer than two reach it, the
  brightest down to ``fallbackSignalToNoise`` are used rather than no correction at all;
- a field outside ``validRange`` anywhere on the image (a ratio of 0.4 or 2.3 means the
  fluxes are wrong, not the aperture) is refused: not applied, the flux's apCorr flag set,
  and the reason kept;
- the error of a correction is the uncertainty of the fitted field (the stars' robust
  scatter over √n), not the scatter itself, which LSST stores and which would be counted
  again in every flux error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from app.engine.config import ApCorrConfig, radius_name
from app.engine.fields import ChebyshevBoundedField
from app.engine.measure.context import MeasurementContext

APCORR_FLUXES = ("base_PsfFlux", "base_GaussianFlux")
CLEAN = ["SAT", "EDGE", "BAD", "INTRP", "NO_DATA", "CR", "SUSPECT"]
MAD_TO_SIGMA = 1.4826
GRID = 9  # nodes per axis on which a field is checked against validRange


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


@dataclass
class ApCorrResult:
    """The fields measured, and for each flux that got none, why."""

    fields: dict[str, ApCorr] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    reference: str = ""

    def describe(self) -> str:
        """One line for the exposure's provenance."""
        parts = [f"{stem} from {ap.n_stars} stars (mean {ap.field.mean():.4f})"
                 for stem, ap in self.fields.items()]
        parts += [f"{stem} not measured: {why}" for stem, why in self.failures.items()]
        return f"measured against {self.reference}: " + "; ".join(parts) if parts else (
            "no aperture corrections")


def reference_name(config: ApCorrConfig) -> str:
    """The column name of slot_CalibFlux, e.g. ``base_CircularApertureFlux_12_0``."""
    return f"base_CircularApertureFlux_{radius_name(config.calibFluxRadius)}"


def fit_apcorr(x: np.ndarray, y: np.ndarray, z: np.ndarray, bbox: tuple[int, int, int, int],
               config: ApCorrConfig) -> tuple[ApCorr | None, np.ndarray, str]:
    """MeasureApCorrTask's clipped fit of the ratios ``z`` at (x, y) over ``bbox``, at the
    order the stars support.

    Departure: LSST fits ``order`` whenever ``minDegreesOfFreedom`` allows. Each star's
    ratio carries its aperture's noise (0.5–2 % at the S/N used), and six terms fitted to a
    few dozen such ratios add that noise, several tenths of a per cent, to every flux. So
    every order up to ``order`` is fitted (each with LSST's clipping) and the one of least
    Bayesian information on the stars the highest kept is used: a gradient the stars show
    is kept, one they do not is not invented.

    Returns the field (None when too few stars remain), which stars it kept, and the reason
    when there is none.
    """
    best = _fit_order(x, y, z, bbox, config, config.order)
    if best[0] is None or best[0].field.order_x == 0:
        return best
    kept = best[1]
    n = int(kept.sum())
    scores = []
    for order in range(best[0].field.order_x + 1):
        fit = best if order == best[0].field.order_x else _fit_order(x, y, z, bbox, config,
                                                                      order)
        if fit[0] is None:
            continue
        rss = float(((fit[0](x[kept], y[kept]) - z[kept]) ** 2).sum())
        terms = (order + 1) * (order + 2) // 2
        scores.append((n * np.log(max(rss, 1e-30) / n) + terms * np.log(n), order, fit))
    return min(scores, key=lambda s: (s[0], s[1]))[2]


def _fit_order(x: np.ndarray, y: np.ndarray, z: np.ndarray, bbox: tuple[int, int, int, int],
               config: ApCorrConfig, order: int) -> tuple[ApCorr | None, np.ndarray, str]:
    """MeasureApCorrTask's loop at (at most) ``order``."""
    n = len(z)
    keep = np.ones(n, bool)
    if n - 1 < config.minDegreesOfFreedom:
        return None, keep, f"only {n} stars, need at least {config.minDegreesOfFreedom + 1}"
    fit_values = np.full(n, np.median(z))
    field_ = None
    for _ in range(config.numIter):
        resid = z - fit_values
        scatter = MAD_TO_SIGMA * np.median(np.abs(resid[keep] - np.median(resid[keep]))) + 1e-7
        keep &= np.abs(resid) <= config.numSigmaClip * scatter
        while keep.sum() - (order + 1) * (order + 2) // 2 < config.minDegreesOfFreedom:
            if order == 0:
                return None, keep, (f"only {int(keep.sum())} stars, need at least "
                                    f"{config.minDegreesOfFreedom + 1}")
            order -= 1
        field_ = ChebyshevBoundedField.fit(bbox, x[keep], y[keep], z[keep], order_x=order)
        fit_values = field_(x, y)
    assert field_ is not None
    if config.doFinalMedianShift:
        coefficients = field_.coefficients.copy()
        coefficients[0, 0] -= np.median(fit_values[keep] - z[keep])
        field_ = ChebyshevBoundedField(bbox, coefficients)
        fit_values = field_(x, y)
    resid = fit_values[keep] - z[keep]
    err = MAD_TO_SIGMA * np.median(np.abs(resid - np.median(resid))) / np.sqrt(keep.sum())
    return ApCorr(field_, float(err), int(keep.sum())), keep, ""


def _out_of_range(ap: ApCorr, config: ApCorrConfig) -> str:
    """Why the field is implausible over the image, or ''."""
    x0, y0, x1, y1 = ap.field.bbox
    gx, gy = np.meshgrid(np.linspace(x0, x1, GRID), np.linspace(y0, y1, GRID))
    values = ap(gx, gy)
    lo, hi = config.validRange
    if np.isfinite(values).all() and values.min() >= lo and values.max() <= hi:
        return ""
    return (f"the fitted correction spans {values.min():.3f}..{values.max():.3f} over the "
            f"image, outside the plausible {lo:g}..{hi:g}: not applied")


def measure_ap_corr(ctx: MeasurementContext | None, out: dict[str, np.ndarray],
                    config: ApCorrConfig, shape: tuple[int, int],
                    use: np.ndarray | None = None) -> ApCorrResult:
    """Correction fields from the sources of ``ctx`` (all of them, or ``use``).

    ``out`` holds their measurements: the reference aperture flux and each flux to correct.
    """
    h, w = shape
    bbox = (0, 0, w - 1, h - 1)
    ref_name = reference_name(config)
    result = ApCorrResult(reference=f"{ref_name} (slot_CalibFlux)")
    stems = [s for s in APCORR_FLUXES if f"{s}_instFlux" in out]
    if ctx is None or ctx.n_sources == 0 or f"{ref_name}_instFlux" not in out:
        for stem in stems or APCORR_FLUXES:
            result.failures[stem] = "no PSF stars to measure it on"
        return result
    ref = out[f"{ref_name}_instFlux"]
    candidates = np.ones(ctx.n_sources, bool) if use is None else use.copy()
    candidates &= ~ctx.mask_in_footprints(ctx.exposure.planes.bitmask(CLEAN))
    candidates &= np.isfinite(ref) & ~out[f"{ref_name}_flag"]
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = out["base_PsfFlux_instFlux"] / out["base_PsfFlux_instFluxErr"] if (
            "base_PsfFlux_instFlux" in out) else np.full(ctx.n_sources, np.inf)
    bright = candidates & (snr >= config.minSignalToNoise)
    if bright.sum() < 2:
        bright = candidates & (snr >= config.fallbackSignalToNoise)
    for stem in stems:
        flux = out[f"{stem}_instFlux"]
        good = bright & ~out[f"{stem}_flag"] & np.isfinite(flux) & (flux > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = ref[good] / flux[good]
        ap, _, why = fit_apcorr(ctx.x[good], ctx.y[good], z, bbox, config)
        if ap is not None:
            why = _out_of_range(ap, config)
        if why:
            result.failures[stem] = why
        elif ap is not None:
            result.fields[stem] = ap
    return result
