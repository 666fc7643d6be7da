"""Deblending, LSST's SourceDeblendTask (the SDSS "baseline" deblender).

Every footprint with more than one peak becomes a parent record plus one child per peak.
All peaks of a parent are fitted jointly with PSF models (flux and sub-pixel shift); a
peak whose fit is good (reduced χ² below ``psfChisq1``) is a point source and its template
is its fitted PSF ("deblendedAsPsf"). Every other peak gets the symmetric template
``min(I(p + d), I(p − d))`` of the image with those point sources removed, made monotonic
(never rising away from the peak) and non-negative. The parent's pixels are then shared
in proportion to the templates; pixels no template claims ("stray flux") go to the peaks in
proportion to 1/(1 + r²). So the children's heavy footprints add up to the parent exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from app.engine.config import DeblendConfig
from app.engine.exposure import Exposure
from app.engine.footprints import PEAK_DTYPE, Footprint, FootprintSet, spans_from_pixels
from app.engine.psf import PsfModel, shift_stamp


@dataclass
class SourceRecord:
    """One row of the source catalog before measurement."""

    id: int
    parent: int
    footprint: Footprint  # heavy
    peak_x: int
    peak_y: int
    peak_value: float
    flags: dict[str, bool] = field(default_factory=dict)
    n_child: int = 0


DEBLEND_FLAGS = {
    "deblend_tooManyPeaks": "Parent had more peaks than maxNumberOfPeaks; only the brightest kept.",
    "deblend_parentTooBig": "Parent footprint larger than maxFootprintArea; not deblended.",
    "deblend_skipped": "Deblending was not attempted for this source.",
    "deblend_failed": "Deblending failed; the parent is kept without children.",
    "deblend_deblendedAsPsf": "The child's template is the PSF model (a point source).",
    "deblend_patchedTemplate": "The template reached the footprint's edge and was cut.",
    "deblend_hasStrayFlux": "The child received flux no template claimed.",
}


def _bbox_arrays(fp: Footprint) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """Parent image, variance and in-footprint mask on the footprint's bbox."""
    x0, y0, x1, y1 = fp.bbox
    image = fp.unflatten(fp.image, 0).astype(np.float64)
    variance = fp.unflatten(fp.variance, 0).astype(np.float64)
    inside = fp.unflatten(np.ones(fp.area, dtype=bool), False)
    return image, variance, inside, (x0, y0)


def symmetric_template(image: np.ndarray, inside: np.ndarray, px: int, py: int
                       ) -> tuple[np.ndarray, bool]:
    """min(I(p+d), I(p−d)) over pixels whose mirror is in the footprint too, ≥ 0.

    Returns the template and whether it was cut by the footprint's edge.
    """
    h, w = image.shape
    yy, xx = np.mgrid[:h, :w]
    my, mx = 2 * py - yy, 2 * px - xx
    mirror_in = (my >= 0) & (my < h) & (mx >= 0) & (mx < w)
    mirror_in &= inside[np.clip(my, 0, h - 1), np.clip(mx, 0, w - 1)]
    both = inside & mirror_in
    mirror_val = image[np.clip(my, 0, h - 1), np.clip(mx, 0, w - 1)]
    t = np.where(both, np.minimum(image, mirror_val), 0.0)
    patched = bool((inside & ~mirror_in & (image > 0)).any())
    return np.maximum(t, 0.0), patched


def make_monotonic(t: np.ndarray, px: int, py: int) -> np.ndarray:
    """Clip every pixel to the largest of its neighbours one step closer to the peak.

    Rings of growing Chebyshev distance are processed in order, so each ring sees the
    already-clipped ring inside it: values never rise along any path away from the peak.
    """
    t = t.copy()
    h, w = t.shape
    yy, xx = np.mgrid[:h, :w]
    dx, dy = xx - px, yy - py
    ring = np.maximum(np.abs(dx), np.abs(dy))
    sx, sy = np.sign(dx), np.sign(dy)
    # inward neighbours: the diagonal step, and the straight step along the longer axis
    diag_y, diag_x = yy - sy, xx - sx
    straight_y = np.where(np.abs(dy) >= np.abs(dx), yy - sy, yy)
    straight_x = np.where(np.abs(dx) >= np.abs(dy), xx - sx, xx)
    for r in range(1, int(ring.max()) + 1):
        sel = ring == r
        inward = np.maximum(t[diag_y[sel], diag_x[sel]], t[straight_y[sel], straight_x[sel]])
        t[sel] = np.minimum(t[sel], inward)
    return t


