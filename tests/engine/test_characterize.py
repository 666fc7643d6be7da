"""Characterization as CharacterizeImageTask: sky left in, shallow frames, PSF stars, the
aperture corrections' reference and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.characterize import CharacterizeError
from app.engine.columns import ColumnSet
from app.engine.config import DetectConfig
from app.engine.forced import run_forced
from app.engine.pipeline import run_detect
from app.engine.random_positions import blank_sky_map
from app.engine.simulate import SimulationConfig, simulate_exposure
from app.engine.truth import leaf_rows, match_positions


def _ee12(sim, x, y):
    return np.array([sim.psf.encircled_energy(a, b, 12.0) for a, b in zip(x, y, strict=True)])


def _bright_isolated(sim, result, min_snr=50.0):
    cat = result.catalog[leaf_rows(result.catalog)]
    m = match_positions(np.asarray(cat["base_SdssCentroid_x"]),
                        np.asarray(cat["base_SdssCentroid_y"]),
                        np.asarray(sim.truth["x"]), np.asarray(sim.truth["y"]), 3.0)
    t = sim.truth
    sel = ((np.asarray(t["kind"]) == "star") & ~np.asarray(t["saturated"])
           & ~np.asarray(t["is_pair"]) & (np.asarray(t["psf_sn"]) > min_snr)
           & (m.det_index >= 0))
    return cat, m, sel


@pytest.fixture(scope="module")
def sky_in():
    """A 1536² field with its sky (1000 counts and a gradient of 20) still in."""
    sim = simulate_exposure(SimulationConfig(
        width=1536, height=1536, n_stars=700, star_mag_range=(17.0, 23.5), n_galaxies=150,
        n_pairs=0, min_separation_px=20.0, seed=21))
    raw = sim.exposure.with_background_added()
    return sim, raw, run_detect(raw, DetectConfig())


def test_a_frame_with_its_sky_in_is_measured_at_default_settings(sky_in):
    sim, raw, result = sky_in
    assert result.summary["psf_source"] == "measured"
    # the background removed is the sky that was in, to a small fraction of the noise
    residual = result.exposure.background - sim.exposure.background
    sky_sigma = float(np.sqrt(np.median(sim.exposure.variance)))
    assert abs(float(np.median(residual))) < 0.02 * sky_sigma
    cat, m, sel = _bright_isolated(sim, result)
    assert sel.sum() >= 100
    t = sim.truth
    ratio = (np.asarray(cat["base_PsfFlux_instFlux"])[m.det_index[sel]]
             / (np.asarray(t["flux"])[sel] * _ee12(sim, np.asarray(t["x"])[sel],
                                                    np.asarray(t["y"])[sel])))
    assert abs(np.median(ratio) - 1) < 0.005


def test_blank_sky_forced_fluxes_centre_on_zero_with_the_sky_in(sky_in):
    _, _, result = sky_in
    x, y = blank_sky_map(result.exposure, 20.0).draw(3000, seed=4)
    ox, oy = result.exposure.xy0
    out = run_forced(result.exposure, ColumnSet.from_arrays({"x": x + ox, "y": y + oy}))
    z = np.asarray(out["base_PsfFlux_instFlux"]) / np.asarray(out["base_PsfFlux_instFluxErr"])
    z = z[np.isfinite(z)]
    assert len(z) >= 2900
    assert abs(z.mean()) < 3 / np.sqrt(len(z))
    assert 0.95 < z.std() < 1.05


def test_psf_star_flags(bright_stars):
    sim, result = bright_stars
    cat = result.catalog
    cand = np.asarray(cat["calib_psf_candidate"])
    used = np.asarray(cat["calib_psf_used"])
    reserved = np.asarray(cat["calib_psf_reserved"])
    assert used.sum() >= 100 and not (used & reserved).any()
    assert (cand >= used).all() and (cand >= reserved).all()
    assert 0.15 < reserved.sum() / cand.sum() < 0.25
    m = match_positions(np.asarray(cat["base_SdssCentroid_x"])[cand],
                        np.asarray(cat["base_SdssCentroid_y"])[cand],
                        np.asarray(sim.truth["x"]), np.asarray(sim.truth["y"]), 2.0)
    truth_row = m.det_matched[m.det_matched >= 0]
    assert len(truth_row) >= 0.98 * cand.sum()
    assert (np.asarray(sim.truth["kind"])[truth_row] == "star").mean() >= 0.98
    assert cat.meta["apCorr_reference"] == "base_CircularApertureFlux_12_0"
    # every star the PSF used is a catalog source (none lost in the match)
    assert result.summary["psf_n_stars"] == int(used.sum())


def test_a_frame_with_too_few_stars_gets_a_gaussian_of_their_size():
    sim = simulate_exposure(SimulationConfig(
        width=400, height=400, n_stars=3, star_mag_range=(17.0, 18.0), n_galaxies=0,
        n_pairs=0, n_saturated=0, min_separation_px=60.0, seed=2))
    result = run_detect(sim.exposure, DetectConfig())
    assert result.summary["psf_source"] == "simple"
    fwhm = sim.psf.fwhm(200.0, 200.0)
    assert abs(result.summary["psf_fwhm_pixels"] / fwhm - 1) < 0.1
    assert len(result.catalog) >= 3
    assert "Gaussian PSF" in result.catalog.meta["characterize_notes"]
    assert "Gaussian PSF" in result.exposure.info.provenance["psf"]


def test_a_frame_without_any_star_says_what_to_try():
    sim = simulate_exposure(SimulationConfig(
        width=256, height=256, n_stars=0, n_galaxies=0, n_pairs=0, n_saturated=0, seed=3))
    with pytest.raises(CharacterizeError, match="psfCandidateThreshold"):
        run_detect(sim.exposure, DetectConfig())


def test_an_implausible_aperture_correction_is_refused_and_flagged(bright_stars):
    sim, _ = bright_stars
    config = DetectConfig()
    config.characterize.apCorr.validRange = (1.01, 1.5)  # the real field is below 1
    result = run_detect(sim.exposure, config)
    assert "base_PsfFlux" not in result.exposure.ap_corr
    assert np.asarray(result.catalog["base_PsfFlux_flag_apCorr"]).all()
    assert "not applied" in result.exposure.info.provenance["ap_corr"]


def test_without_psf_measurement_the_initial_gaussian_is_installed():
    """LSST's doMeasurePsf=False on an exposure without a PSF: installSimplePsf."""
    sim = simulate_exposure(SimulationConfig(
        width=400, height=400, n_stars=20, star_mag_range=(18.0, 20.0), n_galaxies=0,
        n_pairs=0, n_saturated=0, min_separation_px=30.0, seed=4))
    config = DetectConfig()
    config.characterize.doMeasurePsf = False
    config.characterize.initialPsfFwhm = 4.0
    result = run_detect(sim.exposure, config)
    assert result.summary["psf_source"] == "simple"
    assert result.summary["psf_fwhm_pixels"] == pytest.approx(4.0, rel=1e-3)
    assert "initialPsfFwhm" in result.exposure.info.provenance["psf"]
    assert len(result.catalog) >= 18


