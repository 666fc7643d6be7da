"""Deblending, LSST's SourceDeblendTask with meas_deblender's baseline (SDSS) deblender.

Every footprint with more than one peak becomes a parent record plus one child per peak, by
``baseline.deblend``'s steps: a point-source test of each peak (`deblend_psf`: a PSF fit's
χ²), a symmetric template for every other peak, ramped at the footprint's edge, median
smoothed and made monotonic (`deblend_templates`), then the parent's pixels shared in
proportion to the templates, with the rules for flux no template claims (`deblend_apportion`).
The children's heavy footprints hold the parent's flux: under the default ``trim`` rule the
parent keeps exactly the pixels its children share, so they add up to it pixel by pixel.

Parents are not deblended when larger than ``maxFootprintArea`` (or ``maxFootprintSize``, or
flatter than ``minFootprintAxisRatio``): ``deblend_parentTooBig``; when more than a
``maskLimits`` fraction of their pixels is masked: ``deblend_masked``; both set
``deblend_skipped`` and the ``notDeblendedMask`` plane, as isLargeFootprint/isMasked/skipParent.

Departures from SourceDeblendTask: ``deblend_tooManyPeaks`` is set only when
``maxNumberOfPeaks`` is set and exceeded (LSST's test ``len(peaks) > maxNumberOfPeaks`` sets
it on every parent when the limit is 0, "unlimited"); a parent's ``deblend_skipped`` says that
it was not deblended or that some of its peaks made no child (LSST's flag keeps only the
last peak's fate); a peak whose template is zero everywhere makes no child (LSST keeps one
with an empty footprint, which nothing can measure).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from app.engine.config import DeblendConfig
from app.engine.deblend_apportion import apportion
from app.engine.deblend_psf import PsfCache, PsfFit, first_centres, fit_psf
from app.engine.deblend_templates import (
    Template,
    grow_footprint,
    has_flux_at_edge,
    make_monotonic,
    median_smooth,
    ramp_size,
    ramp_template,
    symmetric_template,
)
from app.engine.exposure import Exposure
from app.engine.footprints import PEAK_DTYPE, Footprint, FootprintSet, spans_from_pixels
from app.engine.psf import PsfModel, psf_fwhm

NOISE_SAMPLES = 1_000_000  # variance pixels the image noise (sigma1) is taken from


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
    values: dict[str, float] = field(default_factory=dict)  # DEBLEND_VALUES, unset: default


DEBLEND_FLAGS = {
    "deblend_tooManyPeaks": "Parent had more peaks than maxNumberOfPeaks; only the brightest kept.",
    "deblend_parentTooBig": "Parent footprint larger than maxFootprintArea; not deblended.",
    "deblend_masked": "Parent footprint predominantly masked (maskLimits); not deblended.",
    "deblend_skipped": "The deblender skipped this source, or some of its peaks made no child.",
    "deblend_failed": "Deblending failed; the parent is kept without children.",
    "deblend_deblendedAsPsf": "The child's template is the PSF model (a point source).",
    "deblend_rampedTemplate": "The child's template had flux at its footprint's edge and was "
    "extended by the PSF (edgeHandling 'ramp').",
    "deblend_patchedTemplate": "The child's template touched an EDGE pixel and kept the pixels "
    "whose mirror is off the footprint (edgeHandling 'noclip').",
    "deblend_hasStrayFlux": "The child received flux no template claimed.",
}

DEBLEND_VALUES = {  # name: (dtype, unit, description, value when unset)
    "deblend_psfCenter_x": ("f8", "pix", "If deblended-as-psf, the PSF centroid x.", np.nan),
    "deblend_psfCenter_y": ("f8", "pix", "If deblended-as-psf, the PSF centroid y.", np.nan),
    "deblend_psf_instFlux": ("f8", "ct", "If deblended-as-psf, the instrumental PSF flux.",
                             np.nan),
    "deblend_parentNPeaks": ("i4", None, "Number of peaks of the child's parent; 0 for "
                             "top-level sources.", 0),
}
"""Non-flag columns SourceDeblendTask writes; ``*_x``/``*_y`` in array pixels here, the
catalog adds the exposure's xy0."""


@dataclass
class _Child:
    """What the deblender made of one peak."""

    index: int  # the peak's index in the parent's peaks
    template: Template
    fit: PsfFit
    ramped: bool = False
    patched: bool = False


