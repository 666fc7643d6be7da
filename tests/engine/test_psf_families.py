"""The simulator's PSF families (Moffat, optics × atmosphere) and the truth they give.

Each family is checked against something independent of its renderer: the analytic Moffat
profile integrated over pixels, the diffraction MTF of a circular aperture, a Monte-Carlo of a
maximum-likelihood centroider for the Cramér–Rao bound.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from app.engine.psf import PsfModel
from app.engine.psf_fourier import SIGMA_TO_FWHM, ellipticity, stamp_origin
from app.engine.psf_kolmogorov import KolmogorovPsf, render_batch
from app.engine.psf_moffat import MoffatPsf
from app.engine.psf_optics import AberratedPsf, Optics, pupil_otf
from app.engine.simulate import SimulationConfig, bright_magnitude, make_psf, simulate_exposure

EMPTY = dict(n_stars=0, n_galaxies=0, n_pairs=0, n_saturated=0, bad_columns=())


def fwhm_e(psf, x, y):
    ixx, iyy, ixy = psf.moments(np.atleast_1d(x), np.atleast_1d(y))
    e1, e2, e = ellipticity(ixx, iyy, ixy)
    return SIGMA_TO_FWHM * (ixx * iyy - ixy**2) ** 0.25, e, 0.5 * np.degrees(np.arctan2(e2, e1))


def test_default_config_pixels_are_unchanged() -> None:
    """The default simulation's pixels, variance, mask, sky and S/N, byte for byte."""
    sim = simulate_exposure(SimulationConfig())
    digest = hashlib.sha256()
    ex = sim.exposure
    for a in (ex.image, ex.variance, ex.mask, ex.background, sim.truth["psf_sn"]):
        digest.update(np.ascontiguousarray(a).tobytes())
    assert digest.hexdigest() == (
        "1806d3e4c4f512cce6c73525792eb165e9f828ba483ebe3b8fe4a926e74d21ec")


def test_generic_renderer_reproduces_the_kolmogorov_one() -> None:
    psf = KolmogorovPsf(3.75, gradient=0.04, width=1000, height=1000)
    x, y = np.array([10.3, 500.0, 990.7]), np.array([20.6, 800.0, 3.2])
    _, _, px, py = stamp_origin(x, y, 64)
    ref = render_batch(64, psf.k0(x, y), px, py, np.ones(3))
    spec = psf.spectra(64, x, y, px, py)[0]
    np.testing.assert_allclose(np.fft.irfft2(spec, s=(64, 64), axes=(1, 2)), ref, atol=1e-13)


@pytest.mark.parametrize(("fwhm", "beta", "e"), [(1.5, 2.5, 0.0), (3.75, 3.0, 0.1),
                                                 (8.0, 4.5, 0.05)])
def test_moffat_size_and_ellipticity_match_the_request(fwhm, beta, e) -> None:
    psf = MoffatPsf(fwhm, beta, ellipticity=e, angle_deg=30.0, gradient=0.04, width=1000,
                    height=1000)
    assert isinstance(psf, PsfModel)
    measured, e_meas, angle = fwhm_e(psf, [499.5, 0.0, 999.0], [499.5, 0.0, 999.0])
    np.testing.assert_allclose(measured, [fwhm, 0.96 * fwhm, 1.04 * fwhm], rtol=2e-4)
    # the pixel dilutes the profile's ellipticity by ≈ σ² / (σ² + 1/12)
    sigma2 = (measured / SIGMA_TO_FWHM) ** 2
    np.testing.assert_allclose(e_meas, e * (sigma2 - 1 / 12) / sigma2, rtol=0.01, atol=1e-9)
    if e:
        np.testing.assert_allclose(angle, 30.0, atol=0.2)
    stamp, _ = psf.render(100.3, 200.7, 12345.0, size=128)
    assert stamp.sum() == pytest.approx(12345.0, rel=1e-12)


def test_moffat_pixels_are_the_profile_integrated_over_pixels() -> None:
    """Independent of the Fourier path: the analytic Moffat, summed on 16×16 sub-pixels."""
    beta = 2.5
    psf = MoffatPsf(6.0, beta)
    alpha = float(psf.alpha(0.0, 0.0)[0])
    stamp, (x0, y0) = psf.render(50.3, 40.8, 1.0, size=256)
    sub = (np.arange(16) + 0.5) / 16 - 0.5
    jj, ii = np.mgrid[-7:8, -7:8]
    cx, cy = 50, 41  # the pixel nearest the source
    dx = (cx + ii)[..., None, None] + sub[None, None, None, :] - 50.3
    dy = (cy + jj)[..., None, None] + sub[None, None, :, None] - 40.8
    profile = (beta - 1) / (np.pi * alpha**2) * (1 + (dx**2 + dy**2) / alpha**2) ** (-beta)
    expected = profile.mean(axis=(2, 3))
    got = stamp[cy - y0 - 7 : cy - y0 + 8, cx - x0 - 7 : cx - x0 + 8]
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-4 * expected.max())


