"""Measurement flags and slots as meas_base sets them, on images whose sources are known."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.config import DetectConfig
from app.engine.exposure import Exposure, PhotoCalib
from app.engine.footprints import PEAK_DTYPE, SPAN_DTYPE, Footprint
from app.engine.measure.context import MeasurementContext
from app.engine.measure.plugins import centroid as centroid_plugin
from app.engine.measure.plugins import shape as shape_plugin
from app.engine.measure.plugins.centroid import SdssCentroid, binned_fits
from app.engine.measure.plugins.flux import LocalBackground, PsfFlux
from app.engine.measure.plugins.shape import SdssShape
from app.engine.measure.registry import run_plugins
from app.engine.measure.slots import from_meta, resolve
from app.engine.pipeline import run_detect
from app.engine.psf import GaussianPsf, pixel_gaussian

SIGMA = 1.7
NOISE = 5.0


def _image(shape: tuple[int, int], sources: list[tuple], noise: float, seed: int = 0
           ) -> np.ndarray:
    """Pixel-integrated Gaussians (x, y, flux[, sigma]) on Gaussian noise."""
    rng = np.random.default_rng(seed)
    pad = 60
    image = np.pad(rng.normal(0, noise, shape) if noise else np.zeros(shape), pad)
    for x, y, flux, *rest in sources:
        sigma = rest[0] if rest else SIGMA
        half = int(np.ceil(6 * sigma))
        ix, iy = int(round(x)), int(round(y))
        stamp = flux * pixel_gaussian(2 * half + 1, sigma, x - ix, y - iy)
        image[iy + pad - half: iy + pad + half + 1, ix + pad - half: ix + pad + half + 1] += stamp
    return image[pad:-pad, pad:-pad].astype(np.float32)


def _exposure(sources: list[tuple], shape: tuple[int, int] = (300, 300),
              noise: float = NOISE, seed: int = 0) -> Exposure:
    image = _image(shape, sources, noise, seed)
    variance = np.full(shape, max(noise, 1.0) ** 2, np.float32)
    return Exposure(image, np.zeros(shape, np.int32), variance,
                    psf=GaussianPsf(SIGMA, size=41), photo_calib=PhotoCalib.from_magzero(27.0))


def _config(**measurement: object) -> DetectConfig:
    cfg = DetectConfig()
    cfg.characterize.doMeasurePsf = False
    cfg.detection.reEstimateBackground = False
    cfg.measurement.doApCorr = False
    for key, value in measurement.items():
        setattr(cfg.measurement, key, value)
    return cfg


def _row(cat, x: float, y: float):
    d = np.hypot(np.asarray(cat["peak_x"]) - x, np.asarray(cat["peak_y"]) - y)
    assert d.min() < 3, (x, y)
    return cat[int(np.argmin(d))]


def _context(exposure: Exposure, boxes: list[tuple[int, int, int, int]],
             peaks: list[tuple[int, int]]) -> MeasurementContext:
    """One heavy rectangular footprint (x0, y0, x1, y1 inclusive) per source."""
    fps = []
    for (x0, y0, x1, y1), (px, py) in zip(boxes, peaks, strict=True):
        spans = np.array([(y, x0, x1) for y in range(y0, y1 + 1)], dtype=SPAN_DTYPE)
        peak = np.array([(0, px, py, exposure.image[py, px])], dtype=PEAK_DTYPE)
        fps.append(Footprint(spans=spans, peaks=peak).make_heavy(
            exposure.image, exposure.mask, exposure.variance))
    n = len(fps)
    return MeasurementContext(
        exposure=exposure, ids=np.arange(1, n + 1), parents=np.zeros(n, np.int64),
        footprints=fps, peak_x=np.array([p[0] for p in peaks], np.int64),
        peak_y=np.array([p[1] for p in peaks], np.int64))


def test_a_source_at_the_edge_keeps_its_peak_and_is_flagged():
    """3.2 px from the edge even the 5×5 fallback kernel's box leaves the image."""
    ex = _exposure([(3.2, 100.4, 30000.0)])
    ctx = _context(ex, [(0, 90, 12, 110)], [(3, 100)])
    out: dict[str, np.ndarray] = {}
    run_plugins([SdssCentroid(), PsfFlux()], ctx, out, {})
    assert out["base_SdssCentroid_flag_edge"][0] and out["base_SdssCentroid_flag"][0]
    assert not out["base_SdssCentroid_flag_near_edge"][0]
    assert (out["base_SdssCentroid_x"][0], out["base_SdssCentroid_y"][0]) == (3, 100)
    assert np.isnan(out["base_SdssCentroid_xErr"][0])
    assert out["base_PsfFlux_flag_edge"][0] and out["base_PsfFlux_flag"][0]


