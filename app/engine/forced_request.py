"""One forced request, as the synchronous endpoint and the forced job both run it.

Beyond the client's rows: random blank-sky positions added after them (tagged
``position_kind``), and each row matched to the nearest detected object (``match=true``),
so a comparison of forced and detection fluxes needs no client-side matching.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from scipy.spatial import cKDTree

from app.engine.columns import ColumnInfo, ColumnSet
from app.engine.config import ForcedConfig
from app.engine.exposure import Exposure
from app.engine.forced import COORDINATES, positions_kind, run_forced
from app.engine.psf import psf_fwhm
from app.engine.random_positions import BlankSkyMap, NotEnoughBlankSky, blank_sky_map

POSITION_KIND = "position_kind"
MATCH_COLUMNS = ("match_id", "match_distance_px", "match_base_PsfFlux_instFlux",
                 "match_base_PsfFlux_instFluxErr")


class RequestError(ValueError):
    """A request that cannot be measured as asked; ``code`` names why."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RandomSpec:
    """Blank-sky positions to add: ``n`` of them ≥ ``min_distance_px`` from detections."""

    n: int
    min_distance_px: float = 40.0
    seed: int = 0


@dataclass(frozen=True)
class Detections:
    """The detected objects (deblend_nChild = 0) a forced row may be matched to."""

    id: np.ndarray
    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray

    @classmethod
    def from_catalog(cls, catalog: Table) -> Detections:
        """The objects of a detection catalog with a centroid (blends' parents left out)."""
        x = np.asarray(catalog["base_SdssCentroid_x"], float)
        y = np.asarray(catalog["base_SdssCentroid_y"], float)
        keep = (np.asarray(catalog["deblend_nChild"]) == 0) & np.isfinite(x) & np.isfinite(y)
        return cls(np.asarray(catalog["id"], np.int64)[keep], x[keep], y[keep],
                   np.asarray(catalog["base_PsfFlux_instFlux"], float)[keep],
                   np.asarray(catalog["base_PsfFlux_instFluxErr"], float)[keep])


def measure_request(exposure: Exposure, positions: ColumnSet | None, config: ForcedConfig, *,
                    random: RandomSpec | None = None, blank_sky: BlankSkyMap | None = None,
                    match_radius_px: float | None = None,
                    detections: Callable[[], Detections] | None = None) -> ColumnSet:
    """The client's rows, then the random ones (drawn from ``blank_sky`` when the caller
    keeps the map), measured; matched when ``detections`` is given (read only then), within
    ``match_radius_px`` (default 2 × the PSF FWHM).

    Raises `RequestError` when there is nothing to measure, the random positions do not
    fit, or RA/Dec positions meet an exposure without a WCS.
    """
    table = positions
    if random is not None:
        table = with_random(exposure, table, draw_random(exposure, random, blank_sky))
    if table is None:
        raise RequestError("give at least one position, or ask for random ones",
                           code="no_positions")
    if positions_kind(table.names)[2] and exposure.wcs is None:
        raise RequestError("the exposure has no WCS; give positions as x and y", code="no_wcs")
    result = run_forced(exposure, table, config)
    if detections is not None:
        assert exposure.psf is not None
        radius = match_radius_px or 2 * psf_fwhm(exposure.psf, exposure.width / 2,
                                                 exposure.height / 2)
        add_matches(result, pixel_positions(exposure, table), detections(), radius)
    return result


def draw_random(exposure: Exposure, spec: RandomSpec, blank_sky: BlankSkyMap | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Parent-frame pixel positions on blank sky (`RequestError` if they do not fit), from
    ``blank_sky`` when given (it must be the exposure's, for ``spec.min_distance_px``)."""
    if blank_sky is None:
        blank_sky = blank_sky_map(exposure, spec.min_distance_px)
    require_blank_sky(blank_sky, spec.n)
    return blank_sky.draw(spec.n, spec.seed)


def require_blank_sky(blank_sky: BlankSkyMap, n: int) -> None:
    """`RequestError` unless ``blank_sky`` holds ``n`` positions."""
    try:
        blank_sky.require(n)
    except NotEnoughBlankSky as error:
        raise RequestError(str(error), code="not_enough_blank_sky") from error


def with_random(exposure: Exposure, table: ColumnSet | None,
                xy: tuple[np.ndarray, np.ndarray]) -> ColumnSet:
    """The client's rows tagged "input", then random rows at parent-frame pixels ``xy``
    tagged "random" (tags masked)."""
    x, y = xy
    sky = table is not None and positions_kind(table.names)[2]
    a, b = ("ra", "dec") if sky else ("x", "y")
    va, vb = exposure.pixel_to_sky(x, y) if sky else (x, y)
    kind = ColumnInfo(None, 'Where the position came from: "input" or "random".')
    extra = ColumnSet.from_arrays({a: np.asarray(va, float), b: np.asarray(vb, float)},
                                  {a: COORDINATES[a], b: COORDINATES[b]})
    extra.add(POSITION_KIND, np.full(len(x), "random"), kind)
    if table is None:
        return extra
    tagged = table.copy()
    tagged.add(POSITION_KIND, np.full(len(table), "input"), kind)
    return tagged.concat(extra)


def pixel_positions(exposure: Exposure, table: ColumnSet) -> tuple[np.ndarray, np.ndarray]:
    """The rows' parent-frame pixel positions."""
    a, b, sky = positions_kind(table.names)
    va, vb = np.asarray(table[a], float), np.asarray(table[b], float)
    if not sky:
        return va, vb
    x, y = exposure.sky_to_pixel(va, vb)
    return np.asarray(x, float), np.asarray(y, float)


def on_image(exposure: Exposure, table: ColumnSet) -> np.ndarray:
    """Which rows' positions fall on the exposure's pixels."""
    x, y = pixel_positions(exposure, table)
    ox, oy = exposure.xy0
    with np.errstate(invalid="ignore"):
        return exposure.on_pixels(x - ox, y - oy)


def add_matches(result: ColumnSet, xy: tuple[np.ndarray, np.ndarray], objects: Detections,
                radius: float) -> None:
    """Add the nearest detected object within ``radius`` pixels (-1 / NaN when none),
    through a KD-tree over the objects, as the tutorial compares forced and detection
    fluxes object by object."""
    n = len(result)
    ids = np.full(n, -1, np.int64)
    dist = np.full(n, np.nan)
    flux = np.full(n, np.nan)
    err = np.full(n, np.nan)
    x, y = xy
    finite = np.isfinite(x) & np.isfinite(y)
    if len(objects.id) and finite.any():
        tree = cKDTree(np.column_stack([objects.x, objects.y]))
        d, k = tree.query(np.column_stack([x[finite], y[finite]]), distance_upper_bound=radius)
        hit = np.isfinite(d)
        rows = np.nonzero(finite)[0][hit]
        ids[rows] = objects.id[k[hit]]
        dist[rows], flux[rows], err[rows] = d[hit], objects.flux[k[hit]], objects.flux_err[k[hit]]
    result.add("match_id", ids, ColumnInfo(None, "id of the nearest detected object, -1 if none."))
    result.add("match_distance_px", dist, ColumnInfo("pix", "Distance to that object, pixels."))
    result.add("match_base_PsfFlux_instFlux", flux,
               ColumnInfo("ct", "Its base_PsfFlux_instFlux in the detection catalog."))
    result.add("match_base_PsfFlux_instFluxErr", err,
               ColumnInfo("ct", "Its base_PsfFlux_instFluxErr in the detection catalog."))
