"""SingleFrameMeasurementTask: run the plugins over deblended sources, apply aperture
corrections, add calibrated fluxes, and return an astropy Table with units.

Aperture corrections follow LSST (MeasureApCorrTask + ApplyApCorrTask): on bright,
unblended, unflagged point sources the ratio of the aperture flux at ``apCorrRadius`` to each
corrected flux (PSF, Gaussian) is fitted as a linear function of position, and every source's
flux is multiplied by that field. The aperture flux is taken about a local sky from a wide
annulus, so a residual background does not leak into the correction.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from astropy.table import Table

from app.engine.apcorr import ApCorr, fit_apcorr
from app.engine.config import MeasurementConfig
from app.engine.deblend import DEBLEND_FLAGS, SourceRecord
from app.engine.exposure import Exposure
from app.engine.measure.context import MeasurementContext
from app.engine.measure.plugins.flux import naive_aperture_sums
from app.engine.measure.registry import APCORR_ORDER, Column, resolve, run_plugins

APCORR_FLUXES = ("base_PsfFlux", "base_GaussianFlux")
APCORR_MIN_SNR = 100.0


def base_columns() -> list[Column]:
    """Columns every catalog has, before any plugin: ids, parentage, peaks, deblend flags."""
    cols = [
        Column("id", "i8", None, "Unique source id within this catalog."),
        Column("parent", "i8", None, "Id of the parent of a deblended child; 0 otherwise."),
        Column("deblend_nChild", "i4", None, "Number of children this source was split into."),
        Column("deblend_nPeaks", "i4", None, "Number of peaks in the source's footprint."),
        Column("footprint_area", "i4", "pix", "Number of pixels in the footprint."),
        Column("peak_x", "i4", "pix", "x of the footprint's highest peak (parent frame)."),
        Column("peak_y", "i4", "pix", "y of the footprint's highest peak (parent frame)."),
        Column("peak_value", "f4", "ct", "PSF-smoothed image value at the peak."),
    ]
    cols += [Column(name, "bool", None, desc) for name, desc in DEBLEND_FLAGS.items()]
    return cols


def measure_sources(
    exposure: Exposure, records: list[SourceRecord], config: MeasurementConfig,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[Table, dict[str, ApCorr]]:
    """Measure every record on ``exposure`` (which must carry a PSF)."""
    ox, oy = exposure.xy0
    n = len(records)
    out: dict[str, np.ndarray] = {}
    columns: dict[str, Column] = {c.name: c for c in base_columns()}
    out["id"] = np.array([r.id for r in records], dtype=np.int64)
    out["parent"] = np.array([r.parent for r in records], dtype=np.int64)
    out["deblend_nChild"] = np.array([r.n_child for r in records], dtype=np.int32)
    out["deblend_nPeaks"] = np.array([len(r.footprint.peaks) for r in records], dtype=np.int32)
    out["footprint_area"] = np.array([r.footprint.area for r in records], dtype=np.int32)
    out["peak_x"] = np.array([r.peak_x + ox for r in records], dtype=np.int32)
    out["peak_y"] = np.array([r.peak_y + oy for r in records], dtype=np.int32)
    out["peak_value"] = np.array([r.peak_value for r in records], dtype=np.float32)
    for name in DEBLEND_FLAGS:
        out[name] = np.array([r.flags.get(name, False) for r in records], dtype=bool)

    ctx = MeasurementContext(
        exposure=exposure, ids=out["id"], parents=out["parent"],
        footprints=[r.footprint for r in records],
        peak_x=np.array([r.peak_x for r in records], dtype=np.int64),
        peak_y=np.array([r.peak_y for r in records], dtype=np.int64),
        replace_with_noise=config.doReplaceWithNoise, noise_seed=config.noiseSeed,
        aperture_radii=list(config.apertureRadii), apcorr_radius=config.apCorrRadius,
    )
    plugins = resolve(config.plugins)
    first = [p for p in plugins if p.order < APCORR_ORDER]
    later = [p for p in plugins if p.order >= APCORR_ORDER]

    def report(stage: float, span: float) -> Callable[[float, str], None] | None:
        if progress is None:
            return None
        return lambda f, step: progress(stage + span * f, step)

    run_plugins(first, ctx, out, columns, report(0.0, 0.7))
    apcorrs: dict[str, ApCorr] = {}
    if config.doApCorr and n:
        apcorrs = apply_aperture_corrections(ctx, out, columns, config.apCorrRadius)
    run_plugins(later, ctx, out, columns, report(0.75, 0.25))
    add_calibrated_fluxes(exposure, out, columns)
    return make_table(out, columns), apcorrs


def apply_aperture_corrections(
    ctx: MeasurementContext, out: dict[str, np.ndarray], columns: dict[str, Column],
    radius: float,
) -> dict[str, ApCorr]:
    """Measure the correction fields on bright point sources and apply them to every flux."""
    ref, ref_err = reference_flux(ctx, radius)
    n = ctx.n_sources
    single = (out["parent"] == 0) & (out["deblend_nPeaks"] <= 1)
    pix_bad = np.zeros(n, dtype=bool)
    for flag in ("base_PixelFlags_flag_saturated", "base_PixelFlags_flag_edge",
                 "base_PixelFlags_flag_bad", "base_PixelFlags_flag_interpolated"):
        if flag in out:
            pix_bad |= out[flag]
    bitmask = ctx.exposure.planes.bitmask(["SAT", "EDGE", "BAD", "INTRP", "NO_DATA"])
    pix_bad |= ctx.mask_in_footprints(bitmask)
    psf = out.get("base_PsfFlux_instFlux")
    gauss = out.get("base_GaussianFlux_instFlux")
    pointlike = np.ones(n, dtype=bool)
    if psf is not None and gauss is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            pointlike = np.abs(psf / gauss - np.nanmedian(psf / gauss)) < 0.05
    h, w = ctx.exposure.shape
    apcorrs: dict[str, ApCorr] = {}
    for stem in APCORR_FLUXES:
        if f"{stem}_instFlux" not in out:
            continue
        flux = out[f"{stem}_instFlux"]
        err = out[f"{stem}_instFluxErr"]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = ref / flux
            snr = flux / err
        use = (single & ~pix_bad & pointlike & np.isfinite(ratio) & (snr > APCORR_MIN_SNR)
               & ~out[f"{stem}_flag"])
        field = fit_apcorr(ctx.x[use], ctx.y[use], ratio[use], ref_err[use] / flux[use], w, h)
        for col, desc in (("apCorr", "Aperture correction applied"),
                          ("apCorrErr", "Uncertainty of the aperture correction")):
            columns[f"{stem}_{col}"] = Column(f"{stem}_{col}", "f8", None, f"{desc}.")
        columns[f"{stem}_flag_apCorr"] = Column(f"{stem}_flag_apCorr", "bool", None,
                                                "No aperture correction could be measured.")
        if field is None:
            out[f"{stem}_apCorr"] = np.full(n, np.nan)
            out[f"{stem}_apCorrErr"] = np.full(n, np.nan)
            out[f"{stem}_flag_apCorr"] = np.ones(n, dtype=bool)
            continue
        corr = field(ctx.x, ctx.y)
        out[f"{stem}_apCorr"] = corr
        out[f"{stem}_apCorrErr"] = np.full(n, field.err)
        out[f"{stem}_flag_apCorr"] = np.zeros(n, dtype=bool)
        out[f"{stem}_instFlux"] = flux * corr
        out[f"{stem}_instFluxErr"] = err * corr
        apcorrs[stem] = field
    return apcorrs


def reference_flux(ctx: MeasurementContext, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Aperture flux within ``radius`` about a local sky from the annulus 1.5r–2r.

    Measured with the other sources replaced by noise (the star's wings outside every
    footprint stay), so neighbours do not count. The local sky removes a residual
    background, which a large aperture would otherwise multiply by πr².
    """
    flux, var = naive_aperture_sums(ctx, radius)
    outer, outer_var = naive_aperture_sums(ctx, 2.0 * radius)
    inner, inner_var = naive_aperture_sums(ctx, 1.5 * radius)
    area = np.pi * radius**2
    ann_area = np.pi * (4.0 - 2.25) * radius**2
    sky = (outer - inner) / ann_area
    ref = flux - sky * area
    ref_var = var + (area / ann_area) ** 2 * (outer_var - inner_var)
    return ref, np.sqrt(np.maximum(ref_var, 0))


