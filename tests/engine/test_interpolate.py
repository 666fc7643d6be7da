"""Best-direction interpolation of bad pixels, against images whose values are known."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.interpolate import (
    LPC_AXIS,
    LPC_DIAGONAL,
    blocked_pixels,
    interpolate_pixels,
    sorted_unique,
)

SHAPE = (64, 80)


def _plane() -> np.ndarray:
    y, x = np.mgrid[: SHAPE[0], : SHAPE[1]].astype(float)
    return (100.0 + 0.7 * x - 0.3 * y).astype(np.float32)


def _fill(image, variance, bad, choose="lowest", fallback=0.0):
    ys, xs = np.nonzero(bad)
    values, local = interpolate_pixels(image, variance, bad.copy(), ys, xs,
                                       fallback=fallback, choose=choose)
    return ys, xs, values, local


def test_lpc_coefficients_reproduce_straight_lines():
    """Interp.h's predictive coefficients sum to ½ per side: exact on any linear profile."""
    for c1, c2 in (LPC_AXIS, LPC_DIAGONAL):
        assert 2 * (c1 + c2) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("choose", ["lowest", "mean"])
def test_plane_is_restored_exactly_under_lone_pixels_tracks_and_blobs(choose):
    image = _plane()
    variance = np.full(SHAPE, 1e-12, np.float32)  # noiseless: no spread between estimates
    bad = np.zeros(SHAPE, bool)
    bad[10, 10] = bad[30, 50] = True  # lone pixels: the 4-point estimates
    bad[20, 5:40] = True  # a long horizontal track: filled across it, vertically
    bad[40:44, 60:65] = True  # a blob
    bad[50:58, 20] = True  # a vertical track
    work = image.copy()
    work[bad] = 1e6  # never read
    ys, xs, values, local = _fill(work, variance, bad, choose)
    np.testing.assert_allclose(values, image[ys, xs], rtol=1e-5)
    assert np.isfinite(local).all()


def test_curvature_of_a_star_is_followed_by_the_four_point_estimate():
    """On a Gaussian profile the 4-point estimate at the peak is far closer than the mean of
    the two neighbours (which it corrects by the curvature)."""
    y, x = np.mgrid[:31, :31].astype(float)
    star = 1000.0 * np.exp(-((x - 15) ** 2 + (y - 15) ** 2) / (2 * 2.0**2))
    bad = np.zeros(star.shape, bool)
    bad[15, 15] = True
    _, _, values, _ = _fill(star, np.full(star.shape, 1e-12), bad, "mean")
    two_point = 0.5 * (star[15, 14] + star[15, 16])
    assert abs(values[0] - 1000.0) < 0.25 * abs(two_point - 1000.0)


def test_noise_statistics_of_the_estimates_on_blank_sky():
    """Lone pixels on N(0, 1) sky: the inverse-variance mean of the four 4-point estimates
    (each of variance 2(c1² + c2²)) is unbiased with variance 1/Σ(1/var); the lowest of four
    independent estimates is biased by E[min of 4 N(0, 1)] = −1.0294 of their sigma."""
    rng = np.random.default_rng(1)
    shape = (600, 600)
    image = rng.normal(0.0, 1.0, shape).astype(np.float32)
    variance = np.ones(shape, np.float32)
    bad = np.zeros(shape, bool)
    bad[5:-5:6, 5:-5:6] = True  # lone pixels, 6 apart: their estimates share no pixel
    truth = image[bad]
    work = image.copy()
    work[bad] = 50.0
    var_axis = 2 * (LPC_AXIS[0] ** 2 + LPC_AXIS[1] ** 2)
    var_diag = 2 * (LPC_DIAGONAL[0] ** 2 + LPC_DIAGONAL[1] ** 2)
    _, _, mean_values, _ = _fill(work, variance, bad, "mean", fallback=0.0)
    err = mean_values - truth
    expected_var = 1.0 / (2 / var_axis + 2 / var_diag)
    n = len(err)
    assert np.mean(mean_values) == pytest.approx(0.0, abs=4 * np.sqrt(expected_var / n))
    assert np.var(mean_values) == pytest.approx(expected_var, rel=0.06)
    assert np.var(err) == pytest.approx(1.0 + expected_var, rel=0.06)
    _, _, low, _ = _fill(work, variance, bad, "lowest", fallback=-100.0)
    sigma = np.sqrt(0.5 * (var_axis + var_diag))
    assert np.mean(low) == pytest.approx(-1.0294 * sigma, rel=0.05)


def test_bad_mask_bits_and_non_finite_pixels_are_never_read():
    image = _plane()
    mask = np.zeros(SHAPE, np.int32)
    mask[20, 30] = 1  # a BAD neighbour of the pixel to fill
    image[21, 31] = np.nan  # a NaN neighbour
    image[20, 31] = 1e6  # the pixel to fill
    blocked = blocked_pixels(image, mask, 1)
    assert blocked[20, 30] and blocked[21, 31] and not blocked[20, 31]
    blocked[20, 31] = True
    values, _ = interpolate_pixels(image, np.full(SHAPE, 1e-12), blocked, np.array([20]),
                                   np.array([31]), fallback=0.0)
    assert values[0] == pytest.approx(_plane()[20, 31], rel=1e-5)


def test_pixels_no_direction_reaches_across_get_the_fallback():
    image = np.zeros((9, 9), np.float32)
    blocked = np.ones((9, 9), bool)
    blocked[0, 0] = False  # one usable pixel: no direction has one on both sides
    values, local = interpolate_pixels(image, np.ones((9, 9)), blocked, np.array([4]),
                                       np.array([4]), fallback=7.5)
    assert values[0] == 7.5 and np.isnan(local[0])


def test_sorted_unique_is_numpy_unique():
    values = np.random.default_rng(0).integers(0, 1000, 5000)
    np.testing.assert_array_equal(sorted_unique(values), np.unique(values))
    assert len(sorted_unique(np.zeros(0, np.int64))) == 0