PSF_MODEL_ERROR = 0.02  # fractional PSF-model error allowed for in the point-source χ²


def _placed(kernel: np.ndarray, shape: tuple[int, int], px: int, py: int) -> np.ndarray:
    """The kernel centred on pixel (px, py) of an array of ``shape``, cropped at its edges."""
    h, w = shape
    k = kernel.shape[0] // 2
    out = np.zeros(shape)
    ys0, ys1 = max(0, py - k), min(h, py + k + 1)
    xs0, xs1 = max(0, px - k), min(w, px + k + 1)
    if ys0 < ys1 and xs0 < xs1:
        out[ys0:ys1, xs0:xs1] = kernel[ys0 - py + k: ys1 - py + k, xs0 - px + k: xs1 - px + k]
    return out


def fit_psfs(image: np.ndarray, variance: np.ndarray, inside: np.ndarray, psf: PsfModel,
             local: np.ndarray, origin: tuple[int, int]) -> tuple[list[np.ndarray], np.ndarray]:
    """Joint fit of a PSF at every peak (flux and sub-pixel shift) plus a constant.

    A first linear fit with the PSFs' x and y derivatives gives each peak's shift; the PSFs
    are moved there and refitted for flux alone. Returns each peak's fitted PSF model (on the
    bbox) and its reduced χ² over the pixels nearer to it than to any other peak, with the
    variance widened by ``PSF_MODEL_ERROR`` of the model so a bright star is judged by its
    shape, not by the PSF model's small imperfections.
    """
    shape = image.shape
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    kernels = []
    for px, py in local:
        kernels.append(psf.kernel(float(px + origin[0]), float(py + origin[1])))
    sig = np.array([psf.sigma(float(px + origin[0]), float(py + origin[1])) for px, py in local])
    d2 = (xx[None] - local[:, 0, None, None]) ** 2 + (yy[None] - local[:, 1, None, None]) ** 2
    nearest = d2.argmin(axis=0)
    region = inside & (variance > 0) & (d2 <= (2.5 * sig[:, None, None]) ** 2).any(axis=0)
    if region.sum() < 3 * len(local) + 2:
        return [_placed(k, shape, px, py) * 0 for k, (px, py) in zip(kernels, local, strict=True)
                ], np.full(len(local), np.inf)
    w = 1.0 / np.sqrt(variance[region])

    def solve(columns: list[np.ndarray]) -> np.ndarray:
        a = np.stack([c[region] for c in columns] + [np.ones(region.sum())], axis=1) * w[:, None]
        coef, *_ = np.linalg.lstsq(a, image[region] * w, rcond=None)
        return coef

    cols = []
    for kern, (px, py) in zip(kernels, local, strict=True):
        gy, gx = np.gradient(kern)
        cols += [_placed(kern, shape, px, py), _placed(gx, shape, px, py),
                 _placed(gy, shape, px, py)]
    coef = solve(cols)
    amp = coef[0:-1:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        shift_x = np.clip(np.nan_to_num(-coef[1:-1:3] / amp), -1, 1)
        shift_y = np.clip(np.nan_to_num(-coef[2:-1:3] / amp), -1, 1)
    models = [_placed(shift_stamp(k, dx, dy), shape, px, py)
              for k, dx, dy, (px, py) in zip(kernels, shift_x, shift_y, local, strict=True)]
    coef = solve(models)
    fitted = [m * max(a, 0.0) for m, a in zip(models, coef[:-1], strict=True)]
    total = sum(fitted) + coef[-1]
    resid2 = (image - total) ** 2 / (variance + (PSF_MODEL_ERROR * total) ** 2)
    chi2 = np.full(len(local), np.inf)
    for k in range(len(local)):
        own = region & (nearest == k) & (d2[k] <= (2.5 * sig[k]) ** 2)
        n = int(own.sum())
        if n > 4:
            chi2[k] = float(resid2[own].sum()) / (n - 3)
    return fitted, chi2


def deblend_footprint(fp: Footprint, psf: PsfModel, config: DeblendConfig
                      ) -> tuple[list[Footprint], list[dict[str, bool]]]:
    """Children heavy footprints (one per peak) of one heavy parent footprint."""
    image, variance, inside, origin = _bbox_arrays(fp)
    peaks = fp.peaks
    if config.maxNumberOfPeaks and len(peaks) > config.maxNumberOfPeaks:
        peaks = peaks[: config.maxNumberOfPeaks]
    local = np.stack([peaks["x"] - origin[0], peaks["y"] - origin[1]], axis=1)
    models, chi2 = fit_psfs(image, variance, inside, psf, local, origin)
    as_psf = chi2 < config.psfChisq1
    # extended peaks get symmetric templates of the image with the point sources removed
    residual = image - sum((m for m, p in zip(models, as_psf, strict=True) if p),
                           np.zeros_like(image))
    templates, flags = [], []
    for k, (px, py) in enumerate(local):
        if as_psf[k]:
            t, patched = np.where(inside, np.maximum(models[k], 0.0), 0.0), False
        else:
            t, patched = symmetric_template(residual, inside, px, py)
            t = make_monotonic(t, px, py)
        templates.append(t)
        flags.append({"deblend_deblendedAsPsf": bool(as_psf[k]),
                      "deblend_patchedTemplate": patched})
    tmpl = np.stack(templates)
    total = tmpl.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total > 0, tmpl / total, 0.0)
    stray = inside & (total <= 0)
    if stray.any():
        yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
        r2 = (xx[None] - local[:, 0, None, None]) ** 2 + (yy[None] - local[:, 1, None, None]) ** 2
        weight = 1.0 / (1.0 + r2)
        if config.strayFluxToPointSources == "always":
            is_psf = np.array([f["deblend_deblendedAsPsf"] for f in flags])
            if is_psf.any():
                weight = weight * is_psf[:, None, None]
        weight = weight / weight.sum(axis=0)
        share = np.where(stray[None], weight, share)
        for k in range(len(flags)):
            flags[k]["deblend_hasStrayFlux"] = bool((weight[k][stray] > 0).any())
    ys, xs = fp.indices()
    ly, lx = ys - origin[1], xs - origin[0]
    children = []
    for k in range(len(local)):
        frac = share[k][ly, lx]
        keep = frac > 0
        spans = spans_from_pixels(ys[keep], xs[keep])
        peak = peaks[k : k + 1].copy()
        child = Footprint(spans=spans, peaks=peak)
        cys, cxs = child.indices()
        # values in the child's span order: look them up from the parent's bbox arrays
        frac_img = share[k][cys - origin[1], cxs - origin[0]]
        child.image = (image[cys - origin[1], cxs - origin[0]] * frac_img).astype(np.float32)
        child.mask = fp.unflatten(fp.mask, 0)[cys - origin[1], cxs - origin[0]]
        child.variance = fp.unflatten(fp.variance, 0)[cys - origin[1], cxs - origin[0]]
        children.append(child)
    return children, flags