def add_calibrated_fluxes(exposure: Exposure, out: dict[str, np.ndarray],
                          columns: dict[str, Column]) -> None:
    """``*_flux``/``*_fluxErr`` in nJy beside every ``*_instFlux`` when calibration is known."""
    cal = exposure.photo_calib
    if cal is None:
        return
    for name in [c for c in list(out) if c.endswith("_instFlux")]:
        stem = name[: -len("_instFlux")]
        if stem == "base_LocalBackground":
            continue  # a per-pixel level, not a source flux
        flux = out[name] * cal.njy_per_count
        out[f"{stem}_flux"] = flux
        columns[f"{stem}_flux"] = Column(f"{stem}_flux", "f8", "nJy",
                                         f"{columns[name].description} Calibrated.")
        err_name = f"{stem}_instFluxErr"
        if err_name in out:
            rel = cal.njy_per_count_err / cal.njy_per_count if cal.njy_per_count else 0.0
            err = np.sqrt((out[err_name] * cal.njy_per_count) ** 2 + (flux * rel) ** 2)
            out[f"{stem}_fluxErr"] = err
            columns[f"{stem}_fluxErr"] = Column(f"{stem}_fluxErr", "f8", "nJy",
                                                f"{columns[err_name].description} Calibrated.")


def make_table(out: dict[str, np.ndarray], columns: dict[str, Column]) -> Table:
    """An astropy Table in column-declaration order, with units and descriptions."""
    table = Table()
    for name, col in columns.items():
        if name not in out:
            continue
        table[name] = np.asarray(out[name]).astype(col.dtype, copy=False)
        table[name].unit = col.unit
        table[name].description = col.description
    return table
