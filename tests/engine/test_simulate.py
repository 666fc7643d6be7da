"""Tests of the simulator and its Kolmogorov PSF against their own exact truth."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.psf import PsfModel
from app.engine.psf_kolmogorov import (
    ATMOSPHERIC_FWHM_K0,
    SIGMA_TO_FWHM,
    GalaxyShape,
    KolmogorovPsf,
    adaptive_moments,
    adaptive_sigma,
    atmospheric_fwhm_k0,
    render_batch,
)
from app.engine.simulate import SimulationConfig, simulate_exposure, sky_model

EMPTY = dict(n_stars=0, n_galaxies=0, n_pairs=0, n_saturated=0, bad_columns=())


def small(**kw) -> SimulationConfig:
    """A 512×512 config (sources sparse enough to leave sky), overridable."""
    base = dict(width=512, height=512, n_stars=30, n_galaxies=30, n_pairs=3, n_saturated=1)
    base.update(kw)
    return SimulationConfig(**base)


def cutout(image: np.ndarray, x: float, y: float, half: int) -> np.ndarray:
    """Square cutout of side 2·half+1 around the pixel nearest (x, y)."""
    ix, iy = int(round(x)), int(round(y))
    return image[iy - half : iy + half + 1, ix - half : ix + half + 1]


# --- the PSF -----------------------------------------------------------------------------


def test_atmospheric_calibration_constant() -> None:
    assert atmospheric_fwhm_k0(compute=True) == pytest.approx(ATMOSPHERIC_FWHM_K0, rel=1e-9)
    assert ATMOSPHERIC_FWHM_K0 == pytest.approx(0.976, abs=1e-3)  # FWHM = 0.976 λ/r0


def test_kernel_sums_to_one_and_sigma_is_adaptive_determinant_radius() -> None:
    psf = KolmogorovPsf(3.75, gradient=0.04, width=1000, height=800)
    assert isinstance(psf, PsfModel)
    for x, y in [(0.0, 0.0), (499.5, 399.5), (999.0, 799.0), (123.4, 700.2)]:
        k = psf.kernel(x, y)
        assert k.shape == (41, 41)
        assert k.sum() == pytest.approx(1.0, abs=1e-12)
        assert np.unravel_index(np.argmax(k), k.shape) == (20, 20)
        np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-15)
        big = psf.kernel(x, y, size=101)
        assert adaptive_sigma(big) == pytest.approx(psf.sigma(x, y), rel=1e-4)
        assert adaptive_sigma(k) == pytest.approx(psf.sigma(x, y), rel=1e-4)
    assert psf.fwhm(499.5, 399.5) == pytest.approx(3.75)
    assert psf.fwhm(0, 0) == pytest.approx(3.75 * 0.96)
    assert psf.fwhm(999, 799) == pytest.approx(3.75 * 1.04)


def test_psf_widths_are_ordered() -> None:
    """Atmosphere alone < pixelized half-maximum width < adaptive-moment FWHM (Kolmogorov)."""
    psf = KolmogorovPsf(3.75)
    atm, half = psf.atmospheric_fwhm(0, 0), psf.halfmax_fwhm(0, 0)
    assert 3.3 < atm < half < 3.75
    assert atm * psf.k0(0, 0)[0] == pytest.approx(ATMOSPHERIC_FWHM_K0)


def test_render_conserves_flux_and_is_centred() -> None:
    psf = KolmogorovPsf(3.75)
    for x, y in [(100.0, 50.0), (100.3, 50.7), (99.5, 49.5)]:
        stamp, (x0, y0) = psf.render(x, y, flux=12345.0, size=64)
        assert stamp.sum() == pytest.approx(12345.0, rel=1e-12)
        xc, yc, *_ = adaptive_moments(stamp)
        assert xc + x0 == pytest.approx(x, abs=1e-5)
        assert yc + y0 == pytest.approx(y, abs=1e-5)
    stamp, (x0, y0) = psf.render(100.0, 50.0, flux=1.0, size=512)
    c = 256
    centre = stamp[c - 20 : c + 21, c - 20 : c + 21]
    np.testing.assert_allclose(centre / centre.sum(), psf.kernel(100, 50), rtol=1e-5, atol=5e-9)


def test_encircled_energy_increases_to_one() -> None:
    psf = KolmogorovPsf(3.75)
    ee = [psf.encircled_energy(0, 0, r) for r in (3, 6, 12, 17, 25)]
    assert np.all(np.diff(ee) > 0)
    assert 0.98 < ee[2] < 0.99 < ee[3] < ee[4] < 1.0


def test_galaxy_profile_orientation_and_half_light_radius() -> None:
    """Exponential disk (negligible PSF): half the light inside the hlr ellipse at ``pa``."""
    hlr, q, pa = 15.0, 0.5, np.deg2rad(30.0)
    shape = GalaxyShape(np.array([hlr / 1.678346990016661]), np.array([q]), np.array([pa]))
    img = render_batch(256, np.array([50.0]), np.array([128.3]), np.array([127.8]),
                       np.array([1.0]), shape)[0]
    yy, xx = np.mgrid[:256, :256]
    dx, dy = xx - 128.3, yy - 127.8

    def inside(angle: float) -> float:
        xm = dx * np.cos(angle) + dy * np.sin(angle)
        ym = -dx * np.sin(angle) + dy * np.cos(angle)
        return float(img[q * xm**2 + ym**2 / q < hlr**2].sum())

    assert inside(pa) == pytest.approx(0.5, abs=0.005)
    assert inside(pa + np.pi / 2) < 0.45
    assert img.sum() == pytest.approx(1.0, rel=1e-12)


# --- the exposure ------------------------------------------------------------------------


def test_isolated_sources_flux_is_exact() -> None:
    pos = [(120.3, 380.8, 5.0e4, "star"), (380.6, 140.1, 3.0e4, "galaxy", 1.2, 0.4, 30.0)]
    sim = simulate_exposure(small(**EMPTY, positions=pos))
    t = sim.truth
    assert list(t["kind"]) == ["star", "galaxy"]
    for row in t:
        box = cutout(sim.model, row["x"], row["y"], 100)
        assert box.sum() == pytest.approx(row["flux"], rel=1e-6)
        assert row["in_image_fraction"] == pytest.approx(1.0, abs=1e-12)
    assert sim.model.sum() == pytest.approx(t["flux"].sum(), rel=1e-9)
    assert t["hlr_arcsec"][1] == 1.2 and np.isnan(t["hlr_arcsec"][0])


def test_partly_off_image_source_keeps_total_flux() -> None:
    sim = simulate_exposure(small(**EMPTY, positions=[(-0.5, 300.0, 1.0e5, "star")]))
    row = sim.truth[0]
    assert row["flux"] == 1.0e5
    assert row["in_image_fraction"] == pytest.approx(0.5, abs=0.01)  # centred on the edge
    assert sim.model.sum() == pytest.approx(row["flux"] * row["in_image_fraction"], rel=1e-9)


def test_rendered_fwhm_matches_request_and_follows_gradient() -> None:
    w = h = 512
    pos = [(255.5, 255.5, 1e6, "star"), (30.2, 30.7, 1e6, "star"), (480.6, 481.3, 1e6, "star")]
    sim = simulate_exposure(small(**EMPTY, positions=pos, fwhm_gradient=0.04, width=w, height=h))
    fwhm0 = 0.75 / 0.2
    for row in sim.truth:
        measured = SIGMA_TO_FWHM * adaptive_sigma(cutout(sim.model, row["x"], row["y"], 25))
        u = 0.5 * ((row["x"] - 255.5) / 255.5 + (row["y"] - 255.5) / 255.5)
        assert measured == pytest.approx(fwhm0 * (1 + 0.04 * u), rel=0.002)
        assert row["fwhm_px"] == pytest.approx(fwhm0 * (1 + 0.04 * u), rel=1e-9)
    assert sim.truth["fwhm_px"][1] < 0.97 * fwhm0 < 1.03 * fwhm0 < sim.truth["fwhm_px"][2]


def test_noise_matches_variance_and_background_is_subtracted() -> None:
    sim = simulate_exposure(small(seed=5))
    exp = sim.exposure
    clean = (sim.model < 0.01 * np.sqrt(exp.variance)) & (exp.mask == 0)
    assert clean.mean() > 0.5
    z = exp.image[clean] / np.sqrt(exp.variance[clean])
    assert np.std(z) == pytest.approx(1.0, abs=0.03)
    assert abs(np.mean(exp.image[clean])) < 5 * np.sqrt(np.mean(exp.variance[clean]) / clean.sum())
    np.testing.assert_allclose(exp.background, sky_model(small(seed=5)), rtol=1e-6)
    assert exp.background.max() - exp.background.min() > 10  # a sky with structure
    raw = exp.with_background_added()
    assert np.median(raw.image[clean]) == pytest.approx(1000.0, abs=25)


def test_variance_plane_includes_source_poisson() -> None:
    cfg = small(**EMPTY, positions=[(256.0, 256.0, 2e5, "star")], read_noise=5.0, gain=2.0)
    sim = simulate_exposure(cfg)
    exp = sim.exposure
    expected = (exp.background + sim.model) / 2.0 + (5.0 / 2.0) ** 2
    np.testing.assert_allclose(exp.variance, expected, rtol=1e-6)


def test_saturation_mask_and_clipping() -> None:
    sim = simulate_exposure(small(n_saturated=3, seed=2))
    exp = sim.exposure
    sat_level = 60000.0
    sat = exp.planes.any(exp.mask, "SAT")
    truth_sat = (exp.background.astype(float) + sim.model) > sat_level
    observed_sat = (exp.image.astype(float) + exp.background) >= sat_level - 0.01
    assert truth_sat.sum() > 20
    np.testing.assert_array_equal(sat, truth_sat | observed_sat)
    np.testing.assert_allclose(exp.image[sat] + exp.background[sat], sat_level, rtol=1e-6)
    assert (exp.image + exp.background).max() <= sat_level * (1 + 1e-6)
    t = sim.truth
    assert t["saturated"][:3].all()
    assert not t["saturated"][t["psf_sn"] < 100].any()


def test_bad_columns_are_interpolated_and_flagged() -> None:
    sim = simulate_exposure(small(bad_columns=(100, 300, 301)))
    exp = sim.exposure
    flags = exp.planes.bitmask(["BAD", "INTRP"])
    bad = (exp.mask & flags) == flags
    assert bad[:, [100, 300, 301]].all()
    assert not bad[:, [99, 101, 299, 302]].any()
    np.testing.assert_allclose(exp.image[:, 100], 0.5 * (exp.image[:, 99] + exp.image[:, 101]),
                               rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(exp.image[:, 300], (2 * exp.image[:, 299] + exp.image[:, 302]) / 3,
                               rtol=1e-5, atol=1e-3)
    default = simulate_exposure(small(**{**EMPTY, "bad_columns": None}))
    assert default.exposure.planes.any(default.exposure.mask, "BAD").any(axis=0).sum() == 1


def test_edge_mask() -> None:
    exp = simulate_exposure(small(**EMPTY, edge_width=4)).exposure
    edge = exp.planes.any(exp.mask, "EDGE")
    assert edge[:4].all() and edge[-4:].all() and edge[:, :4].all() and edge[:, -4:].all()
    assert not edge[4:-4, 4:-4].any()
    assert not simulate_exposure(small(**EMPTY)).exposure.planes.any(
        simulate_exposure(small(**EMPTY)).exposure.mask, "EDGE").any()


@pytest.mark.parametrize("sip", [False, True])
def test_wcs_round_trip(sip: bool) -> None:
    sim = simulate_exposure(small(sip=sip, rotation_deg=30.0))
    exp, t = sim.exposure, sim.truth
    x, y = exp.sky_to_pixel(t["ra"], t["dec"])
    np.testing.assert_allclose(x, t["x"], atol=1e-6)
    np.testing.assert_allclose(y, t["y"], atol=1e-6)
    assert exp.pixel_scale_arcsec() == pytest.approx(0.2, rel=1e-3)
    ra_c, dec_c = exp.pixel_to_sky(np.array([255.5]), np.array([255.5]))
    assert ra_c[0] == pytest.approx(62.0, abs=1e-9) and dec_c[0] == pytest.approx(-37.0, abs=1e-9)


def test_exposure_metadata() -> None:
    exp = simulate_exposure(small(**EMPTY, visit=903342, detector=10, band="r")).exposure
    assert exp.psf is None
    assert exp.photo_calib.njy_per_count == pytest.approx(10 ** (-0.4 * (31.0 - 31.4)))
    assert (exp.info.visit, exp.info.detector, exp.info.band) == (903342, 10, "r")
    assert exp.info.physical_filter == "r_sim_1.4" and exp.info.exptime == 30.0
    assert exp.image.dtype == np.float32 and exp.mask.dtype == np.int32


def test_pairs_at_requested_separation() -> None:
    sim = simulate_exposure(small(n_pairs=8, pair_separation_fwhm=2.5, seed=4))
    t = sim.truth[sim.truth["is_pair"]]
    assert len(t) == 16
    for pid in np.unique(t["pair_id"]):
        a, b = t[t["pair_id"] == pid]
        sep = np.hypot(a["x"] - b["x"], a["y"] - b["y"])
        mid = sim.psf.fwhm(0.5 * (a["x"] + b["x"]), 0.5 * (a["y"] + b["y"]))
        assert sep == pytest.approx(2.5 * mid, rel=1e-9)
        assert a["nearest_px"] == pytest.approx(sep) or a["nearest_px"] < sep
        assert 1.0 <= a["flux"] / b["flux"] <= 5.0
        assert a["kind"] == b["kind"] == "star"
    assert (sim.truth["pair_id"][~sim.truth["is_pair"]] == -1).all()


def test_min_separation_is_honoured() -> None:
    sim = simulate_exposure(small(n_stars=40, n_galaxies=20, n_pairs=0, min_separation_px=40))
    assert sim.truth["nearest_px"].min() >= 40


def test_deterministic_for_a_seed() -> None:
    a = simulate_exposure(small(seed=11))
    b = simulate_exposure(small(seed=11))
    c = simulate_exposure(small(seed=12))
    np.testing.assert_array_equal(a.exposure.image, b.exposure.image)
    np.testing.assert_array_equal(a.exposure.mask, b.exposure.mask)
    assert np.array_equal(a.truth["flux"], b.truth["flux"])
    assert not np.array_equal(a.exposure.image, c.exposure.image)


def test_truth_columns_have_units_and_descriptions() -> None:
    t = simulate_exposure(small()).truth
    for name in ("id", "x", "y", "ra", "dec", "flux", "flux_njy", "mag", "kind", "is_pair",
                 "pair_id", "saturated", "hlr_arcsec", "q", "pa_deg", "psf_sn", "nearest_px",
                 "fwhm_px", "in_image_fraction"):
        assert t[name].description, name
    assert str(t["ra"].unit) == "deg" and str(t["flux_njy"].unit) == "nJy"
    np.testing.assert_allclose(t["mag"], 31.0 - 2.5 * np.log10(t["flux"]))
    np.testing.assert_allclose(t["flux_njy"], t["flux"] * 10 ** (-0.4 * (31.0 - 31.4)))
    gal = t["kind"] == "galaxy"
    assert np.isfinite(t["q"][gal]).all() and np.isnan(t["q"][~gal]).all()


def test_default_star_range_spans_faint_to_saturated() -> None:
    t = simulate_exposure(SimulationConfig(width=1024, height=1024, n_stars=400)).truth
    stars = t[(t["kind"] == "star") & ~t["is_pair"]]
    assert stars["psf_sn"].min() < 4
    assert stars["saturated"].sum() >= 1


def test_psf_sn_matches_empirical_scatter() -> None:
    """Forced PSF flux at the truth positions on many noise realisations: std = flux / psf_sn."""
    rng = np.random.default_rng(0)
    grid = np.arange(40, 480, 62.0)
    pos = [(x + rng.uniform(-0.5, 0.5), y + rng.uniform(-0.5, 0.5), 1500.0, "star")
           for x in grid for y in grid]
    psf = KolmogorovPsf(3.75, gradient=0.04, width=512, height=512)
    stamps = [psf.render(x, y, 1.0, size=64) for x, y, *_ in pos]
    z, sn = [], None
    for seed in range(36):
        sim = simulate_exposure(small(**EMPTY, positions=pos, seed=seed))
        img = sim.exposure.image.astype(float)
        if sn is None:
            sn = np.asarray(sim.truth["psf_sn"])
        for k, (p, (x0, y0)) in enumerate(stamps):
            data = img[y0 : y0 + 64, x0 : x0 + 64]
            flux = (p * data).sum() / (p * p).sum()
            z.append((flux - 1500.0) * sn[k] / 1500.0)
    z = np.asarray(z)
    assert z.size == 36 * len(pos)
    assert 5 < sn.min() and sn.max() < 9
    assert np.std(z) == pytest.approx(1.0, abs=0.05)
    assert abs(np.mean(z)) < 4 / np.sqrt(z.size)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="width"):
        SimulationConfig(width=4)
    with pytest.raises(ValueError, match="gain"):
        SimulationConfig(gain=0)
    with pytest.raises(ValueError, match="kind"):
        SimulationConfig(positions=[(1.0, 2.0, 3.0, "quasar")])
    with pytest.raises(ValueError, match="bad column"):
        SimulationConfig(width=100, height=100, bad_columns=(100,))
    with pytest.raises(TypeError):
        SimulationConfig(512, 512)  # keyword-only
    with pytest.raises(ValueError, match="FWHM"):
        simulate_exposure(small(fwhm_arcsec=0.2))
    with pytest.raises(ValueError, match="cannot place"):
        simulate_exposure(small(n_stars=500, min_separation_px=60))
