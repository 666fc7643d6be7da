"""SingleFrameMeasurementTask: run the plugins over deblended sources, apply aperture
corrections, add calibrated fluxes, and return an astropy Table with units.

Aperture corrections are LSST's ApplyApCorrTask: the exposure's fields (measured in
characterization, :mod:`app.engine.apcorr`, or read from its archive) multiply each corrected
flux; a flux without a field is left as measured and its ``_flag_apCorr`` set.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import astropy.units as u
import numpy as np
from astropy.table import Table

from app.engine.apcorr import APCORR_FLUXES, ApCorr
from app.engine.config import MeasurementConfig
from app.engine.deblend import DEBLEND_FLAGS, DEBLEND_VALUES, SourceRecord
from app.engine.exposure import Exposure
from app.engine.measure.context import MeasurementContext
from app.engine.measure.registry import APCORR_ORDER, Column, Plugin, resolve, run_plugins
from app.engine.measure.slots import META_KEY, meta_entries, slot_aliases


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
    cols += [Column(name, dtype, unit, desc)
             for name, (dtype, unit, desc, _) in DEBLEND_VALUES.items()]
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
    for name, (dtype, _, _, unset) in DEBLEND_VALUES.items():
        offset = ox if name.endswith("_x") else oy if name.endswith("_y") else 0
        out[name] = np.array([r.values.get(name, unset) for r in records], dtype=dtype) + offset

    ctx = MeasurementContext(
        exposure=exposure, ids=out["id"], parents=out["parent"],
        footprints=[r.footprint for r in records],
        peak_x=np.array([r.peak_x for r in records], dtype=np.int64),
        peak_y=np.array([r.peak_y for r in records], dtype=np.int64),
        replace_with_noise=config.doReplaceWithNoise, noise_seed=config.noiseSeed,
        aperture_radii=list(config.apertureRadii),
        slots=config.slots, classification=config.classification,
    )
    plugins = resolve(config.plugins)
    aliases = catalog_aliases(plugins, ctx)
    first = [p for p in plugins if p.order < APCORR_ORDER]
    later = [p for p in plugins if p.order >= APCORR_ORDER]

    def report(stage: float, span: float) -> Callable[[float, str], None] | None:
        if progress is None:
            return None
        return lambda f, step: progress(stage + span * f, step)

    run_plugins(first, ctx, out, columns, report(0.0, 0.7))
    apcorrs: dict[str, ApCorr] = {}
    if config.doApCorr and n:
        apcorrs = aperture_corrections(ctx, out, columns)
    run_plugins(later, ctx, out, columns, report(0.75, 0.25))
    add_calibrated_fluxes(exposure, out, columns)
    table = make_table(out, columns)
    table.meta[META_KEY] = meta_entries(aliases)
    return table, apcorrs


def catalog_aliases(plugins: list[Plugin], ctx: MeasurementContext) -> dict[str, str]:
    """The catalog's alias map: the slots (which must name results these plugins make),
    then each plugin's ``_flag_badCentroid`` / ``_flag_badShape``, the flag of the slot its
    measurement relied on (meas_base's SafeCentroidExtractor and SafeShapeExtractor)."""
    aliases = slot_aliases(ctx.slots, [stem for p in plugins for stem in p.results(ctx)])
    for plugin in plugins:
        for uses, slot, what in ((plugin.uses_centroid, ctx.slots.centroid, "Centroid"),
                                 (plugin.uses_shape, ctx.slots.shape, "Shape")):
            if uses and slot is not None and slot != plugin.name:
                aliases[f"{plugin.name}_flag_bad{what}"] = f"{slot}_flag"
    return aliases


def aperture_corrections(ctx: MeasurementContext, out: dict[str, np.ndarray],
                         columns: dict[str, Column]) -> dict[str, ApCorr]:
    """Apply the exposure's aperture corrections (ApplyApCorrTask)."""
    fields = dict(ctx.exposure.ap_corr)
    n = ctx.n_sources
    for stem in APCORR_FLUXES:
        if f"{stem}_instFlux" not in out:
            continue
        for col, desc in (("apCorr", "Aperture correction applied"),
                          ("apCorrErr", "Uncertainty of the aperture correction")):
            columns[f"{stem}_{col}"] = Column(f"{stem}_{col}", "f8", None, f"{desc}.")
        columns[f"{stem}_flag_apCorr"] = Column(f"{stem}_flag_apCorr", "bool", None,
                                                "No aperture correction could be measured.")
        field = fields.get(stem)
        if field is None:
            out[f"{stem}_apCorr"] = np.full(n, np.nan)
            out[f"{stem}_apCorrErr"] = np.full(n, np.nan)
            out[f"{stem}_flag_apCorr"] = np.ones(n, dtype=bool)
            continue
        corr = field(ctx.x, ctx.y)
        out[f"{stem}_apCorr"] = corr
        out[f"{stem}_apCorrErr"] = np.full(n, field.err)
        out[f"{stem}_flag_apCorr"] = np.zeros(n, dtype=bool)
        out[f"{stem}_instFlux"] = out[f"{stem}_instFlux"] * corr
        out[f"{stem}_instFluxErr"] = out[f"{stem}_instFluxErr"] * corr
    return fields


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


@lru_cache(maxsize=64)
def _unit(name: str | None) -> u.UnitBase | None:
    """Parsed once: astropy re-parses a unit string every time a column is made."""
    return None if name is None else u.Unit(name)


def make_table(out: dict[str, np.ndarray], columns: dict[str, Column],
               before: Table | None = None) -> Table:
    """An astropy Table of the measurements, after the columns of ``before`` if given.

    Built in one go from plain arrays with the units and descriptions passed to the
    constructor: astropy makes each column once, which for a few positions costs more than
    measuring them.
    """
    names = [] if before is None else list(before.colnames)
    data = [] if before is None else [before[name].copy() for name in names]
    units: dict[str, u.UnitBase] = {}
    descriptions: dict[str, str] = {}
    for name, col in columns.items():
        if name not in out:
            continue
        names.append(name)
        data.append(np.asarray(out[name]).astype(col.dtype, copy=False))
        if col.unit is not None:
            units[name] = _unit(col.unit)
        descriptions[name] = col.description
    return Table(data, names=names, units=units, descriptions=descriptions, copy=False)
