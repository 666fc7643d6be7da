"""Flux plugins: PSF, Gaussian, circular-aperture fluxes and the local background."""

from __future__ import annotations

import numpy as np

from app.engine.config import radius_name
from app.engine.masks import MaskPlanes
from app.engine.measure.context import MeasurementContext
from app.engine.measure.cubes import exact_circle_weights, gaussian_weight, stamp_offsets
from app.engine.measure.registry import FLUX_ORDER, Column, Plugin, register
from app.engine.psf import SIGMA_TO_FWHM, PsfModel
from app.engine.psf_sampling import PsfSampler
from app.engine.stats import clipped_stats

BAD_PLANES = ["BAD", "SAT", "NO_DATA"]


PSF_FIT_RADIUS_FWHM = 2.2  # pixels within this many FWHM of the position enter the PSF fit
MIN_FIT_RADIUS = 4.5  # pixels: the fit's radius however sharp the PSF


def psf_fit_radius(psf: PsfModel, x: float, y: float) -> float:
    """Radius (pixels) of the disk about a position whose pixels the PSF fit uses at (x, y).

    2.2 FWHM holds all but a negligible part of ΣP², the fit's signal, so pixels beyond
    it would add cost and neighbours' light, not precision.
    """
    return max(MIN_FIT_RADIUS, PSF_FIT_RADIUS_FWHM * psf.sigma(x, y) * SIGMA_TO_FWHM)


