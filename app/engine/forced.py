"""Forced measurement at positions the caller chooses: LSST's ForcedMeasurementTask.

Plugins (LSST names): ``base_TransformedCentroid`` (RA/Dec through the WCS, or pixels as
given), ``base_PsfFlux`` (a linear fit of the PSF at that fixed position,
F = ΣP·D / ΣP², σ² = ΣP²V / (ΣP²)², pixels with ``badMaskPlanes`` left out, the same fit
and flags as single-frame measurement, then the exposure's aperture correction applied as
ApplyApCorrTask does), ``base_TransformedShape`` (the caller's shape when given, else the
PSF's adaptive moments), ``base_PixelFlags``, and optionally ``base_CircularApertureFlux``
and ``base_LocalBackground``. The slots are ForcedMeasurementTask's: ``slot_Centroid`` is
base_TransformedCentroid and ``slot_Shape`` base_TransformedShape (`forced_aliases`).

Every input row comes back, in input order, with the caller's columns unchanged beside the
measurements; a position off the image or on NO_DATA keeps its row with a flag and NaN
flux. Positions are processed in chunks, each fully vectorized: no Python loop per position.
A request of a few positions costs a fraction of a millisecond, so everything that does not
depend on the positions (columns, the PSF's size, the sampler) is made once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from astropy.table import Table

from app.engine.columns import ColumnInfo, ColumnSet
from app.engine.config import ForcedConfig, radius_name
from app.engine.exposure import Exposure
from app.engine.measure.cubes import exact_circle_weights
from app.engine.measure.plugins.flux import (
    LocalBackground,
    fixed_psf_photometry,
    psf_fit_radius,
    psf_flux_failed,
)
from app.engine.measure.plugins.shape import psf_moments_at
from app.engine.measure.registry import Column
from app.engine.measure.slots import META_KEY, meta_entries
from app.engine.psf import SIGMA_TO_FWHM, psf_fwhm
from app.engine.psf_sampling import PsfSampler
from app.engine.stats import clipped_stats

CHUNK = 2048  # positions per pass: a chunk's (N, P) arrays stay in the CPU's cache
APERTURE_PIXELS = CHUNK * 27 * 27  # pixels gathered at once for apertures (12 px: one chunk)
SKY_COLUMNS = (("ra", "dec"), ("coord_ra", "coord_dec"))
PIXEL_COLUMNS = (("x", "y"),)
SHAPE_COLUMNS = ("shape_xx", "shape_yy", "shape_xy")
COORDINATES = {
    "ra": ColumnInfo("deg", "Right ascension (ICRS) given for the position."),
    "dec": ColumnInfo("deg", "Declination (ICRS) given for the position."),
    "x": ColumnInfo("pix", "Pixel x given for the position (parent frame)."),
    "y": ColumnInfo("pix", "Pixel y given for the position (parent frame)."),
}
FLAG_PLANES = {
    "edge": ["EDGE", "NO_DATA"],
    "interpolated": ["INTRP"],
    "saturated": ["SAT"],
    "cr": ["CR"],
    "bad": ["BAD"],
    "suspect": ["SUSPECT"],
}
OFF_IMAGE = -1e6  # where a position that is not finite is measured: off any image


def positions_kind(names: Iterable[str]) -> tuple[str, str, bool]:
    """The two position columns among ``names`` and whether they are sky coordinates."""
    names = list(names)
    for a, b in SKY_COLUMNS:
        if a in names and b in names:
            return a, b, True
    for a, b in PIXEL_COLUMNS:
        if a in names and b in names:
            return a, b, False
    raise ValueError(
        "positions need columns ra and dec (degrees, ICRS) or x and y (pixels); "
        f"got columns {names}")


def forced_columns(config: ForcedConfig, calibrated: bool) -> list[Column]:
    """The measurement columns, with units and descriptions, for these plugins."""
    return list(_layout(config, calibrated).columns)


@dataclass(frozen=True)
class _Layout:
    """What one set of plugins writes, worked out once: the columns (with their
    `ColumnInfo`), their names, and the stems that get calibrated ``_flux`` columns."""

    columns: tuple[Column, ...]
    infos: tuple[ColumnInfo, ...]
    names: frozenset[str]
    calibrated_stems: tuple[str, ...]


def _layout(config: ForcedConfig, calibrated: bool) -> _Layout:
    return _layout_for(tuple(config.plugins), tuple(config.apertureRadii), calibrated)


@lru_cache(maxsize=64)
def _layout_for(plugins: tuple[str, ...], radii: tuple[float, ...], calibrated: bool
                ) -> _Layout:
    cols = _forced_columns(plugins, radii, calibrated)
    return _Layout(cols, tuple(ColumnInfo(c.unit, c.description) for c in cols),
                   frozenset(c.name for c in cols),
                   tuple(c.name[: -len("_flux")] for c in cols if c.name.endswith("_flux")))


def _forced_columns(plugins: tuple[str, ...], radii: tuple[float, ...], calibrated: bool
                    ) -> tuple[Column, ...]:
    cols: list[Column] = []
    if "base_TransformedCentroid" in plugins:
        cols += [
            Column("base_TransformedCentroid_x", "f8", "pix", "Forced position x (parent frame)."),
            Column("base_TransformedCentroid_y", "f8", "pix", "Forced position y (parent frame)."),
            Column("coord_ra", "f8", "deg", "Right ascension (ICRS) of the forced position."),
            Column("coord_dec", "f8", "deg", "Declination (ICRS) of the forced position."),
            Column("base_TransformedCentroid_flag", "bool", None,
                   "The position could not be transformed (no WCS, or not finite)."),
        ]
    if "base_PsfFlux" in plugins:
        cols += [
            Column("base_PsfFlux_instFlux", "f8", "ct", "PSF flux at the fixed position."),
            Column("base_PsfFlux_instFluxErr", "f8", "ct", "1σ uncertainty of the PSF flux."),
            Column("base_PsfFlux_area", "f4", "pix", "Effective area of the PSF, (ΣP)²/ΣP²."),
            Column("base_PsfFlux_apCorr", "f8", None,
                   "Aperture correction applied (the exposure's; 1 when it has none; "
                   "NaN where it could not be applied)."),
            Column("base_PsfFlux_apCorrErr", "f8", None,
                   "Standard deviation of the aperture correction applied."),
            Column("base_PsfFlux_flag", "bool", None,
                   "General failure flag: set with any other base_PsfFlux flag."),
            Column("base_PsfFlux_flag_noGoodPixels", "bool", None,
                   "No usable pixel under the PSF (off the image, or all masked)."),
            Column("base_PsfFlux_flag_edge", "bool", None,
                   "Object was too close to the edge of the image to use the full PSF model "
                   "(part of it off the image or on NO_DATA pixels)."),
            Column("base_PsfFlux_flag_apCorr", "bool", None,
                   "The exposure has aperture corrections but none could be applied here."),
        ]
        if calibrated:
            cols += [Column("base_PsfFlux_flux", "f8", "nJy", "Calibrated PSF flux."),
                     Column("base_PsfFlux_fluxErr", "f8", "nJy", "1σ uncertainty, calibrated.")]
    if "base_TransformedShape" in plugins:
        cols += [
            Column("base_TransformedShape_xx", "f8", "pix2", "Shape moment Ixx used here."),
            Column("base_TransformedShape_yy", "f8", "pix2", "Shape moment Iyy used here."),
            Column("base_TransformedShape_xy", "f8", "pix2", "Shape moment Ixy used here."),
            Column("base_TransformedShape_flag", "bool", None,
                   "No shape: the input gave none and the PSF's could not be computed."),
        ]
    if "base_PixelFlags" in plugins:
        cols.append(Column("base_PixelFlags_flag_offimage", "bool", None,
                           "The position is off the image."))
        for name in FLAG_PLANES:
            cols.append(Column(f"base_PixelFlags_flag_{name}", "bool", None,
                               f"{'/'.join(FLAG_PLANES[name])} pixel within one PSF FWHM."))
            cols.append(Column(f"base_PixelFlags_flag_{name}Center", "bool", None,
                               f"{'/'.join(FLAG_PLANES[name])} pixel within 1 pixel."))
    if "base_CircularApertureFlux" in plugins:
        for r in radii:
            stem = f"base_CircularApertureFlux_{radius_name(r)}"
            cols += [
                Column(f"{stem}_instFlux", "f8", "ct", f"Flux within {r:g} pixels (exact)."),
                Column(f"{stem}_instFluxErr", "f8", "ct", f"1σ uncertainty, {r:g} pixels."),
                Column(f"{stem}_flag", "bool", None, f"The {r:g}-pixel aperture leaves the image."),
            ]
            if calibrated:
                cols += [Column(f"{stem}_flux", "f8", "nJy", f"Calibrated {r:g}-pixel flux."),
                         Column(f"{stem}_fluxErr", "f8", "nJy", "1σ uncertainty, calibrated.")]
    if "base_LocalBackground" in plugins:
        cols += [
            Column("base_LocalBackground_instFlux", "f8", "ct", "Local background per pixel."),
            Column("base_LocalBackground_instFluxErr", "f8", "ct", "Clipped stdev in the annulus."),
            Column("base_LocalBackground_flag", "bool", None,
                   "General failure flag: set with any other base_LocalBackground flag."),
            Column("base_LocalBackground_flag_noGoodPixels", "bool", None,
                   "No good pixels in the annulus."),
        ]
    return tuple(cols)


@dataclass(frozen=True)
class _PsfScale:
    """What every position of one exposure shares: the PSF's FWHM at the centre and the
    sampler of its fit disk."""

    fwhm: float
    sampler: PsfSampler


def run_forced(
    exposure: Exposure, positions: ColumnSet | Table, config: ForcedConfig | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> ColumnSet:
    """Forced measurements at every row of ``positions`` (which must carry a PSF'd exposure).

    Returns the input columns unchanged, then the columns of ``config``'s plugins
    (`forced_columns`), one row per input row, in input order.
    """
    config = config or ForcedConfig()
    if exposure.psf is None:
        raise ValueError("forced photometry needs the exposure's PSF; characterize it first")
    if isinstance(positions, Table):
        positions = ColumnSet.from_table(positions)
    a, b, from_sky = positions_kind(positions.names)
    n = len(positions)
    cal = exposure.photo_calib
    layout = _layout(config, cal is not None)
    clash = sorted(layout.names.intersection(positions.names))
    if clash:
        raise ValueError(f"input columns {clash} have the names of measurement columns; "
                         "rename them")
    va = np.asarray(positions[a], dtype=float)
    vb = np.asarray(positions[b], dtype=float)
    if from_sky:
        if exposure.wcs is None:
            raise ValueError("positions are RA/Dec but the exposure has no WCS; give x and y")
        ra, dec = va, vb
        x, y = exposure.sky_to_pixel(ra, dec)
    else:
        x, y = va, vb
        ra, dec = (exposure.pixel_to_sky(x, y) if exposure.wcs is not None
                   else (np.full(n, np.nan), np.full(n, np.nan)))
    finite = np.isfinite(x) & np.isfinite(y)
    ax = np.where(finite, x - exposure.xy0[0], OFF_IMAGE)  # array frame
    ay = np.where(finite, y - exposure.xy0[1], OFF_IMAGE)
    plugins = set(config.plugins)
    out: dict[str, np.ndarray] = {}
    if "base_TransformedCentroid" in plugins:
        out.update(base_TransformedCentroid_x=x, base_TransformedCentroid_y=y,
                   coord_ra=ra, coord_dec=dec, base_TransformedCentroid_flag=~finite)
    out.update(_measure_chunks(exposure, config, ax, ay, progress))
    if "base_PsfFlux" in plugins:
        if "base_TransformedCentroid" in plugins:  # the slot centroid's flag (badCentroid)
            out["base_PsfFlux_flag"] = out["base_PsfFlux_flag"] | ~finite
        out.update(_apply_ap_corr(exposure, ax, ay, out))
    if "base_TransformedShape" in plugins:
        out.update(_shapes(exposure, positions, ax, ay))
    if cal is not None:
        for stem in layout.calibrated_stems:
            out[f"{stem}_flux"] = out[f"{stem}_instFlux"] * cal.njy_per_count
            out[f"{stem}_fluxErr"] = out[f"{stem}_instFluxErr"] * cal.njy_per_count
    result = positions.copy()
    for c, info in zip(layout.columns, layout.infos, strict=True):
        result.add(c.name, out[c.name].astype(c.dtype, copy=False), info)
    result.meta = {META_KEY: meta_entries(forced_aliases(config))}
    return result


def forced_aliases(config: ForcedConfig) -> dict[str, str]:
    """ForcedMeasurementTask's slots (centroid and shape: the transformed ones; no flux
    slots), and base_PsfFlux's ``flag_badCentroid``, for the plugins ``config`` runs."""
    plugins = set(config.plugins)
    aliases = {}
    if "base_TransformedCentroid" in plugins:
        aliases["slot_Centroid"] = "base_TransformedCentroid"
        if "base_PsfFlux" in plugins:
            aliases["base_PsfFlux_flag_badCentroid"] = "base_TransformedCentroid_flag"
    if "base_TransformedShape" in plugins:
        aliases["slot_Shape"] = "base_TransformedShape"
    return aliases