def test_pupil_otf_is_the_circular_aperture_mtf() -> None:
    """No aberrations, no obscuration: (2/π)(acos ν − ν√(1 − ν²)), ν = k / cutoff."""
    optics = Optics(obscuration=0.0, zernikes=(0.0,) * 5, field_defocus=0.0,
                    field_astigmatism=0.0, field_coma=0.0)
    otf = pupil_otf(optics, np.zeros(5))
    half = otf.shape[0] // 2
    lags = np.arange(0, 64, 4)
    nu = lags / 64
    mtf = (2 / np.pi) * (np.arccos(nu) - nu * np.sqrt(1 - nu**2))
    np.testing.assert_allclose(otf[half, half + lags].real, mtf, atol=0.01)
    assert np.abs(otf[half, half + 66]) < 1e-12  # beyond the cutoff
    np.testing.assert_allclose(otf[::-1, ::-1], otf.conj(), atol=1e-12)  # a real PSF


def test_aberrated_psf_changes_shape_across_the_field() -> None:
    psf = AberratedPsf(3.75, width=1200, height=1200, ellipticity=0.05, angle_deg=20.0)
    assert isinstance(psf, PsfModel)
    xs = np.array([599.5, 0.0, 1199.0, 0.0, 1199.0])
    ys = np.array([599.5, 0.0, 1199.0, 1199.0, 0.0])
    fwhm, e, angle = fwhm_e(psf, xs, ys)
    assert fwhm[0] == pytest.approx(3.75, rel=1e-4)
    assert 1.05 < fwhm[1:].min() / 3.75 and fwhm[1:].max() / 3.75 < 1.25  # larger off-axis
    assert e.max() - e.min() > 0.1  # the ellipticity changes …
    big = e > 0.05
    assert np.ptp(angle[big]) > 30  # … and so does its direction
    np.testing.assert_allclose(psf.fwhm(xs, ys), fwhm, rtol=1e-6)  # exact at the nodes
    corner = psf.kernel(1199.0, 1199.0)
    centre = psf.kernel(599.5, 599.5)
    # coma: the corner's PSF is not symmetric under a half turn, more than the centre's
    asym = [np.abs(k - k[::-1, ::-1]).max() / k.max() for k in (centre, corner)]
    assert asym[1] > 0.1 and asym[1] > 2 * asym[0]


@pytest.mark.parametrize("family", ["kolmogorov", "moffat", "aberrated"])
def test_every_family_conserves_flux_and_gives_energies(family) -> None:
    pos = [(120.3, 380.8, 5.0e4, "star"), (380.6, 140.1, 3.0e4, "galaxy", 1.2, 0.4, 30.0)]
    sim = simulate_exposure(SimulationConfig(width=512, height=512, psf_family=family,
                                             positions=pos, **EMPTY))
    for row in sim.truth:
        ix, iy = int(round(row["x"])), int(round(row["y"]))
        box = sim.model[iy - 100 : iy + 101, ix - 100 : ix + 101]
        assert box.sum() == pytest.approx(row["flux"], rel=1e-6)
    assert sim.model.sum() == pytest.approx(sim.truth["flux"].sum(), rel=1e-9)
    psf = sim.psf
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 511, 4), rng.uniform(0, 511, 4)
    fast = psf.encircled_energies(x, y, 12.0)
    slow = psf.rendered_encircled_energies(x, y, 12.0)
    np.testing.assert_allclose(fast, slow, atol=1e-7)
    ee = [psf.encircled_energy(200.0, 300.0, r) for r in (3.0, 12.0, 40.0)]
    assert 0 < ee[0] < ee[1] < ee[2] < 1.0 + 1e-9
    star = sim.truth[0]
    assert np.isfinite(star["crb_x"]) and np.isnan(sim.truth[1]["crb_x"])