def image_noise(exposure: Exposure, planes: list[str]) -> float:
    """sigma1: √(median variance) of pixels without ``planes``, from a regular subsample."""
    var = exposure.variance
    step = max(1, int(np.sqrt(var.size / NOISE_SAMPLES)))
    sub = var[::step, ::step]
    good = ~exposure.planes.any(exposure.mask[::step, ::step], planes) & np.isfinite(sub)
    return float(np.sqrt(np.median(sub[good]))) if good.any() else 0.0


def median_halfsize(halfsize: int, fwhm: float) -> int:
    """The median filter's half-size, its box at most 1.5 FWHM wide.

    Departure: meas_deblender's 5×5 box (half-size 2) suits its cameras' FWHM of about four
    pixels; on an undersampled image it is wider than the PSF's core and flattens a star's
    template (at FWHM 2.5 px a fainter pair member loses up to 10 % of its flux to the
    brighter). At FWHM ≥ 3.67 px the box is LSST's.
    """
    return min(halfsize, max(0, int((1.5 * fwhm - 1) / 2)))


@dataclass
class _Parent:
    """One parent being deblended: its box, and what its templates share."""

    fp: Footprint
    exposure: Exposure
    psf: PsfModel
    config: DeblendConfig
    sigma1: float
    image: np.ndarray = field(init=False)  # the parent's box, zero off the footprint
    variance: np.ndarray = field(init=False)
    inside: np.ndarray = field(init=False)
    origin: tuple[int, int] = field(init=False)  # (x0, y0) of the box
    fwhm: float = field(init=False)

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.fp.bbox
        self.image = self.fp.unflatten(self.fp.image, 0)
        self.variance = self.fp.unflatten(self.fp.variance, 0)
        self.inside = self.fp.unflatten(np.ones(self.fp.area, dtype=bool), False)
        self.origin = (x0, y0)
        self.fwhm = psf_fwhm(self.psf, 0.5 * (x0 + x1), 0.5 * (y0 + y1))
        if not self.fwhm > 0:
            raise ValueError(f"the PSF's FWHM at the parent is {self.fwhm}")

    @cached_property
    def reach(self) -> int:
        return ramp_size(self.fwhm)

    @cached_property
    def grown(self) -> np.ndarray:
        """The footprint grown by the ramp's reach (computed for the first ramped template)."""
        return grow_footprint(self.inside, self.reach)

    @cached_property
    def edge_psf(self) -> np.ndarray:
        """The PSF at the box's centre, which the ramps follow."""
        x0, y0, x1, y1 = self.fp.bbox
        return np.asarray(self.psf.kernel(float((x0 + x1) // 2), float((y0 + y1) // 2)),
                          dtype=np.float64)

    def symmetric(self, peak: tuple[int, int]) -> tuple[Template | None, bool, bool]:
        """buildSymmetricTemplates → rampFluxAtEdge → medianSmoothTemplates →
        makeTemplatesMonotonic → clipFootprintsToNonzero for one extended peak: the
        template, and whether it was ramped and patched."""
        config, ex = self.config, self.exposure
        x0, y0, x1, y1 = self.fp.bbox
        box = (slice(y0, y1 + 1), slice(x0, x1 + 1))
        edge = None
        if config.edgeHandling == "noclip":
            edge = (ex.mask[box] & np.int32(ex.planes.bitmask("EDGE"))) != 0
        t, patched = symmetric_template(ex.image[box], self.inside, self.origin, peak, edge)
        ramped = False
        if (t is not None and config.edgeHandling == "ramp"
                and has_flux_at_edge(t, 3 * self.sigma1)):
            t = ramp_template(t, peak, ex.image, self.grown, self.origin, self.edge_psf,
                              self.reach)
            ramped = True
        if t is None:
            return None, ramped, patched
        if config.medianSmoothTemplate:
            t = median_smooth(t, median_halfsize(config.medianFilterHalfsize, self.fwhm))
        if config.monotonicTemplate:
            t = make_monotonic(t, peak)
        return t.clipped(), ramped, patched


def _psf_template(fit: PsfFit, inside: np.ndarray, origin: tuple[int, int]) -> Template | None:
    """The fitted PSF model on the parent footprint, cut to its positive pixels."""
    assert fit.model is not None
    mx, my = fit.model_box
    ox, oy = origin
    h, w = inside.shape
    kh, kw = fit.model.shape
    xa, xb = max(mx, ox), min(mx + kw - 1, ox + w - 1)
    ya, yb = max(my, oy), min(my + kh - 1, oy + h - 1)
    if xa > xb or ya > yb:
        return None
    fp = inside[ya - oy: yb - oy + 1, xa - ox: xb - ox + 1]
    img = fit.model[ya - my: yb - my + 1, xa - mx: xa - mx + (xb - xa + 1)]
    return Template(np.where(fp, img, 0.0), fp.copy(), xa, ya).clipped()


def deblend_footprint(fp: Footprint, exposure: Exposure, psf: PsfModel, config: DeblendConfig,
                      sigma1: float) -> tuple[list[Footprint], list[dict[str, bool]],
                                              list[dict[str, float]], Footprint, bool]:
    """``baseline.deblend`` of one heavy parent: the children's heavy footprints, their
    flags and values, the parent after the stray-flux rule, and whether a peak was dropped."""
    parent = _Parent(fp, exposure, psf, config, sigma1)
    image, inside, origin = parent.image, parent.inside, parent.origin
    peaks = fp.peaks
    if config.maxNumberOfPeaks and len(peaks) > config.maxNumberOfPeaks:
        peaks = peaks[: config.maxNumberOfPeaks]
    xy = np.stack([peaks["x"], peaks["y"]], axis=1).astype(np.int64)
    cache = PsfCache(psf)
    cuts = (config.psfChisq1, config.psfChisq2, config.psfChisq2b)
    fit_args = (image, parent.variance, inside, origin, cache, parent.fwhm)
    centres = first_centres(xy, *fit_args, config.tinyFootprintSize, config.psfModelError)
    made: list[_Child] = []
    dropped = False
    for k in range(len(xy)):
        fit = fit_psf(k, xy, centres, *fit_args, cuts, config.tinyFootprintSize,
                      config.psfModelError)
        if fit.skip:
            dropped = True
            continue
        if fit.is_psf:
            t, ramped, patched = _psf_template(fit, inside, origin), False, False
        else:
            t, ramped, patched = parent.symmetric((int(xy[k, 0]), int(xy[k, 1])))
        if t is None:
            dropped = True
            continue
        made.append(_Child(k, t, fit, ramped, patched))
    is_psf = np.array([c.fit.is_psf for c in made], dtype=bool)
    portions, kept = apportion(image, inside, origin, [c.template for c in made],
                               xy[[c.index for c in made]], is_psf, config)
    children, flags, values = [], [], []
    w = inside.shape[1]
    for c, portion in zip(made, portions, strict=True):
        if not len(portion.index):
            dropped = True
            continue
        ly, lx = np.divmod(portion.index, w)
        ys, xs = ly + origin[1], lx + origin[0]
        child = Footprint(spans=spans_from_pixels(ys, xs),
                          peaks=peaks[c.index: c.index + 1].copy())
        child.image = portion.flux.astype(np.float32)
        child.mask = exposure.mask[ys, xs]
        child.variance = exposure.variance[ys, xs]
        children.append(child)
        flags.append({"deblend_deblendedAsPsf": c.fit.is_psf, "deblend_rampedTemplate": c.ramped,
                      "deblend_patchedTemplate": c.patched,
                      "deblend_hasStrayFlux": portion.has_stray})
        v = {"deblend_parentNPeaks": len(fp.peaks)}
        if c.fit.is_psf:
            v.update({"deblend_psfCenter_x": c.fit.x, "deblend_psfCenter_y": c.fit.y,
                      "deblend_psf_instFlux": c.fit.flux})
        values.append(v)
    trimmed = fp if kept.all() or not children else _trimmed(fp, kept, exposure, origin)
    return children, flags, values, trimmed, dropped


def _trimmed(fp: Footprint, kept: np.ndarray, exposure: Exposure, origin: tuple[int, int]
             ) -> Footprint:
    """The heavy parent cut to the pixels its children share (strayFluxRule 'trim')."""
    ly, lx = np.nonzero(kept)
    ys, xs = ly + origin[1], lx + origin[0]
    return Footprint(spans=spans_from_pixels(ys, xs), peaks=fp.peaks).make_heavy(
        exposure.image, exposure.mask, exposure.variance)


def is_large(fp: Footprint, config: DeblendConfig) -> bool:
    """isLargeFootprint: area, width/height or axis ratio over the configured limits."""
    if config.maxFootprintArea and fp.area > config.maxFootprintArea:
        return True
    x0, y0, x1, y1 = fp.bbox
    if config.maxFootprintSize and max(x1 - x0 + 1, y1 - y0 + 1) > config.maxFootprintSize:
        return True
    if config.minFootprintAxisRatio > 0:
        ys, xs = fp.indices()
        cov = np.cov(np.stack([xs, ys]).astype(float), bias=True)
        lo, hi = np.linalg.eigvalsh(cov)
        if hi > 0 and np.sqrt(max(lo, 0.0) / hi) < config.minFootprintAxisRatio:
            return True
    return False


def is_masked(fp: Footprint, exposure: Exposure, config: DeblendConfig) -> bool:
    """isMasked: more than a plane's ``maskLimits`` fraction of the pixels in that plane."""
    assert fp.mask is not None
    for plane, limit in config.maskLimits.items():
        bit = np.int32(exposure.planes.bitmask(plane))
        if np.count_nonzero(fp.mask & bit) / fp.area > limit:
            return True
    return False


def deblend(footprints: FootprintSet, exposure: Exposure, config: DeblendConfig,
            do_deblend: bool = True) -> list[SourceRecord]:
    """Source records: every footprint as a top-level record, plus children of blends.

    Ids are 1..N for the top-level records in footprint order, then the children, grouped by
    parent; children have ``parent`` set to their parent's id. Parents not deblended get the
    ``notDeblendedMask`` plane on ``exposure``'s mask.
    """
    if exposure.psf is None and do_deblend:
        raise ValueError("deblending needs a PSF model; characterize the exposure first")
    heavy = footprints.make_heavy(exposure.image, exposure.mask, exposure.variance)
    records: list[SourceRecord] = []
    for i, fp in enumerate(heavy.footprints):
        pk = fp.peaks[0] if len(fp.peaks) else np.zeros(1, PEAK_DTYPE)[0]
        records.append(SourceRecord(i + 1, 0, fp, int(pk["x"]), int(pk["y"]), float(pk["value"]),
                                    {name: False for name in DEBLEND_FLAGS}))
    sigma1 = image_noise(exposure, config.maskPlanes) if do_deblend else 0.0
    next_id = len(records) + 1
    children: list[SourceRecord] = []
    for rec in records:
        fp = rec.footprint
        if len(fp.peaks) < 2:
            continue
        if not do_deblend:
            rec.flags["deblend_skipped"] = True
            continue
        too_big = is_large(fp, config)
        masked = not too_big and is_masked(fp, exposure, config)
        if too_big or masked:
            rec.flags["deblend_parentTooBig"] = too_big
            rec.flags["deblend_masked"] = masked
            rec.flags["deblend_skipped"] = True
            _mark_not_deblended(exposure, fp, config)
            continue
        rec.flags["deblend_tooManyPeaks"] = bool(
            config.maxNumberOfPeaks and len(fp.peaks) > config.maxNumberOfPeaks)
        try:
            kids, kid_flags, kid_values, parent, dropped = deblend_footprint(
                fp, exposure, exposure.psf, config, sigma1)
        except (ValueError, np.linalg.LinAlgError):
            rec.flags["deblend_failed"] = True
            continue
        rec.footprint = parent
        rec.n_child = len(kids)
        rec.flags["deblend_skipped"] = dropped
        for kid, kf, kv in zip(kids, kid_flags, kid_values, strict=True):
            pk = kid.peaks[0]
            flags = {name: False for name in DEBLEND_FLAGS}
            flags.update(kf)
            children.append(SourceRecord(next_id, rec.id, kid, int(pk["x"]), int(pk["y"]),
                                         float(pk["value"]), flags, values=kv))
            next_id += 1
    return records + children


def _mark_not_deblended(exposure: Exposure, fp: Footprint, config: DeblendConfig) -> None:
    """skipParent's mask plane on the parent's pixels."""
    if config.notDeblendedMask:
        ys, xs = fp.indices()
        exposure.mask[ys, xs] |= np.int32(exposure.planes.bitmask(config.notDeblendedMask))