def test_near_the_edge_the_fallback_kernel_measures_and_flags_bad_centroids():
    """12.3 px in, the PSF kernel's box does not fit but the 5×5 one does
    (flag_near_edge: measured, and flagged); 150 px in, nothing is flagged."""
    stars = [(12.3, 200.6, 30000.0), (150.3, 150.7, 30000.0)]
    cat = run_detect(_exposure(stars), _config()).catalog
    near, inside = (_row(cat, x, y) for x, y, _ in stars)
    assert near["base_SdssCentroid_flag_near_edge"] and near["base_SdssCentroid_flag"]
    assert not near["base_SdssCentroid_flag_edge"]
    assert abs(near["base_SdssCentroid_x"] - 12.3) < 0.05
    assert abs(near["base_SdssCentroid_y"] - 200.6) < 0.05
    # its PSF flux is whole (not at the edge) but relied on a flagged centroid
    assert not near["base_PsfFlux_flag_edge"] and near["base_PsfFlux_flag"]
    assert near["base_GaussianFlux_flag"] and near["base_CircularApertureFlux_3_0_flag"]

    for flag in [c for c in cat.colnames if c.startswith(("base_SdssCentroid_flag",
                                                          "base_PsfFlux_flag"))]:
        assert not inside[flag], flag
    aliases = from_meta(cat.meta)
    assert aliases["base_PsfFlux_flag_badCentroid"] == "base_SdssCentroid_flag"
    assert aliases["base_GaussianFlux_flag_badShape"] == "base_SdssShape_flag"


def test_sdss_centroid_bins_a_large_source_and_finds_its_centre():
    """A Gaussian galaxy of σ = 8 px: its unsmoothed width² (64) exceeds
    wfac·(1 + σ_psf²) = 5.8 binned pixels² until the image is binned 4×."""
    galaxy, star = (140.3, 150.6, 4e5, 8.0), (60.2, 60.7, 3e4)
    ex = _exposure([galaxy, star], noise=0.0)
    ctx = _context(ex, [(100, 110, 180, 190), (50, 50, 70, 70)], [(140, 151), (60, 61)])
    fit = binned_fits(ctx, ctx.peak_x, ctx.peak_y)
    np.testing.assert_array_equal(fit["bins"], [[4, 4], [1, 1]])
    np.testing.assert_array_equal(fit["code"], [0, 0])
    np.testing.assert_allclose(fit["x"], [140.3, 60.2], atol=0.02)
    np.testing.assert_allclose(fit["y"], [150.6, 60.7], atol=0.02)


def test_centroid_checker_resets_a_centroid_outside_its_footprint():
    """A peak two pixels off a bright star's maximum, in a footprint that stops short of
    the star: the fit (binned 2×, as meas_base does) lands outside the footprint."""
    ex = _exposure([(100.0, 100.0, 5e4)], noise=0.0)
    inside = _context(ex, [(80, 80, 120, 120)], [(102, 100)])
    fit = binned_fits(inside, inside.peak_x, inside.peak_y)
    assert fit["code"][0] == 0 and 0.5 < 102 - fit["x"][0] < 1
    ctx = _context(ex, [(102, 80, 120, 120)], [(102, 100)])
    out: dict[str, np.ndarray] = {}
    run_plugins([SdssCentroid()], ctx, out, {})
    assert out["base_SdssCentroid_flag_resetToPeak"][0]
    assert out["base_SdssCentroid_flag"][0]
    assert out["base_SdssCentroid_x"][0] == 102 and out["base_SdssCentroid_y"][0] == 100