def _fit_positions(psf, x, y, data, var, flux0, size=32, iterations=4):
    """Maximum-likelihood (weighted Gauss–Newton) fits of flux and position, one per stamp."""
    n = data.shape[0]
    c = size // 2
    ix, iy = np.floor(x + 0.5), np.floor(y + 0.5)
    xh, yh, fh = np.full(n, x), np.full(n, y), np.full(n, flux0)
    w = 1.0 / var
    for _ in range(iterations):
        px, py = xh - ix + c, yh - iy + c
        p = psf.stamps(size, np.full(n, x), np.full(n, y), px, py, np.ones(n))
        dx, dy = psf.gradients(size, np.full(n, x), np.full(n, y), px, py)
        jac = np.stack([p, fh[:, None, None] * dx, fh[:, None, None] * dy], axis=1)
        jac = jac.reshape(n, 3, -1)
        r = (data - fh[:, None, None] * p).reshape(n, -1)
        a = np.einsum("nip,njp,p->nij", jac, jac, w.ravel())
        b = np.einsum("nip,np,p->ni", jac, r, w.ravel())
        step = np.linalg.solve(a, b[..., None])[..., 0]
        fh, xh, yh = fh + step[:, 0], xh + step[:, 1], yh + step[:, 2]
    return xh, yh


@pytest.mark.parametrize("family", ["moffat", "aberrated"])
def test_centroid_bound_matches_a_maximum_likelihood_centroider(family) -> None:
    """A star of PSF S/N ≈ 40 in 600 noise realisations (Gaussian, the simulator's variance):
    the scatter of an ML fit of flux and position is the truth's Cramér–Rao bound."""
    cfg = SimulationConfig(width=256, height=256, psf_family=family, moffat_beta=2.5,
                           psf_ellipticity=0.1, psf_angle_deg=25.0,
                           positions=[(200.3, 190.6, 12000.0, "star")], **EMPTY)
    sim = simulate_exposure(cfg)
    star = sim.truth[0]
    assert 30 < star["psf_sn"] < 60
    size = 32
    ix, iy = int(np.floor(star["x"] + 0.5)), int(np.floor(star["y"] + 0.5))
    box = np.s_[iy - size // 2 : iy + size // 2, ix - size // 2 : ix + size // 2]
    mean = sim.model[box]
    var = (mean + cfg.sky_counts) / cfg.gain + (cfg.read_noise / cfg.gain) ** 2
    rng = np.random.default_rng(4)
    data = mean + rng.normal(size=(600, size, size)) * np.sqrt(var)
    xh, yh = _fit_positions(sim.psf, star["x"], star["y"], data, var, star["flux"], size)
    # the bound is computed on a 64-px stamp, the fit on 32 px: the outer pixels add < 0.5 %
    for got, bound in ((np.std(xh), star["crb_x"]), (np.std(yh), star["crb_y"])):
        assert got == pytest.approx(bound, rel=0.08)  # 600 samples: σ of a std ≈ 2.9 %
    assert abs(np.mean(xh) - star["x"]) < 4 * star["crb_x"] / np.sqrt(600)


def test_sky_in_keeps_the_sky_and_no_background() -> None:
    cfg = SimulationConfig(width=256, height=256, sky_in=True, sky_gradient=300.0, **EMPTY)
    ex = simulate_exposure(cfg).exposure
    assert ex.background is None
    from app.engine.simulate import sky_model

    sky = sky_model(cfg)
    assert np.mean(ex.image - sky) == pytest.approx(0.0, abs=0.5)
    assert np.std(ex.image - sky) == pytest.approx(np.sqrt(1000 + 25), rel=0.02)
    assert sky.max() - sky.min() > 300


def test_bright_galaxy_fraction_sets_the_galaxies_among_bright_objects() -> None:
    cfg = SimulationConfig(width=1024, height=1024, n_stars=2000, n_pairs=0, n_saturated=0,
                           galaxy_mag_range=(17.0, 22.5), bright_galaxy_fraction=0.7, seed=2)
    t = simulate_exposure(cfg).truth
    m = bright_magnitude(cfg, make_psf(cfg))
    bright = t["mag"] < m
    frac = float(np.mean(t["kind"][bright] == "galaxy"))
    n = int(bright.sum())
    assert n > 300
    assert frac == pytest.approx(0.7, abs=3 * np.sqrt(0.21 / n))
    stars = t[(t["kind"] == "star") & (t["mag"] > m - 0.1) & (t["mag"] < m + 0.1)]
    assert np.median(stars["psf_sn"]) == pytest.approx(50.0, rel=0.1)  # what "bright" means


def test_new_config_fields_are_validated() -> None:
    with pytest.raises(ValueError, match="psf_family"):
        SimulationConfig(psf_family="gaussian")
    with pytest.raises(ValueError, match="psf_ellipticity needs"):
        SimulationConfig(psf_ellipticity=0.1)
    with pytest.raises(ValueError, match="moffat_beta"):
        SimulationConfig(psf_family="moffat", moffat_beta=1.0)
    with pytest.raises(ValueError, match="bright_galaxy_fraction"):
        SimulationConfig(bright_galaxy_fraction=1.0)
    with pytest.raises(ValueError, match="optics alone"):
        make_psf(SimulationConfig(width=64, height=64, psf_family="aberrated",
                                  fwhm_arcsec=0.2))