def _psf_scale(exposure: Exposure) -> _PsfScale:
    """The exposure's `_PsfScale`, made once per PSF model (kept on the model)."""
    psf = exposure.psf
    assert psf is not None
    key = (exposure.width, exposure.height)
    cache = psf.__dict__.setdefault("_forced_scale", {})
    if key not in cache:
        x, y = exposure.width / 2, exposure.height / 2
        cache[key] = _PsfScale(psf_fwhm(psf, x, y), PsfSampler(psf, psf_fit_radius(psf, x, y)))
    return cache[key]


def _measure_chunks(exposure: Exposure, config: ForcedConfig, ax: np.ndarray, ay: np.ndarray,
                    progress: Callable[[float, str], None] | None) -> dict[str, np.ndarray]:
    """The per-pixel plugins' columns: one chunk for a small request; for a large one,
    chunks in the order the positions' pixels lie in memory (row-major), so that each
    chunk's gathers read neighbouring cache lines instead of jumping across the image."""
    n = len(ax)
    scale = _psf_scale(exposure)
    if n <= CHUNK:
        part = _measure_chunk(exposure, config, ax, ay, scale)
        if progress is not None:
            progress(1.0, "forced")
        return part
    w = exposure.shape[1]
    order = np.argsort(np.round(ay) * w + np.round(ax), kind="stable")
    out: dict[str, np.ndarray] = {}
    for start in range(0, n, CHUNK):
        rows = order[start:start + CHUNK]
        part = _measure_chunk(exposure, config, ax[rows], ay[rows], scale)
        for name, values in part.items():
            if name not in out:
                out[name] = np.empty(n, values.dtype)
            out[name][rows] = values
        if progress is not None:
            progress(min(start + CHUNK, n) / n, "forced")
    return out