def test_sdss_shape_falls_back_to_unweighted_moments(monkeypatch):
    monkeypatch.setattr(shape_plugin, "MAX_ITER", 1)
    ex = _exposure([(100.3, 100.6, 5e4)], noise=0.0)
    ctx = _context(ex, [(70, 70, 130, 130)], [(100, 101)])
    out: dict[str, np.ndarray] = {}
    run_plugins([SdssCentroid(), SdssShape()], ctx, out, {})
    for flag in ("flag_maxIter", "flag_unweighted", "flag"):
        assert out[f"base_SdssShape_{flag}"][0], flag
    assert not out["base_SdssShape_flag_unweightedBad"][0]
    # the unweighted moments of the star (within 4 weight-σ): its own σ² to 0.5 %
    np.testing.assert_allclose([out["base_SdssShape_xx"][0], out["base_SdssShape_yy"][0]],
                               SIGMA**2 + 1 / 12, rtol=5e-3)
    assert np.isnan(out["base_SdssShape_instFlux"][0]) and np.isnan(out["base_SdssShape_xxErr"][0])


def test_sdss_shape_flags_moments_that_cannot_be_computed():
    """A negative source: neither weighted nor unweighted moments are positive."""
    ex = _exposure([(100.3, 100.6, -5e4)], noise=0.0)
    ctx = _context(ex, [(70, 70, 130, 130)], [(100, 101)])
    out: dict[str, np.ndarray] = {}
    run_plugins([SdssCentroid(), SdssShape()], ctx, out, {})
    assert out["base_SdssShape_flag_unweightedBad"][0] and out["base_SdssShape_flag"][0]
    assert not out["base_SdssShape_flag_unweighted"][0]
    assert np.isnan(out["base_SdssShape_xx"][0])
    assert out["base_SdssCentroid_flag_notAtMaximum"][0]


def test_sdss_shape_converges_unflagged_and_flags_a_shift():
    ex = _exposure([(100.3, 100.6, 5e4)], noise=0.0)
    # peak given 3 px off: the adaptive centre walks to the star, > 2 px
    ctx = _context(ex, [(70, 70, 130, 130), (70, 70, 130, 130)], [(100, 101), (103, 101)])
    out: dict[str, np.ndarray] = {}
    run_plugins([SdssShape()], ctx, out, {})
    np.testing.assert_allclose(out["base_SdssShape_xx"][0], SIGMA**2 + 1 / 12, rtol=2e-3)
    assert not out["base_SdssShape_flag"][0]
    assert out["base_SdssShape_flag_shift"][1] and out["base_SdssShape_flag"][1]


def test_local_background_keeps_detected_pixels():
    """A source on a wide detected pedestal of 40 counts: meas_base leaves DETECTED pixels
    in the annulus, so the background there is the pedestal's level."""
    ex = _exposure([(100.3, 100.6, 3e4)], shape=(200, 200))
    ex.image += np.float32(40.0)
    ex.mask[:] = np.int32(ex.planes.bitmask("DETECTED"))
    ctx = _context(ex, [(90, 90, 110, 110)], [(100, 101)])
    out: dict[str, np.ndarray] = {}
    run_plugins([SdssCentroid(), LocalBackground()], ctx, out, {})
    assert not out["base_LocalBackground_flag"][0]
    n_pixels = np.pi * (15**2 - 7**2) * SIGMA**2
    assert abs(out["base_LocalBackground_instFlux"][0] - 40.0) < 4 * NOISE / np.sqrt(n_pixels)
    np.testing.assert_allclose(out["base_LocalBackground_instFluxErr"][0], NOISE, rtol=0.1)


def test_psf_flux_edge_on_no_data_pixels():
    """NO_DATA under the PSF counts as off the data (flag_edge); a BAD pixel is left out
    of the fit without it (base_PixelFlags reports it)."""
    ex = _exposure([(100.3, 100.6, 3e4), (200.2, 200.4, 3e4)])
    ex.mask[103, 100] |= np.int32(ex.planes.bitmask("NO_DATA"))
    ex.mask[203, 200] |= np.int32(ex.planes.bitmask("BAD"))
    ctx = _context(ex, [(85, 85, 115, 115), (185, 185, 215, 215)], [(100, 101), (200, 200)])
    out: dict[str, np.ndarray] = {}
    run_plugins([SdssCentroid(), PsfFlux()], ctx, out, {})
    assert out["base_PsfFlux_flag_edge"].tolist() == [True, False]
    assert out["base_PsfFlux_flag"].tolist() == [True, False]
    np.testing.assert_allclose(out["base_PsfFlux_instFlux"], 3e4, rtol=0.02)


