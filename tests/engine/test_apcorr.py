"""Aperture-correction fields: a gradient only where the stars show one."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.apcorr import fit_apcorr

WIDTH, HEIGHT = 2048, 2048


def _stars(n: int, err: float, gradient: float, seed: int):
    """``n`` stars' ratios: 1.006 plus ``gradient`` per image width in x, noise ``err``."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, WIDTH, n), rng.uniform(0, HEIGHT, n)
    truth = 1.006 + gradient * (x / WIDTH - 0.5)
    return x, y, truth + rng.normal(0, err, n), np.full(n, err), truth


@pytest.mark.parametrize("seed", range(8))
def test_noisy_stars_without_a_gradient_give_a_constant_field(seed):
    """40 stars of 15 % ratio noise (a 35-px aperture on stars of PSF S/N ~50): a fitted
    gradient would be noise of several per cent across the image."""
    x, y, ratio, err, _ = _stars(40, 0.15, 0.0, seed)
    field = fit_apcorr(x, y, ratio, err, WIDTH, HEIGHT)
    assert field is not None and field.field.order_x == 0
    assert abs(field.field.coefficients[0, 0] - 1.006) < 3 * 0.15 / np.sqrt(40)


def test_stars_scattering_more_than_their_errors_say_seldom_show_a_gradient():
    """Errors underestimated twofold: judged by the real scatter, a gradient is chosen by
    chance about as rarely as with honest errors (a few per cent), not a third of the time."""
    gradients = 0
    for seed in range(200):
        x, y, ratio, err, _ = _stars(40, 0.15, 0.0, seed)
        field = fit_apcorr(x, y, ratio, err / 2, WIDTH, HEIGHT)
        assert field is not None
        gradients += field.field.order_x == 1
    assert gradients <= 16


def test_a_gradient_the_stars_show_is_kept():
    x, y, ratio, err, truth = _stars(200, 0.01, 0.04, 3)
    field = fit_apcorr(x, y, ratio, err, WIDTH, HEIGHT)
    assert field is not None and field.field.order_x == 1
    assert np.abs(field(x, y) - truth).max() < 0.005


def test_too_few_stars_give_no_field():
    x, y, ratio, err, _ = _stars(5, 0.01, 0.0, 1)
    assert fit_apcorr(x, y, ratio, err, WIDTH, HEIGHT) is None


def test_fewer_than_three_times_the_minimum_of_stars_give_a_constant_field():
    x, y, ratio, err, _ = _stars(12, 0.01, 0.04, 2)
    field = fit_apcorr(x, y, ratio, err, WIDTH, HEIGHT)
    assert field is not None and field.field.order_x == 0
    assert abs(field.field.coefficients[0, 0] - np.average(ratio)) < 0.01