def deblend(footprints: FootprintSet, exposure: Exposure, config: DeblendConfig,
            do_deblend: bool = True) -> list[SourceRecord]:
    """Source records: every footprint as a top-level record, plus children of blends.

    Ids are 1..N for the top-level records in footprint order, then the children, grouped by
    parent; children have ``parent`` set to their parent's id.
    """
    if exposure.psf is None and do_deblend:
        raise ValueError("deblending needs a PSF model; characterize the exposure first")
    heavy = footprints.make_heavy(exposure.image, exposure.mask, exposure.variance)
    records: list[SourceRecord] = []
    for i, fp in enumerate(heavy.footprints):
        pk = fp.peaks[0] if len(fp.peaks) else np.zeros(1, PEAK_DTYPE)[0]
        records.append(SourceRecord(i + 1, 0, fp, int(pk["x"]), int(pk["y"]), float(pk["value"]),
                                    {name: False for name in DEBLEND_FLAGS}))
    next_id = len(records) + 1
    children: list[SourceRecord] = []
    for rec in records:
        fp = rec.footprint
        if len(fp.peaks) < 2:
            continue
        if not do_deblend:
            rec.flags["deblend_skipped"] = True
            continue
        if config.maxFootprintArea and fp.area > config.maxFootprintArea:
            rec.flags["deblend_parentTooBig"] = True
            continue
        rec.flags["deblend_tooManyPeaks"] = bool(
            config.maxNumberOfPeaks and len(fp.peaks) > config.maxNumberOfPeaks)
        try:
            kids, kid_flags = deblend_footprint(fp, exposure.psf, config)
        except (ValueError, np.linalg.LinAlgError):
            rec.flags["deblend_failed"] = True
            continue
        rec.n_child = len(kids)
        for kid, kf in zip(kids, kid_flags, strict=True):
            pk = kid.peaks[0]
            flags = {name: False for name in DEBLEND_FLAGS}
            flags.update(kf)
            children.append(SourceRecord(next_id, rec.id, kid, int(pk["x"]), int(pk["y"]),
                                         float(pk["value"]), flags))
            next_id += 1
    return records + children