def square_offsets(half: int) -> tuple[np.ndarray, np.ndarray]:
    """(dx, dy) of every pixel of a (2·half+1)² square about a centre pixel."""
    off = np.arange(-half, half + 1)
    gy, gx = np.meshgrid(off, off, indexing="ij")
    return gx.ravel(), gy.ravel()


def _gather(exposure: Exposure, ax: np.ndarray, ay: np.ndarray, dx: np.ndarray,
            dy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image, variance, mask, on_image), each (N, P): the pixels at offsets (dx, dy) from
    the pixel nearest each position. Off-image pixels read 0 with NO_DATA."""
    h, w = exposure.shape
    cx = np.round(ax).astype(np.int64)
    cy = np.round(ay).astype(np.int64)
    reach = int(max(np.abs(dx).max(), np.abs(dy).max()))
    inside = (cx >= reach) & (cx < w - reach) & (cy >= reach) & (cy < h - reach)
    # one flat gather for every position; the few near the edges are then clipped
    idx = (cy * w + cx)[:, None] + (dy * w + dx)[None, :]
    on = np.ones(idx.shape, dtype=bool)
    edge = np.flatnonzero(~inside)
    if len(edge):
        yy, xx = cy[edge, None] + dy[None, :], cx[edge, None] + dx[None, :]
        on[edge] = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        idx[edge] = np.clip(yy, 0, h - 1) * w + np.clip(xx, 0, w - 1)
    # every index is in range by construction: "clip" skips take's bounds check per pixel
    image = exposure.image.ravel().take(idx, mode="clip")
    variance = exposure.variance.ravel().take(idx, mode="clip")
    mask = exposure.mask.ravel().take(idx, mode="clip")
    if len(edge):
        image[edge] = np.where(on[edge], image[edge], 0.0)
        variance[edge] = np.where(on[edge], variance[edge], 0.0)
        mask[edge] = np.where(on[edge], mask[edge], exposure.planes.bitmask("NO_DATA"))
    return image, variance, mask, on


def _offsets_from_position(ax: np.ndarray, ay: np.ndarray, dx: np.ndarray, dy: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
    """(N, P) offsets of the gathered pixels from each exact position."""
    return ((np.round(ax) - ax)[:, None] + dx[None, :],
            (np.round(ay) - ay)[:, None] + dy[None, :])


def _measure_chunk(exposure: Exposure, config: ForcedConfig, ax: np.ndarray, ay: np.ndarray,
                   scale: _PsfScale) -> dict[str, np.ndarray]:
    planes = exposure.planes
    sampler = scale.sampler
    out: dict[str, np.ndarray] = {}
    offimage = ~exposure.on_pixels(ax, ay)
    # the PSF fit's disk of pixels serves the pixel flags too
    image, variance, mask, on = _gather(exposure, ax, ay, sampler.dx, sampler.dy)
    if "base_PsfFlux" in config.plugins:
        centre_nodata = planes.any(mask[:, sampler.centre], "NO_DATA") | offimage
        flux, err, area, none, edge = fixed_psf_photometry(
            image, variance, mask, on, ax, ay, sampler, planes, config.badMaskPlanes)
        none |= centre_nodata
        out["base_PsfFlux_instFlux"] = np.where(none, np.nan, flux)
        out["base_PsfFlux_instFluxErr"] = np.where(none, np.nan, err)
        out["base_PsfFlux_area"] = area
        out["base_PsfFlux_flag_noGoodPixels"] = none
        out["base_PsfFlux_flag_edge"] = edge
        out["base_PsfFlux_flag"] = psf_flux_failed(flux, err, none, edge)
    if "base_PixelFlags" in config.plugins:
        d2 = sampler.dx**2 + sampler.dy**2
        # OR of the mask bits near each position, once; then every flag in one test
        near = np.bitwise_or.reduce(mask[:, d2 <= scale.fwhm**2], axis=1)
        centre = np.bitwise_or.reduce(mask[:, d2 <= 2], axis=1)
        bits = np.array([planes.bitmask(p) for p in FLAG_PLANES.values()], np.int32)
        near_set = (near[:, None] & bits) != 0
        centre_set = (centre[:, None] & bits) != 0
        out["base_PixelFlags_flag_offimage"] = offimage
        for k, name in enumerate(FLAG_PLANES):
            out[f"base_PixelFlags_flag_{name}"] = near_set[:, k]
            out[f"base_PixelFlags_flag_{name}Center"] = centre_set[:, k]
    if "base_CircularApertureFlux" in config.plugins:
        out.update(_apertures(exposure, config, ax, ay, offimage))
    if "base_LocalBackground" in config.plugins:
        out.update(_local_background(exposure, ax, ay, scale.fwhm))
    return out


def _apertures(exposure: Exposure, config: ForcedConfig, ax: np.ndarray, ay: np.ndarray,
               offimage: np.ndarray) -> dict[str, np.ndarray]:
    """Exact-overlap fluxes in every radius, over a square of pixels about each position;
    positions a few at a time when the square is large, so memory stays bounded whatever
    the radii."""
    h, w = exposure.shape
    radii = config.apertureRadii
    half = int(np.ceil(max(radii))) + 1
    dx, dy = square_offsets(half)
    step = max(1, APERTURE_PIXELS // len(dx))
    flux = np.empty((len(radii), len(ax)))
    var = np.empty((len(radii), len(ax)))
    for start in range(0, len(ax), step):
        part = slice(start, start + step)
        image, variance, _, _ = _gather(exposure, ax[part], ay[part], dx, dy)
        ox = half + ax[part] - np.round(ax[part])  # the position in the gathered square
        oy = half + ay[part] - np.round(ay[part])
        for k, r in enumerate(radii):
            ov = exact_circle_weights(ox, oy, 2 * half + 1, r).reshape(len(ox), -1)
            flux[k, part] = np.einsum("ij,ij->i", ov, image)
            var[k, part] = np.einsum("ij,ij->i", ov * ov, variance)
    out = {}
    for k, r in enumerate(radii):
        stem = f"base_CircularApertureFlux_{radius_name(r)}"
        trunc = (ax - r < -0.5) | (ay - r < -0.5) | (ax + r > w - 0.5) | (ay + r > h - 0.5)
        out[f"{stem}_instFlux"] = np.where(offimage, np.nan, flux[k])
        out[f"{stem}_instFluxErr"] = np.where(offimage, np.nan, np.sqrt(var[k]))
        out[f"{stem}_flag"] = trunc | offimage
    return out


def _apply_ap_corr(exposure: Exposure, ax: np.ndarray, ay: np.ndarray,
                   out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The PSF flux aperture-corrected as meas_base's ApplyApCorrTask does it: flux and
    error times the exposure's field (the naive error, as LSST's default), ``apCorrErr``
    its uncertainty; where the field is missing or not finite and positive (off the
    image, it is not defined), the flux is left as measured with ``flag_apCorr`` and the
    general flag (``doFlagApCorrFailures``). An exposure with no aperture corrections at
    all is measured uncorrected and unflagged (a correction of 1 on its pixels), as
    ForcedPhotCcdTask skips them."""
    n = len(ax)
    flux, err = out["base_PsfFlux_instFlux"], out["base_PsfFlux_instFluxErr"]
    on = exposure.on_pixels(ax, ay)
    if not exposure.ap_corr:
        return {"base_PsfFlux_apCorr": np.where(on, 1.0, np.nan),
                "base_PsfFlux_apCorrErr": np.where(on, 0.0, np.nan),
                "base_PsfFlux_flag_apCorr": np.zeros(n, dtype=bool)}
    field = exposure.ap_corr.get("base_PsfFlux")
    corr = np.full(n, np.nan)
    corr_err = np.full(n, np.nan)
    if field is not None:
        corr[on] = field(ax[on], ay[on])
        corr_err[on] = field.err
    good = np.isfinite(corr) & (corr > 0) & (corr_err >= 0)
    return {
        "base_PsfFlux_instFlux": np.where(good, flux * corr, flux),
        "base_PsfFlux_instFluxErr": np.where(good, err * corr, err),
        "base_PsfFlux_apCorr": corr, "base_PsfFlux_apCorrErr": corr_err,
        "base_PsfFlux_flag_apCorr": ~good, "base_PsfFlux_flag": out["base_PsfFlux_flag"] | ~good,
    }


