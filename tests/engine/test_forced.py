"""Forced photometry against simulated truth: blank sky, faint sources, inputs and flags."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from photutils.aperture import CircularAperture, aperture_photometry
from scipy import ndimage

from app.engine.config import DetectConfig, ForcedConfig
from app.engine.exposure import Exposure
from app.engine.forced import run_forced
from app.engine.pipeline import run_detect
from app.engine.psf_kolmogorov import KolmogorovPsf
from app.engine.random_positions import NotEnoughBlankSky, blank_sky_map, within
from app.engine.simulate import SimulationConfig, simulate_exposure

SKY_SIGMA = np.sqrt(1000.0 + 25.0)  # default sky 1000 counts, read noise 5 e-, gain 1


def _faint_flux(target_sn: float) -> float:
    """Flux of a point source of PSF S/N ``target_sn`` on the default sky (0.75″ seeing)."""
    kernel = KolmogorovPsf(3.75, kernel_size=41).kernel(1024.0, 1024.0)
    return target_sn * SKY_SIGMA / np.sqrt((kernel**2).sum())


@pytest.fixture(scope="module")
def faint_field():
    """A calexp with 400 injected point sources of S/N ≈ 4.5 on a grid, plus a normal field."""
    rng = np.random.default_rng(8)
    gx, gy = np.meshgrid(np.linspace(60, 1988, 20), np.linspace(60, 1988, 20))
    flux = _faint_flux(4.5)
    injected = [(float(x + rng.uniform(-3, 3)), float(y + rng.uniform(-3, 3)), flux, "star")
                for x, y in zip(gx.ravel(), gy.ravel(), strict=True)]
    sim = simulate_exposure(SimulationConfig(
        width=2048, height=2048, n_stars=500, star_mag_range=(17.0, 23.0), n_galaxies=150,
        n_pairs=0, positions=injected, min_separation_px=20.0, seed=21))
    result = run_detect(sim.exposure, DetectConfig())
    return sim, result, len(injected)


def test_blank_sky_fluxes_are_consistent_with_zero(faint_field):
    _, result, _ = faint_field
    x, y = blank_sky_map(result.exposure, 40).draw(600, seed=3)
    out = run_forced(result.exposure, Table({"x": x, "y": y}))
    z = np.asarray(out["base_PsfFlux_instFlux"] / out["base_PsfFlux_instFluxErr"])
    assert np.isfinite(z).all()
    assert abs(z.mean()) < 0.1
    assert 0.9 <= z.std() <= 1.1


def test_sub_threshold_sources_are_measured_without_bias(faint_field):
    sim, result, n_injected = faint_field
    truth = sim.truth[:n_injected]  # injected sources come first
    sn = np.asarray(truth["psf_sn"])
    sel = (sn > 4) & (sn < 5) & (np.asarray(truth["nearest_px"]) > 20)
    assert sel.sum() >= 200
    out = run_forced(result.exposure, Table({"ra": truth["ra"][sel], "dec": truth["dec"][sel]}))
    pull = np.asarray((out["base_PsfFlux_instFlux"] - truth["flux"][sel])
                      / out["base_PsfFlux_instFluxErr"])
    assert abs(np.median(pull)) < 0.2
    assert 0.9 <= pull.std() <= 1.1


def test_sky_and_pixel_inputs_agree(faint_field):
    _, result, _ = faint_field
    ex = result.exposure
    x = np.array([100.25, 777.7, 1500.1, 2000.9])
    y = np.array([300.5, 1024.0, 99.9, 1800.3])
    ra, dec = ex.pixel_to_sky(x, y)
    by_pixel = run_forced(ex, Table({"x": x, "y": y}))
    by_sky = run_forced(ex, Table({"ra": ra, "dec": dec}))
    sky_flux = np.asarray(by_sky["base_PsfFlux_instFlux"])
    pixel_flux = np.asarray(by_pixel["base_PsfFlux_instFlux"])
    # agreement to 1e-6 of the flux scale (the error: fluxes here may be near zero)
    scale = np.asarray(by_pixel["base_PsfFlux_instFluxErr"])
    assert np.all(np.abs(sky_flux - pixel_flux) <= 1e-6 * np.maximum(np.abs(pixel_flux), scale))
    np.testing.assert_allclose(by_sky["base_TransformedCentroid_x"], x, atol=1e-6)


def test_tags_pass_through_and_bad_positions_keep_their_rows(faint_field):
    _, result, _ = faint_field
    ex = result.exposure.copy()
    ex.mask[500:520, 500:520] |= ex.planes.bitmask("NO_DATA")
    positions = Table({
        "x": [1000.0, -50.0, 510.0, 1200.0],
        "y": [1000.0, 40.0, 510.0, 3000.0],
        "name": ["a", "off-left", "no-data", "off-top"],
        "type_flag": [0, 1, 1, 0],
    })
    out = run_forced(ex, positions, ForcedConfig(plugins=[
        "base_TransformedCentroid", "base_PsfFlux", "base_TransformedShape", "base_PixelFlags",
        "base_CircularApertureFlux", "base_LocalBackground"]))
    assert out["name"].tolist() == ["a", "off-left", "no-data", "off-top"]
    assert out["type_flag"].tolist() == [0, 1, 1, 0]
    flux = np.asarray(out["base_PsfFlux_instFlux"])
    assert np.isfinite(flux[0]) and np.isnan(flux[1:]).all()
    assert out["base_PsfFlux_flag"].tolist() == [False, True, True, True]
    assert out["base_PixelFlags_flag_offimage"].tolist() == [False, True, False, True]
    # the aperture correction is a field over the image: off it, none
    assert "base_PsfFlux" in ex.ap_corr
    ap_corr = np.asarray(out["base_PsfFlux_apCorr"])
    assert np.isfinite(ap_corr[[0, 2]]).all() and np.isnan(ap_corr[[1, 3]]).all()
    bare = ex.copy()
    bare.ap_corr = {}
    plain = run_forced(bare, positions, ForcedConfig(plugins=["base_PsfFlux"]))
    ap_corr = np.asarray(plain["base_PsfFlux_apCorr"])
    assert (ap_corr[[0, 2]] == 1).all() and np.isnan(ap_corr[[1, 3]]).all()
    assert out["base_PixelFlags_flag_edgeCenter"][2]  # NO_DATA counts as edge
    assert out.info("base_PsfFlux_flux").unit == "nJy"
    assert np.isfinite(out["base_CircularApertureFlux_3_0_instFlux"][0])
    # no shape given: the PSF's adaptive moments there, its determinant radius the PSF's sigma
    xx, yy, xy = (out[f"base_TransformedShape_{m}"][0] for m in ("xx", "yy", "xy"))
    assert (xx * yy - xy * xy) ** 0.25 == pytest.approx(ex.psf.sigma(1000.0, 1000.0), rel=1e-4)
    assert out["base_TransformedShape_flag"].tolist() == [False, True, False, True]
    assert np.isnan(np.asarray(out["base_TransformedShape_xx"])[[1, 3]]).all()
    # the outer half pixel takes the moments at the edge pixels' centres
    edge = run_forced(ex, Table({"x": [-0.4, 0.0, ex.width - 0.6], "y": [700.0, 700.0, 700.0]}),
                      ForcedConfig(plugins=["base_TransformedShape"]))
    got = np.asarray(edge["base_TransformedShape_xx"])
    assert got[0] == got[1] and np.isfinite(got).all()
    assert not edge["base_TransformedShape_flag"].any()


def test_positions_need_known_columns(faint_field):
    _, result, _ = faint_field
    with pytest.raises(ValueError, match="ra and dec"):
        run_forced(result.exposure, Table({"alpha": [1.0], "delta": [2.0]}))


def test_random_positions_avoid_detections_and_refuse_impossible_requests(faint_field):
    _, result, _ = faint_field
    ex = result.exposure
    x, y = blank_sky_map(ex, 40).draw(300, seed=1)
    detected = np.argwhere(ex.planes.any(ex.mask, "DETECTED"))
    from scipy.spatial import cKDTree

    d, _ = cKDTree(detected[:, ::-1]).query(np.column_stack([x, y]))
    assert d.min() >= 40
    again = blank_sky_map(ex, 40).draw(300, seed=1)
    np.testing.assert_array_equal(again[0], x)
    with pytest.raises(NotEnoughBlankSky, match="asked for"):
        blank_sky_map(ex, 5000).draw(10)


@pytest.mark.parametrize("radius", [0.5, 1.0, 1.5, 9.71, 40.71, 127.9, 140.0])
def test_within_a_radius_is_the_euclidean_distance_transform(radius):
    """The separable pass per row offset marks exactly the pixels scipy's distance
    transform puts closer than the radius, near the borders too."""
    rng = np.random.default_rng(int(radius * 100))
    mask = np.zeros((700, 530), bool)
    mask[rng.integers(0, 700, 40), rng.integers(0, 530, 40)] = True
    mask[300:340, 0:25] = True  # a blob on the left border
    mask[-1, 200:260] = True    # and a run along the bottom row
    expected = ndimage.distance_transform_edt(~mask) < radius
    np.testing.assert_array_equal(within(mask, radius), expected)
    assert not within(np.zeros((5, 7), bool), radius).any()


def test_the_blank_sky_map_draws_each_candidate_pixel_at_most_once():
    """Every candidate pixel (brute force: far from the detected ones, inside the usable
    area) is drawn when all are asked for, each once, in the parent frame; one more is
    refused."""
    image = np.zeros((60, 90), np.float32)
    ex = Exposure(image, np.zeros(image.shape, np.int32), np.ones_like(image), xy0=(1000, 20))
    ex.mask[30:33, 40:44] |= ex.planes.bitmask(["DETECTED"])
    ex.mask[:, 80:] |= ex.planes.bitmask(["NO_DATA"])
    sky = blank_sky_map(ex, min_distance_px=12)
    yy, xx = np.mgrid[:60, :90]
    distance = np.full(image.shape, np.inf)
    for dy, dx in zip(*np.nonzero(ex.planes.any(ex.mask, "DETECTED")), strict=True):
        distance = np.minimum(distance, np.hypot(yy - dy, xx - dx))
    inside = np.minimum.reduce([xx + 1, yy + 1, 80 - xx, 60 - yy]) >= sky.margin_px + 0.71
    expected = (distance >= 12.71) & inside
    assert sky.count == expected.sum() > 100
    x, y = sky.draw(sky.count, seed=4)
    col, row = np.rint(x).astype(int) - 1000, np.rint(y).astype(int) - 20
    assert np.abs(x - 1000 - col).max() <= 0.5 and np.abs(y - 20 - row).max() <= 0.5
    drawn = np.zeros(image.shape, int)
    np.add.at(drawn, (row, col), 1)
    np.testing.assert_array_equal(drawn, expected.astype(int))
    with pytest.raises(NotEnoughBlankSky, match=f"only {sky.count} pixels"):
        sky.draw(sky.count + 1)


def test_aperture_fluxes_at_chosen_radii(faint_field):
    """Exact-overlap sums as photutils makes them (partly off the image too, and over
    radii whose squares are gathered a few positions at a time), and a wide aperture
    holds a bright isolated star's whole flux."""
    sim, result, _ = faint_field
    ex = result.exposure
    rng = np.random.default_rng(12)
    x, y = rng.uniform(-10, ex.width + 10, 600), rng.uniform(-10, ex.height + 10, 600)
    radii = [2.5, 20.0, 45.0]
    config = ForcedConfig(plugins=["base_CircularApertureFlux"], apertureRadii=radii)
    out = run_forced(ex, Table({"x": x, "y": y}), config)
    on = (x >= -0.5) & (x < ex.width - 0.5) & (y >= -0.5) & (y < ex.height - 0.5)
    assert np.isnan(np.asarray(out["base_CircularApertureFlux_45_0_instFlux"])[~on]).all()
    for r, name in zip(radii, ["2_5", "20_0", "45_0"], strict=True):
        want = aperture_photometry(ex.image, CircularAperture(np.c_[x, y][on], r),
                                   method="exact")["aperture_sum"]
        got = np.asarray(out[f"base_CircularApertureFlux_{name}_instFlux"])[on]
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-6)
        # σ² = Σ overlap² · variance, from photutils' exact overlap of each pixel
        err = np.asarray(out[f"base_CircularApertureFlux_{name}_instFluxErr"])
        for k in np.flatnonzero(on)[:40]:
            overlap = CircularAperture((x[k], y[k]), r).to_mask(method="exact")
            variance = overlap.cutout(ex.variance, fill_value=0.0)  # off the image: none
            assert err[k] == pytest.approx(np.sqrt((overlap.data**2 * variance).sum()),
                                           rel=1e-9)
    truth = sim.truth
    bright = ((np.asarray(truth["kind"]) == "star") & ~np.asarray(truth["saturated"])
              & (np.asarray(truth["psf_sn"]) > 100) & (np.asarray(truth["nearest_px"]) > 30))
    assert bright.sum() >= 10
    stars = run_forced(ex, Table({"x": truth["x"][bright], "y": truth["y"][bright]}), config)
    ratio = np.asarray(stars["base_CircularApertureFlux_20_0_instFlux"]) / truth["flux"][bright]
    assert abs(np.median(ratio) - 1) < 0.02