def test_slot_calib_flux_and_the_aperture_corrections_name_one_aperture():
    config = DetectConfig()
    config.characterize.apCorr.calibFluxRadius = 9.0
    with pytest.raises(ValueError, match="set both to the same aperture"):
        DetectConfig.model_validate(config.model_dump())
    config.measurement.slots.calibFlux = "base_CircularApertureFlux_9_0"
    DetectConfig.model_validate(config.model_dump())


def test_cosmic_rays_are_repaired_in_characterization_and_not_detected():
    """A frame with its sky in and 300 cosmic rays, no CR plane: at default settings the rays
    are found against the measured PSF, interpolated and masked CR, and almost none of them
    is detected; stars keep their fluxes."""
    from app.engine.simulate_cosmic_rays import (
        CosmicRayConfig,
        add_cosmic_rays,
        render_cosmic_rays,
    )

    sim = simulate_exposure(SimulationConfig(
        width=1024, height=1024, n_stars=250, star_mag_range=(17.0, 22.5), n_galaxies=60,
        n_pairs=0, min_separation_px=20.0, seed=31))
    raw = sim.exposure.with_background_added()
    rays = render_cosmic_rays(raw.shape, CosmicRayConfig(n_rays=300, seed=5))
    add_cosmic_rays(raw, rays, gain=1.0)
    result = run_detect(raw, DetectConfig())
    assert "found and interpolated" in result.exposure.info.provenance["cosmic_rays"]
    cr = result.exposure.planes.any(result.exposure.mask, "CR")
    py, px = rays.peak_pixels()
    strong = (py >= 0) & (rays.peak_counts() > 10 * np.sqrt(np.median(raw.variance)))
    assert strong.sum() >= 100
    assert cr[py[strong], px[strong]].mean() >= 0.9
    # detections at the rays' brightest pixels that are no true source: very few
    cat = result.catalog[leaf_rows(result.catalog)]
    x, y = np.asarray(cat["base_SdssCentroid_x"]), np.asarray(cat["base_SdssCentroid_y"])
    on_ray = match_positions(x, y, px[strong].astype(float), py[strong].astype(float), 2.0)
    truth = match_positions(x, y, np.asarray(sim.truth["x"]), np.asarray(sim.truth["y"]), 3.0)
    spurious = (on_ray.det_matched >= 0) & (truth.det_matched < 0)
    assert spurious.sum() <= 0.05 * strong.sum()
    cat_, m, sel = _bright_isolated(sim, result)
    t = sim.truth
    ratio = (np.asarray(cat_["base_PsfFlux_instFlux"])[m.det_index[sel]]
             / (np.asarray(t["flux"])[sel] * _ee12(sim, np.asarray(t["x"])[sel],
                                                    np.asarray(t["y"])[sel])))
    assert abs(np.median(ratio) - 1) < 0.01