def _weighted_sums(weights: np.ndarray, values: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Σ weights·values of each row over the pixels not ``bad``.

    Pixels left out carry zero weight, so a plain product serves, unless one of them holds
    NaN or inf (NO_DATA pixels): only those rare rows are summed again with them zeroed.
    """
    sums = np.einsum("ij,ij->i", weights, values)
    redo = ~np.isfinite(sums)
    if redo.any():
        sums[redo] = np.einsum("ij,ij->i", weights[redo], np.where(bad[redo], 0, values[redo]))
    return sums


def fixed_psf_photometry(
    image: np.ndarray, variance: np.ndarray, mask: np.ndarray, on: np.ndarray,
    x: np.ndarray, y: np.ndarray, sampler: PsfSampler, planes: MaskPlanes,
    bad_planes: list[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The PSF fit every PSF flux in skyphot uses, single-frame and forced alike.

    ``image``, ``variance``, ``mask`` and ``on`` (on the image) are (N, P): the values at the
    sampler's disk pixels about the pixel nearest each (x, y). The fit uses the pixels within
    the sampler's ``radius`` of the exact position, so it varies continuously with it,
    leaving out pixels off the image or with ``bad_planes``.
    Returns (flux, error, effective area (ΣP)²/ΣP², no usable pixel, some of the fit's
    pixels off the image or NO_DATA: meas_base's ``flag_edge``, the PSF model not wholly
    on the data).
    """
    p = sampler.images(x, y)  # a fresh array: weighted in place below
    # the fit's disk about the exact position: only the sampler's outer ring (the last
    # columns: weighted in place) can leave it
    ring = sampler.ring
    ddx = (np.round(x) - x)[:, None] + sampler.dx[None, ring]
    ddy = (np.round(y) - y)[:, None] + sampler.dy[None, ring]
    p[:, ring] *= ddx * ddx + ddy * ddy <= sampler.radius**2
    full = np.einsum("ij,ij->i", p, p)
    bad = (mask & np.int32(planes.bitmask(bad_planes))) != 0
    bad |= ~on
    # few rows hold a pixel left out: only they are zeroed and summed again
    rows = np.flatnonzero(bad.any(axis=1))
    spp = full.copy()
    edge = np.zeros(len(p), dtype=bool)
    if len(rows):
        beyond = ~on[rows] | ((mask[rows] & np.int32(planes.bitmask("NO_DATA"))) != 0)
        edge[rows] = ((p[rows] != 0) & beyond).any(axis=1)
        p[rows] = np.where(bad[rows], 0.0, p[rows])
        spp[rows] = np.einsum("ij,ij->i", p[rows], p[rows])
    # F = ΣP·D/ΣP², σ² = ΣP²V/(ΣP²)² over the good pixels
    sum_pd = _weighted_sums(p, image, bad)
    sum_ppv = _weighted_sums(p * p, variance, bad)
    with np.errstate(divide="ignore", invalid="ignore"):
        flux = sum_pd / spp
        err = np.sqrt(sum_ppv) / spp
        area = np.einsum("ij->i", p) ** 2 / spp
    none = ~(spp > 0)
    return flux, err, area, none, edge


def psf_flux_failed(flux: np.ndarray, err: np.ndarray, none: np.ndarray, edge: np.ndarray
                    ) -> np.ndarray:
    """base_PsfFlux's general flag from its fit: every specific flag sets it (FlagHandler),
    and so does a value that is not finite (meas_base's PixelValueError)."""
    return none | edge | ~np.isfinite(flux) | ~np.isfinite(err)


@register
class PsfFlux(Plugin):
    """A linear fit of the PSF model at the slot centroid (meas_base's PsfFlux.cc).

    ``flag_edge`` where the model runs off the image (or onto NO_DATA), ``flag_noGoodPixels``
    where no pixel is left; both set the general flag, as does a flagged slot centroid.
    Departure: BAD, SAT and NO_DATA pixels are left out of the fit by default (meas_base's
    ``badMaskPlanes`` default is empty); base_PixelFlags says where they were.
    """

    name = "base_PsfFlux"
    order = FLUX_ORDER
    uses_centroid = True

    def columns(self, ctx: MeasurementContext) -> list[Column]:
        n = self.name
        return [
            Column(f"{n}_instFlux", "f8", "ct", "Flux of a PSF model fit at the centroid."),
            Column(f"{n}_instFluxErr", "f8", "ct", "1σ uncertainty of the PSF flux."),
            Column(f"{n}_area", "f4", "pix", "Effective area of the PSF, (ΣP)²/ΣP²."),
            Column(f"{n}_flag_noGoodPixels", "bool", None, "No usable pixel under the PSF."),
            Column(f"{n}_flag_edge", "bool", None,
                   "Object was too close to the edge of the image to use the full PSF model "
                   "(part of it off the image or on NO_DATA pixels)."),
        ]

    def measure(self, ctx: MeasurementContext, out: dict[str, np.ndarray]) -> None:
        if ctx.n_sources == 0:
            return
        ex = ctx.exposure
        sampler = PsfSampler(ctx.psf, psf_fit_radius(ctx.psf, ex.width / 2, ex.height / 2))
        half = sampler.half
        st = ctx.stamps(half)
        rows, cols = half + sampler.dy, half + sampler.dx
        flux, err, area, none, edge = fixed_psf_photometry(
            st.image[:, rows, cols], st.variance[:, rows, cols], st.mask[:, rows, cols],
            st.on_image[:, rows, cols], ctx.x, ctx.y, sampler, ex.planes, BAD_PLANES)
        n = self.name
        out[f"{n}_instFlux"][:] = np.where(none, np.nan, flux)
        out[f"{n}_instFluxErr"][:] = np.where(none, np.nan, err)
        out[f"{n}_area"][:] = area
        out[f"{n}_flag_noGoodPixels"][:] = none
        out[f"{n}_flag_edge"][:] = edge
        out[f"{n}_flag"][:] = psf_flux_failed(flux, err, none, edge)


@register
class GaussianFlux(Plugin):
    """Flux in an elliptical Gaussian weight of the slot shape (×2), at the slot centroid
    (meas_base's GaussianFlux.cc): NaN and flagged where the shape is unusable (not finite
    or singular), flagged where the slot centroid or shape is."""

    name = "base_GaussianFlux"
    order = FLUX_ORDER
    uses_centroid = True
    uses_shape = True

    def columns(self, ctx: MeasurementContext) -> list[Column]:
        n = self.name
        return [
            Column(f"{n}_instFlux", "f8", "ct", "Flux in a Gaussian weight of the source's shape."),
            Column(f"{n}_instFluxErr", "f8", "ct", "1σ uncertainty of the Gaussian flux."),
        ]

    def measure(self, ctx: MeasurementContext, out: dict[str, np.ndarray]) -> None:
        if ctx.n_sources == 0:
            return
        xx, yy, xy = ctx.shape_xx, ctx.shape_yy, ctx.shape_xy
        # SafeShapeExtractor: NaN, or Ixx·Iyy not above (1 + 1e-6)·Ixy²
        no_shape = ~(np.isfinite(xx + yy + xy) & (xx * yy > (1 + 1e-6) * xy * xy))
        xx = np.where(no_shape, 1.0, xx)
        yy = np.where(no_shape, 1.0, yy)
        xy = np.where(no_shape, 0.0, xy)
        half = int(np.clip(np.ceil(4 * np.sqrt(np.max(np.maximum(xx, yy)))), 6, 30))
        st = ctx.stamps(half)
        dx, dy = stamp_offsets(half, st.x0, st.y0, ctx.x, ctx.y)
        w = gaussian_weight(dx, dy, xx, yy, xy)
        good = st.on_image & ~ctx.exposure.planes.any(st.mask, BAD_PLANES)
        np.copyto(w, 0.0, where=~good)
        # products into one zeroed scratch cube, written on good pixels only: bad ones may
        # hold NaN, and the cubes are large enough that each temporary costs
        prod = np.zeros_like(w)
        flux = np.multiply(w, st.image, out=prod, where=good).sum(axis=(1, 2))
        np.multiply(w, w, out=prod)
        var = np.multiply(prod, st.variance, out=prod, where=good).sum(axis=(1, 2))
        n = self.name
        out[f"{n}_instFlux"][:] = np.where(no_shape, np.nan, 2 * flux)
        out[f"{n}_instFluxErr"][:] = np.where(no_shape, np.nan, 2 * np.sqrt(var))
        out[f"{n}_flag"][:] = no_shape


EXACT_MAX_RADIUS = 12.0  # LSST uses sinc apertures up to ~10-12 px and naive ones beyond


@register
class CircularApertureFlux(Plugin):
    """Fluxes in circular apertures of the configured radii.

    Radii up to 12 px use the exact area of overlap of each pixel with the circle; larger
    ones count the pixels whose centre is inside (LSST's "naive" apertures), summed column
    by column from cumulative sums of the noise-replaced image (``naive_aperture_sums``).
    Each radius's ``_flag`` is set where its aperture runs off the image, its sum is not
    finite, or the slot centroid is flagged (one flag handler per aperture, as meas_base).
    """

    name = "base_CircularApertureFlux"
    order = FLUX_ORDER
    uses_centroid = True

    def results(self, ctx: MeasurementContext) -> list[str]:
        return [f"{self.name}_{radius_name(r)}" for r in ctx.aperture_radii]

    def failure_flags(self, ctx: MeasurementContext) -> list[str]:
        return [f"{stem}_flag" for stem in self.results(ctx)]

    def columns(self, ctx: MeasurementContext) -> list[Column]:
        cols = []
        for r in ctx.aperture_radii:
            stem = f"{self.name}_{radius_name(r)}"
            cols += [
                Column(f"{stem}_instFlux", "f8", "ct", f"Flux within a {r:g}-pixel radius."),
                Column(f"{stem}_instFluxErr", "f8", "ct", f"1σ uncertainty, {r:g}-pixel radius."),
                Column(f"{stem}_flag", "bool", None, f"The {r:g}-pixel aperture failed."),
                Column(f"{stem}_flag_apertureTruncated", "bool", None,
                       f"The {r:g}-pixel aperture runs off the image."),
            ]
        return cols

    def measure(self, ctx: MeasurementContext, out: dict[str, np.ndarray]) -> None:
        if ctx.n_sources == 0:
            return
        exact = [r for r in ctx.aperture_radii if r <= EXACT_MAX_RADIUS]
        naive = [r for r in ctx.aperture_radii if r > EXACT_MAX_RADIUS]
        h, w = ctx.exposure.shape
        for r in ctx.aperture_radii:
            stem = f"{self.name}_{radius_name(r)}"
            trunc = (ctx.x - r < -0.5) | (ctx.y - r < -0.5) | (ctx.x + r > w - 0.5) | (
                ctx.y + r > h - 0.5)
            out[f"{stem}_flag_apertureTruncated"][:] = trunc
        if exact:
            half = int(np.ceil(max(exact))) + 1
            st = ctx.stamps(half)
            img = np.where(st.on_image, st.image, 0)
            var = np.where(st.on_image, st.variance, 0)
            for r in exact:
                ov = exact_circle_weights(ctx.x - st.x0, ctx.y - st.y0, 2 * half + 1, r)
                self._store(out, r, (ov * img).sum(axis=(1, 2)),
                            np.sqrt((ov * ov * var).sum(axis=(1, 2))))
        if naive:
            flux, var = naive_aperture_sums(ctx, naive)
            for r, f, v in zip(naive, flux, var, strict=True):
                self._store(out, r, f, np.sqrt(v))

    def _store(self, out: dict[str, np.ndarray], r: float, flux: np.ndarray, err: np.ndarray
               ) -> None:
        stem = f"{self.name}_{radius_name(r)}"
        out[f"{stem}_instFlux"][:] = flux
        out[f"{stem}_instFluxErr"][:] = err
        out[f"{stem}_flag"][:] = ~np.isfinite(flux) | out[f"{stem}_flag_apertureTruncated"]


CHORD_BLOCK_ROWS = 256  # rows whose cumulative sums are held at a time


def column_chord_sums(plane: np.ndarray, cols: np.ndarray, ya: np.ndarray, yb: np.ndarray
                      ) -> np.ndarray:
    """Σ plane[ya:yb, col] (float64) of every column chord, non-finite pixels counted as 0.

    From cumulative sums down the columns, built a block of rows at a time and only for
    blocks that chords cross (a float64 copy of the whole image is never held); a chord
    crossing blocks is the sum of its parts. Each row is added to the running sums of the
    row above as one vector: a cumulative sum along a row would be a chain of dependent
    additions, three times slower.
    """
    h, w = plane.shape
    out = np.zeros(len(cols))
    cs = np.zeros((CHORD_BLOCK_ROWS + 1, w))
    for top in range(0, h, CHORD_BLOCK_ROWS):
        bottom = min(top + CHORD_BLOCK_ROWS, h)
        part = np.flatnonzero((ya < bottom) & (yb > top))
        if len(part) == 0:
            continue
        block = plane[top:bottom]
        if not np.isfinite(block).all():
            block = np.nan_to_num(block, posinf=0.0)
        for i, row in enumerate(block):  # a row at a time: each a vector over the width
            np.add(cs[i], row, out=cs[i + 1])
        lo = np.clip(ya[part], top, bottom) - top
        hi = np.clip(yb[part], top, bottom) - top
        out[part] += cs[hi, cols[part]] - cs[lo, cols[part]]
    return out


def naive_aperture_sums(ctx: MeasurementContext, radii: list[float]
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Sums of (image, variance) over pixels whose centres lie within each radius, (R, N).

    The image is the noise-replaced one with each source's own footprint added back: sums
    over the noise image by column chords, plus the source's footprint pixels inside the
    circle times (own value − noise value). All radii share one pass of column cumulative
    sums, so a 70-pixel aperture costs 141 look-ups per source rather than 20,000 pixels.
    """
    h, w = ctx.exposure.shape
    x, y = ctx.x, ctx.y
    n = ctx.n_sources
    chords = []
    for r in radii:
        dxi = np.arange(-int(np.ceil(r)), int(np.ceil(r)) + 1)
        cols = np.round(x).astype(np.int64)[:, None] + dxi[None, :]
        chord2 = r * r - (cols - x[:, None]) ** 2
        half_h = np.sqrt(np.maximum(chord2, 0))
        ya = np.clip(np.ceil(y[:, None] - half_h).astype(np.int64), 0, h)
        yb = np.clip(np.floor(y[:, None] + half_h).astype(np.int64) + 1, 0, h)
        chords.append((cols, ya, yb, (chord2 >= 0) & (cols >= 0) & (cols < w)))
    valid = np.concatenate([c[3].ravel() for c in chords])
    cols, ya, yb = (np.concatenate([c[i].ravel() for c in chords])[valid] for i in range(3))
    sums = []
    for plane in (ctx.base_image, ctx.exposure.variance):
        per_chord = np.zeros(len(valid))
        per_chord[valid] = column_chord_sums(plane, cols, ya, yb)
        bounds = np.cumsum([0] + [c[3].size for c in chords])
        sums.append(np.stack([per_chord[bounds[k] : bounds[k + 1]].reshape(n, -1).sum(axis=1)
                              for k in range(len(radii))]) if n else np.zeros((len(radii), 0)))
    flux, var = sums
    if ctx.replace_with_noise:
        src, fy, fx, own = ctx.footprint_pixels()
        d2 = (fx - x[src]) ** 2 + (fy - y[src]) ** 2
        delta = own - ctx.base_image[fy, fx]
        for k, r in enumerate(radii):
            flux[k] += np.bincount(src, weights=np.where(d2 <= r * r, delta, 0), minlength=n)
    return flux, var


@register
class LocalBackground(Plugin):
    """Clipped mean (3σ, 3 iterations) of the pixels in an annulus of 7σ–15σ of the PSF at
    the source (meas_base's LocalBackground.cc). Only BAD, SAT and NO_DATA pixels are left
    out: other sources are replaced by noise, and leaving out DETECTED would leave no pixel
    on an extended source, where the local background matters most."""

    name = "base_LocalBackground"
    order = FLUX_ORDER
    uses_centroid = True
    inner = 7.0
    outer = 15.0
    bad_planes = BAD_PLANES

    def columns(self, ctx: MeasurementContext) -> list[Column]:
        n = self.name
        return [
            Column(f"{n}_instFlux", "f8", "ct", "Local background level per pixel."),
            Column(f"{n}_instFluxErr", "f8", "ct", "Clipped stdev of the annulus pixels."),
            Column(f"{n}_flag_noGoodPixels", "bool", None, "No good pixels in the annulus."),
            Column(f"{n}_flag_noPsf", "bool", None, "No PSF provided."),
        ]

    def measure(self, ctx: MeasurementContext, out: dict[str, np.ndarray]) -> None:
        if ctx.n_sources == 0:
            return
        n = self.name
        if ctx.exposure.psf is None:
            out[f"{n}_flag_noPsf"][:] = True
            out[f"{n}_flag"][:] = True
            return
        sigma = ctx.psf_sigma()
        r_in, r_out = self.inner * sigma, self.outer * sigma
        half = int(np.ceil(np.max(r_out))) + 1
        st = ctx.stamps(half)
        dx, dy = stamp_offsets(half, st.x0, st.y0, ctx.x, ctx.y)
        d2 = dx * dx + dy * dy
        excluded = ctx.exposure.planes.any(st.mask, self.bad_planes)
        use = ((d2 > (r_in**2)[:, None, None]) & (d2 <= (r_out**2)[:, None, None])
               & st.on_image & ~excluded)
        values = np.where(use, st.image, np.nan).reshape(ctx.n_sources, -1)
        mean, _, std = clipped_stats(values, axis=-1)
        none = ~use.any(axis=(1, 2))
        out[f"{n}_instFlux"][:] = mean
        out[f"{n}_instFluxErr"][:] = std
        out[f"{n}_flag_noGoodPixels"][:] = none
        out[f"{n}_flag"][:] = none | ~np.isfinite(mean)
