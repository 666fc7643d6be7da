"""Plugins derived from the others: sky coordinates, variance, blendedness, extendedness."""

from __future__ import annotations

import numpy as np

from app.engine.cutouts import gather_windows
from app.engine.measure.context import MeasurementContext
from app.engine.measure.cubes import gaussian_weight, stamp_offsets
from app.engine.measure.registry import DERIVED_ORDER, Column, Plugin, register
from app.engine.stats import nanmedian_rows


@register
class SkyCoord(Plugin):
    """coord_ra, coord_dec of the slot centroid through the exposure's WCS."""

    name = "base_SkyCoord"
    order = DERIVED_ORDER

    def columns(self, ctx: MeasurementContext) -> list[Column]:
        return [
            Column("coord_ra", "f8", "deg", "Right ascension (ICRS) of the centroid."),
            Column("coord_dec", "f8", "deg", "Declination (ICRS) of the centroid."),
        ]

    def measure(self, ctx: MeasurementContext, out: dict[str, np.ndarray]) -> None:
        if ctx.n_sources == 0:
            return
        if ctx.exposure.wcs is None:
            out[f"{self.name}_flag"][:] = True
            return
        ox, oy = ctx.exposure.xy0
        ra, dec = ctx.exposure.pixel_to_sky(ctx.x + ox, ctx.y + oy)
        out["coord_ra"][:], out["coord_dec"][:] = ra, dec


@register
class Variance(Plugin):
    """Median variance around the source, detected and bad pixels left out (LSST's scale 5)."""

    name = "base_Variance"
    order = DERIVED_ORDER
    scale = 5.0
    excluded = ["DETECTED", "DETECTED_NEGATIVE", "BAD", "SAT", "NO_DATA"]

    def columns(self, ctx: MeasurementContext) -> list[Column]:
        return [
            Column(f"{self.name}_value", "f8", "ct2",
                   "Median variance-plane value near the source."),
            Column(f"{self.name}_flag_emptyFootprint", "bool", None,
                   "No usable pixel within the aperture."),
        ]

    def measure(self, ctx: MeasurementContext, out: dict[str, np.ndarray]) -> None:
        if ctx.n_sources == 0:
            return
        size = np.sqrt(np.sqrt(np.abs(ctx.shape_xx * ctx.shape_yy - ctx.shape_xy**2)))
        size = np.where(np.isfinite(size) & (size > 0), size, ctx.psf_sigma())
        radius = np.clip(self.scale * size, 3, 30)
        half = int(np.ceil(radius.max()))
        st = ctx.stamps(half)
        dx, dy = stamp_offsets(half, st.x0, st.y0, ctx.x, ctx.y)
        use = (dx * dx + dy * dy <= radius[:, None, None] ** 2) & st.on_image & ~(
            ctx.exposure.planes.any(st.mask, self.excluded))
        values = np.where(use, st.variance, np.nan).reshape(ctx.n_sources, -1)
        empty = ~use.any(axis=(1, 2))
        out[f"{self.name}_value"][:] = nanmedian_rows(values)
        out[f"{self.name}_flag_emptyFootprint"][:] = empty
        out[f"{self.name}_flag"][:] = empty


