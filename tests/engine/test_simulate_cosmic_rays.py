"""Cosmic rays rendered for simulations: geometry, charge and energy distributions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import digamma

from app.engine.exposure import Exposure
from app.engine.simulate_cosmic_rays import (
    KINDS,
    MIP_MPV_E_PER_UM,
    CosmicRayConfig,
    add_cosmic_rays,
    render_cosmic_rays,
)

SHAPE = (512, 512)
TRACK, WORM, SPOT = (KINDS.index(k) for k in ("track", "worm", "spot"))


def _only(kind: int, n: int, **kw) -> CosmicRayConfig:
    fractions = [0.0, 0.0, 0.0]
    fractions[kind] = 1.0
    return CosmicRayConfig(n_rays=n, fractions=tuple(fractions), **kw)


def test_same_seed_same_rays_other_seed_other_rays():
    a = render_cosmic_rays(SHAPE, CosmicRayConfig(n_rays=50, seed=3))
    b = render_cosmic_rays(SHAPE, CosmicRayConfig(n_rays=50, seed=3))
    c = render_cosmic_rays(SHAPE, CosmicRayConfig(n_rays=50, seed=4))
    np.testing.assert_array_equal(a.deposit(), b.deposit())
    assert not np.array_equal(a.deposit(), c.deposit())


def test_charge_of_each_ray_lands_on_its_pixels():
    cfg = CosmicRayConfig(n_rays=400, gain=2.0, seed=1)
    rays = render_cosmic_rays(SHAPE, cfg)
    per_ray = np.bincount(rays.pix_ray, weights=rays.pix_counts, minlength=len(rays))
    np.testing.assert_allclose(per_ray, rays.counts)
    # rays well inside the image lose nothing off its edges: counts = electrons / gain
    h, w = SHAPE
    margin = 4
    inside = ((np.minimum(rays.x0, rays.x1) > margin) & (np.maximum(rays.x0, rays.x1) < w - margin)
              & (np.minimum(rays.y0, rays.y1) > margin)
              & (np.maximum(rays.y0, rays.y1) < h - margin) & (rays.kind != WORM))
    assert inside.sum() > 200
    np.testing.assert_allclose(rays.counts[inside], rays.electrons[inside] / 2.0, rtol=1e-5)
    assert rays.deposit().sum() == pytest.approx(rays.pix_counts.sum(), rel=1e-5)
    assert (rays.pix_y >= 0).all() and (rays.pix_y < h).all()
    assert (rays.pix_x >= 0).all() and (rays.pix_x < w).all()


def test_track_lengths_follow_the_flux_of_muons_through_a_plane():
    """cos θ = u^¼ (cos²θ per solid angle × cos θ projection): the median track is
    thickness × tan(arccos 0.5^¼) long and 0.5⁴ of them are longer than at θ = 60°."""
    cfg = _only(TRACK, 8000)
    rays = render_cosmic_rays((2048, 2048), cfg)
    length = np.hypot(rays.x1 - rays.x0, rays.y1 - rays.y0)
    t_px = cfg.thickness_um / cfg.pixel_um
    cos_median = 0.5**0.25
    assert np.median(length) == pytest.approx(t_px * np.sqrt(1 - cos_median**2) / cos_median,
                                              rel=0.04)
    assert np.mean(length > t_px * np.tan(np.radians(60))) == pytest.approx(0.5**4, abs=0.008)
    assert length.max() <= t_px * np.tan(np.radians(85.0)) + 1e-9


def test_track_charge_per_micron_is_the_moyal_mean():
    """Each step's charge is Moyal(MPV, w·MPV): its mean is MPV (1 + w (γ + ln 2)), with
    E[−ln Z²] = −(ψ(½) + ln 2) for Z ~ N(0, 1)."""
    cfg = _only(TRACK, 3000)
    rays = render_cosmic_rays((2048, 2048), cfg)
    t_px = cfg.thickness_um / cfg.pixel_um
    length = np.hypot(rays.x1 - rays.x0, rays.y1 - rays.y0)
    path_um = np.hypot(length, t_px) * cfg.pixel_um
    mean_log = -(digamma(0.5) + np.log(2.0))
    expected = MIP_MPV_E_PER_UM * (1 + cfg.landau_width * mean_log)
    assert np.mean(rays.electrons / path_um) == pytest.approx(expected, rel=0.01)
    # a Landau-like distribution: skewed to high deposits, mode below the mean
    per_um = rays.electrons / path_um
    assert np.median(per_um) < np.mean(per_um)


def test_spots_are_log_uniform_in_charge_and_worms_are_curled():
    spots = render_cosmic_rays((1024, 1024), _only(SPOT, 4000))
    lo, hi = CosmicRayConfig().spot_electrons
    assert spots.electrons.min() >= lo * 0.999 and spots.electrons.max() <= hi * 1.001
    assert np.median(spots.electrons) == pytest.approx(np.sqrt(lo * hi), rel=0.05)
    worms = render_cosmic_rays((1024, 1024), _only(WORM, 300))
    end_to_end = np.hypot(worms.x1 - worms.x0, worms.y1 - worms.y0)
    assert np.median(end_to_end) < np.mean(CosmicRayConfig().worm_length_px)  # curled paths


def test_peak_pixel_holds_the_brightest_deposit_of_its_ray():
    rays = render_cosmic_rays(SHAPE, CosmicRayConfig(n_rays=100, seed=2))
    py, px = rays.peak_pixels()
    peak = rays.peak_counts()
    for i in np.flatnonzero(py >= 0)[:30]:
        mine = rays.pix_ray == i
        at = mine & (rays.pix_y == py[i]) & (rays.pix_x == px[i])
        assert rays.pix_counts[at].sum() == pytest.approx(peak[i])
        assert peak[i] == pytest.approx(rays.pix_counts[mine].max())


def test_add_cosmic_rays_adds_charge_to_image_and_variance():
    rays = render_cosmic_rays(SHAPE, CosmicRayConfig(n_rays=60, gain=2.0, seed=5))
    image = np.zeros(SHAPE, np.float32)
    ex = Exposure(image, np.zeros(SHAPE, np.int32), np.full(SHAPE, 10.0, np.float32))
    add_cosmic_rays(ex, rays, gain=2.0)
    dep = rays.deposit()
    np.testing.assert_allclose(ex.image, dep, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(ex.variance, 10.0 + dep / 2.0, rtol=1e-6)
    assert rays.hit(1.0).sum() == (dep >= 1.0).sum()
    with pytest.raises(ValueError, match="shape"):
        add_cosmic_rays(Exposure(np.zeros((8, 8)), np.zeros((8, 8)), np.ones((8, 8))), rays,
                        gain=1.0)


@pytest.mark.parametrize("kw", [dict(n_rays=-1), dict(fractions=(0.0, 0.0, 0.0)),
                                dict(diffusion_px=1.0), dict(gain=0.0)])
def test_bad_config_is_refused(kw):
    with pytest.raises(ValueError):
        CosmicRayConfig(**kw)
