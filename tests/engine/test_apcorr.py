"""Aperture-correction fields as MeasureApCorrTask fits them."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.apcorr import fit_apcorr
from app.engine.config import ApCorrConfig
from app.engine.fields import ChebyshevBoundedField

WIDTH, HEIGHT = 2048, 2048
BOX = (0, 0, WIDTH - 1, HEIGHT - 1)
TRUTH = ChebyshevBoundedField(BOX, np.array([[0.97, 0.006, -0.004],
                                             [0.003, 0.002, 0.0],
                                             [-0.005, 0.0, 0.0]]))


def _stars(n: int, err: float, seed: int):
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, WIDTH, n), rng.uniform(0, HEIGHT, n)
    truth = TRUTH(x, y)
    return x, y, truth + rng.normal(0, err, n), truth


@pytest.mark.parametrize("seed", range(5))
def test_an_order_two_field_is_recovered_from_stars(seed):
    """200 stars of 0.5 % ratio noise (S/N ≥ 200 in a 12-px aperture): the field follows
    the truth to well within a per cent everywhere, its quoted error matches its scatter."""
    x, y, z, _ = _stars(200, 0.005, seed)
    ap, keep, why = fit_apcorr(x, y, z, BOX, ApCorrConfig())
    assert ap is not None and why == ""
    assert ap.field.order_x == 2 and ap.n_stars >= 195
    gx, gy = np.meshgrid(np.linspace(0, WIDTH - 1, 20), np.linspace(0, HEIGHT - 1, 20))
    # six terms from n stars: about 0.005·√(6/n) at a typical point, a few times that at
    # the corners, where the polynomial is least constrained
    assert np.abs(ap(gx, gy) - TRUTH(gx, gy)).max() < 5 * 0.005 * np.sqrt(6 / ap.n_stars)
    assert ap.err == pytest.approx(0.005 / np.sqrt(ap.n_stars), rel=0.25)


def test_outliers_are_clipped():
    """A tenth of the stars are galaxies or blends with ratios 20 % off."""
    x, y, z, _ = _stars(150, 0.005, 7)
    z[::10] *= 1.2
    ap, keep, _ = fit_apcorr(x, y, z, BOX, ApCorrConfig())
    assert ap is not None
    assert not keep[::10].any()
    assert np.abs(ap(x, y) - TRUTH(x, y)).max() < 5 * 0.005 * np.sqrt(6 / ap.n_stars)


@pytest.mark.parametrize(("n", "order"), [(2, 0), (3, 0), (4, 1), (6, 1), (7, 2)])
def test_the_order_drops_with_few_stars(n, order):
    """LSST's rule: at least minDegreesOfFreedom (1) stars beyond the field's terms."""
    x, y, z, _ = _stars(n, 1e-4, 3)
    ap, _, _ = fit_apcorr(x, y, z, BOX, ApCorrConfig())
    assert ap is not None and ap.field.order_x == order


def test_one_star_is_not_enough():
    x, y, z, _ = _stars(1, 1e-4, 3)
    ap, _, why = fit_apcorr(x, y, z, BOX, ApCorrConfig())
    assert ap is None and "only 1 stars, need at least 2" in why


def test_the_final_median_shift_centres_the_residuals():
    x, y, z, _ = _stars(60, 0.01, 11)
    ap, keep, _ = fit_apcorr(x, y, z, BOX, ApCorrConfig())
    assert ap is not None
    assert abs(np.median(ap(x[keep], y[keep]) - z[keep])) < 1e-12


def test_no_star_is_not_enough_either():
    ap, _, why = fit_apcorr(np.zeros(0), np.zeros(0), np.zeros(0), BOX, ApCorrConfig())
    assert ap is None and "only 0 stars" in why


def test_noisy_stars_without_a_gradient_give_a_constant_field():
    """40 stars of 1 % ratio noise on a constant field: an order-2 fit would add its noise,
    ~0.4 %, to every flux; the order the stars support is 0 nearly always."""
    constant, spread = 0, []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        x, y = rng.uniform(0, WIDTH, 40), rng.uniform(0, HEIGHT, 40)
        z = 0.975 + rng.normal(0, 0.01, 40)
        ap, _, _ = fit_apcorr(x, y, z, BOX, ApCorrConfig())
        assert ap is not None
        constant += ap.field.order_x == 0
        gx, gy = np.meshgrid(np.linspace(0, WIDTH - 1, 9), np.linspace(0, HEIGHT - 1, 9))
        spread.append(np.abs(ap(gx, gy) - 0.975).max())
    assert constant >= 34
    assert np.median(spread) < 0.004