def test_forced_flags_and_aperture_corrections_as_single_frame(faint_field):
    """Forced base_PsfFlux flags as single-frame measurement (flag_edge sets the general
    flag), and the exposure's aperture correction applied as ApplyApCorrTask does."""
    _, result, _ = faint_field
    ex = result.exposure
    field = ex.ap_corr["base_PsfFlux"]
    positions = Table({"x": [1000.0, 1.5, 700.0], "y": [1000.0, 800.0, 300.0]})
    out = run_forced(ex, positions)
    assert out["base_PsfFlux_flag_edge"].tolist() == [False, True, False]
    assert out["base_PsfFlux_flag"].tolist() == [False, True, False]
    corr = field(np.array([1000.0, 700.0]), np.array([1000.0, 300.0]))
    np.testing.assert_allclose(np.asarray(out["base_PsfFlux_apCorr"])[[0, 2]], corr)
    np.testing.assert_allclose(np.asarray(out["base_PsfFlux_apCorrErr"])[[0, 2]], field.err)
    assert not out["base_PsfFlux_flag_apCorr"].any()
    # the slots are aliases, not columns of their own
    assert "slot_Centroid:base_TransformedCentroid" in out.meta["ALIAS"]
    assert not [name for name in out.names if name.startswith("slot_")]

    # corrections for other fluxes only: the PSF flux cannot be corrected, and says so
    other = ex.copy()
    other.ap_corr = {"base_GaussianFlux": ex.ap_corr["base_GaussianFlux"]}
    flagged = run_forced(other, positions)
    assert flagged["base_PsfFlux_flag_apCorr"].all() and flagged["base_PsfFlux_flag"].all()
    assert np.isnan(np.asarray(flagged["base_PsfFlux_apCorr"])).all()
    np.testing.assert_allclose(np.asarray(flagged["base_PsfFlux_instFlux"])[[0, 2]],
                               np.asarray(out["base_PsfFlux_instFlux"])[[0, 2]] / corr)


def test_forced_local_background_keeps_detected_pixels(faint_field):
    _, result, _ = faint_field
    ex = result.exposure.copy()
    ex.mask |= np.int32(ex.planes.bitmask("DETECTED"))
    out = run_forced(ex, Table({"x": [1000.0, 700.0], "y": [1000.0, 300.0]}),
                     ForcedConfig(plugins=["base_LocalBackground"]))
    assert not out["base_LocalBackground_flag"].any()
    assert not out["base_LocalBackground_flag_noGoodPixels"].any()
    np.testing.assert_allclose(np.asarray(out["base_LocalBackground_instFluxErr"]), SKY_SIGMA,
                               rtol=0.1)