def test_extendedness_compares_the_psf_and_model_slots():
    star, galaxy = (80.3, 80.6, 3e4), (200.4, 200.2, 3e4, 4.0)
    cfg = _config()
    cat = run_detect(_exposure([star, galaxy]), cfg).catalog
    s, g = _row(cat, *star[:2]), _row(cat, *galaxy[:2])
    assert s["base_ClassificationExtendedness_value"] == 0
    assert g["base_ClassificationExtendedness_value"] == 1
    assert not s["base_ClassificationExtendedness_flag"]
    # the rule itself: extended where fluxRatio·model ≥ psf
    for row in (s, g):
        expect = 0.95 * row["base_GaussianFlux_instFlux"] >= row["base_PsfFlux_instFlux"]
        assert row["base_ClassificationExtendedness_value"] == float(expect)
    # another model flux slot, and a fluxRatio so low that even the galaxy reads as a point
    # (its PSF flux is ≈ 2σ_psf²/(σ_psf² + σ_gal²) ≈ 0.3 of its total)
    cfg.measurement.classification.fluxRatio = 0.2
    cfg.measurement.slots.modelFlux = "base_CircularApertureFlux_12_0"
    cat = run_detect(_exposure([star, galaxy]), cfg).catalog
    s, g = _row(cat, *star[:2]), _row(cat, *galaxy[:2])
    assert s["base_ClassificationExtendedness_value"] == 0
    assert g["base_ClassificationExtendedness_value"] == 0
    assert from_meta(cat.meta)["slot_ModelFlux"] == "base_CircularApertureFlux_12_0"


def test_extendedness_fails_where_a_flux_is_flagged():
    stars = [(12.3, 150.6, 30000.0), (150.3, 150.7, 30000.0)]  # the first: flagged centroid
    cat = run_detect(_exposure(stars), _config()).catalog
    near, inside = (_row(cat, x, y) for x, y, _ in stars)
    assert near["base_ClassificationExtendedness_flag"]
    assert np.isnan(near["base_ClassificationExtendedness_value"])
    assert not inside["base_ClassificationExtendedness_flag"]


def test_slots_are_the_catalogs_aliases():
    cat = run_detect(_exposure([(150.3, 150.7, 30000.0)]), _config()).catalog
    aliases = from_meta(cat.meta)
    assert aliases == {**aliases, **{
        "slot_Centroid": "base_SdssCentroid", "slot_Shape": "base_SdssShape",
        "slot_PsfShape": "base_SdssShape_psf", "slot_ApFlux": "base_CircularApertureFlux_12_0",
        "slot_ModelFlux": "base_GaussianFlux", "slot_PsfFlux": "base_PsfFlux",
        "slot_GaussianFlux": "base_GaussianFlux",
        "slot_CalibFlux": "base_CircularApertureFlux_12_0"}}
    for name in ("slot_Centroid_x", "slot_PsfShape_xx", "slot_CalibFlux_instFlux",
                 "slot_PsfFlux_flag", "base_PsfFlux_flag_badCentroid"):
        assert resolve(name, aliases) in cat.colnames, name
    assert resolve("slot_PsfFluxes", aliases) == "slot_PsfFluxes"  # whole name parts only


def test_a_slot_naming_a_measurement_not_made_is_refused():
    cfg = _config()
    cfg.measurement.slots.calibFlux = "base_CircularApertureFlux_15_0"
    with pytest.raises(ValueError, match=r"slots\.calibFlux.*aperture radius"):
        run_detect(_exposure([(150.3, 150.7, 30000.0)]), cfg)
    cfg.measurement.slots.calibFlux = None
    cfg.measurement.slots.apFlux = None
    cfg.measurement.apertureRadii = [5.0]
    cat = run_detect(_exposure([(150.3, 150.7, 30000.0)]), cfg).catalog
    assert "slot_CalibFlux" not in from_meta(cat.meta)


def test_binmax_bounds_the_binning(monkeypatch):
    monkeypatch.setattr(centroid_plugin, "BINMAX", 2)
    ex = _exposure([(140.3, 150.6, 4e5, 8.0)], noise=0.0)
    ctx = _context(ex, [(100, 110, 180, 190)], [(140, 151)])
    np.testing.assert_array_equal(binned_fits(ctx, ctx.peak_x, ctx.peak_y)["bins"], [[2, 2]])