def _local_background(exposure: Exposure, ax: np.ndarray, ay: np.ndarray, fwhm: float
                      ) -> dict[str, np.ndarray]:
    """Clipped mean in an annulus of 7σ–15σ of the PSF, single-frame's base_LocalBackground:
    BAD, SAT and NO_DATA pixels left out, detections kept. Departure: σ is the PSF's at the
    image centre (meas_base takes it at each position), so a request of many positions
    evaluates the PSF model once."""
    sigma = fwhm / SIGMA_TO_FWHM
    r_in, r_out = LocalBackground.inner * sigma, LocalBackground.outer * sigma
    dx, dy = square_offsets(int(np.ceil(r_out)) + 1)
    image, _, mask, on = _gather(exposure, ax, ay, dx, dy)
    ddx, ddy = _offsets_from_position(ax, ay, dx, dy)
    d2 = ddx * ddx + ddy * ddy
    excluded = exposure.planes.any(mask, LocalBackground.bad_planes)
    use = (d2 > r_in**2) & (d2 <= r_out**2) & on & ~excluded
    mean, _, std = clipped_stats(np.where(use, image, np.nan), axis=-1)
    none = ~use.any(axis=1)
    return {"base_LocalBackground_instFlux": mean, "base_LocalBackground_instFluxErr": std,
            "base_LocalBackground_flag": none | ~np.isfinite(mean),
            "base_LocalBackground_flag_noGoodPixels": none}


def _shapes(exposure: Exposure, positions: ColumnSet, ax: np.ndarray, ay: np.ndarray
            ) -> dict[str, np.ndarray]:
    """The caller's shape where given (pixels²), else the PSF's adaptive moments there;
    off the image (not-finite positions lie there too), where the PSF model is not
    defined, NaN and the flag."""
    assert exposure.psf is not None
    n = len(ax)
    on_image = exposure.on_pixels(ax, ay)
    if all(c in positions for c in SHAPE_COLUMNS):
        xx, yy, xy = (np.ma.filled(np.ma.asarray(positions[c], float), np.nan)
                      for c in SHAPE_COLUMNS)
    else:
        xx = yy = xy = np.full(n, np.nan)
    missing = ~np.isfinite(xx + yy + xy) & on_image
    if missing.any():
        xx, yy, xy = xx.copy(), yy.copy(), xy.copy()
        xx[missing], yy[missing], xy[missing] = psf_moments_at(exposure.psf, ax[missing],
                                                               ay[missing])
    out = {}
    for axis, values in (("xx", xx), ("yy", yy), ("xy", xy)):
        out[f"base_TransformedShape_{axis}"] = values
    out["base_TransformedShape_flag"] = ~np.isfinite(xx + yy + xy)
    return out