@register
class Blendedness(Plugin):
    """How much of a source's Gaussian-weighted flux belongs to its neighbours.

    ``raw`` = 1 − child/parent with the source's own adaptive-moment Gaussian weight, the
    child measured with its neighbours replaced by noise and the parent on the full image;
    ``abs`` is the same with absolute pixel values, so noise does not cancel.
    """

    name = "base_Blendedness"
    order = DERIVED_ORDER

    def columns(self, ctx: MeasurementContext) -> list[Column]:
        n = self.name
        return [
            Column(f"{n}_old", "f8", None, "1 − child flux / parent flux (Gaussian flux)."),
            Column(f"{n}_raw", "f8", None, "1 − Σw·child / Σw·all, signed pixels."),
            Column(f"{n}_abs", "f8", None, "1 − Σw·|child| / Σw·|all|."),
            Column(f"{n}_flag_noCentroid", "bool", None, "No centroid to centre the weight."),
            Column(f"{n}_flag_noShape", "bool", None, "No shape to size the weight."),
        ]

    def measure(self, ctx: MeasurementContext, out: dict[str, np.ndarray]) -> None:
        if ctx.n_sources == 0:
            return
        n = self.name
        xx, yy, xy = ctx.shape_xx, ctx.shape_yy, ctx.shape_xy
        no_shape = ~np.isfinite(xx + yy + xy)
        s2 = ctx.psf_sigma() ** 2
        xx = np.where(no_shape, s2, xx)
        yy = np.where(no_shape, s2, yy)
        xy = np.where(no_shape, 0, xy)
        half = int(np.clip(np.ceil(4 * np.sqrt(np.nanmax(np.maximum(xx, yy)))), 6, 30))
        st = ctx.stamps(half)
        dx, dy = stamp_offsets(half, st.x0, st.y0, ctx.x, ctx.y)
        w = gaussian_weight(dx, dy, xx, yy, xy)
        np.copyto(w, 0.0, where=~st.on_image)
        full = gather_windows(ctx.exposure.image, st.y0, st.x0, (2 * half + 1,) * 2)
        # the products go to one scratch cube and |full|, then |child|, over ``full``'s
        # own copy: the cubes are large enough that each temporary costs
        prod = np.empty_like(w)
        child_sum = np.multiply(w, st.image, out=prod).sum(axis=(1, 2))
        full_sum = np.multiply(w, full, out=prod).sum(axis=(1, 2))
        full_abs = np.multiply(w, np.abs(full, out=full), out=prod).sum(axis=(1, 2))
        child_abs = np.multiply(w, np.abs(st.image, out=full), out=prod).sum(axis=(1, 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            raw = 1 - child_sum / full_sum
            absb = 1 - child_abs / full_abs
        out[f"{n}_raw"][:] = raw
        out[f"{n}_abs"][:] = absb
        parent_row = {int(i): k for k, i in enumerate(ctx.ids)}
        g = out.get("base_GaussianFlux_instFlux")
        if g is not None:
            pidx = np.array([parent_row.get(int(p), k) for k, p in enumerate(ctx.parents)])
            with np.errstate(divide="ignore", invalid="ignore"):
                out[f"{n}_old"][:] = np.where(ctx.parents != 0, 1 - g / g[pidx], 0.0)
        out[f"{n}_flag_noShape"][:] = no_shape
        out[f"{n}_flag_noCentroid"][:] = ~np.isfinite(ctx.x + ctx.y)
        out[f"{n}_flag"][:] = ~np.isfinite(absb)


@register
class ClassificationExtendedness(Plugin):
    """Extendedness as meas_base's catalogCalculation plugin (classification.py): 1 where
    fluxRatio·model (+ modelErrFactor·σ) reaches the PSF flux (+ psfErrFactor·σ), else 0;
    NaN and flagged where either flux is NaN or flagged.

    The fluxes are the slots ``slot_PsfFlux`` and ``slot_ModelFlux``, after aperture
    corrections. LSST's data-release pipeline points ``slot_ModelFlux`` at modelfit_CModel;
    skyphot has no CModel, so the model flux is SingleFrameMeasurementTask's own default,
    base_GaussianFlux (``measurement.slots.modelFlux`` chooses another). A Gaussian fitted
    to a galaxy's core misses its wings, so at the default fluxRatio 0.95 faint or compact
    galaxies read as points more often than with CModel.
    """

    name = "base_ClassificationExtendedness"
    order = DERIVED_ORDER + 0.5  # after aperture corrections are applied

    def columns(self, ctx: MeasurementContext) -> list[Column]:
        return [Column(f"{self.name}_value", "f8", None,
                       "Set to 1 for extended sources, 0 for point sources.")]

    def measure(self, ctx: MeasurementContext, out: dict[str, np.ndarray]) -> None:
        psf, model = ctx.slots.psfFlux, ctx.slots.modelFlux
        if psf is None or model is None:
            raise ValueError(
                "base_ClassificationExtendedness needs the psfFlux and modelFlux slots")
        cfg = ctx.classification
        flux1 = cfg.fluxRatio * out[f"{model}_instFlux"]
        if cfg.modelErrFactor != 0:
            flux1 = flux1 + cfg.modelErrFactor * out[f"{model}_instFluxErr"]
        flux2 = out[f"{psf}_instFlux"]
        if cfg.psfErrFactor != 0:
            flux2 = flux2 + cfg.psfErrFactor * out[f"{psf}_instFluxErr"]
        fail = np.isnan(flux1) | np.isnan(flux2) | out[f"{model}_flag"] | out[f"{psf}_flag"]
        out[f"{self.name}_value"][:] = np.where(fail, np.nan, (flux1 >= flux2).astype(float))
        out[f"{self.name}_flag"][:] = fail
