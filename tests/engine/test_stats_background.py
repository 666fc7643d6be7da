"""Clipped statistics and the mesh background."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats

from app.engine.background import BackgroundError, estimate_background, estimate_background_and_rms
from app.engine.config import BackgroundConfig
from app.engine.masks import MaskPlanes
from app.engine.stats import clipped_stats


def test_clipped_stats_match_astropy_with_outliers_and_nans():
    rng = np.random.default_rng(4)
    v = rng.normal(5, 2, 50_000)
    v[:1500] += 60  # bright contamination
    v[1500:1600] = np.nan
    mean, median, std = clipped_stats(v)
    ref = sigma_clipped_stats(v[np.isfinite(v)], sigma=3, maxiters=3)
    np.testing.assert_allclose([mean, median, std], ref, rtol=2e-3)
    # along an axis: each row on its own
    rows = np.stack([v, v * 2])
    m2, _, s2 = clipped_stats(rows, axis=-1)
    np.testing.assert_allclose(m2, [mean, 2 * mean], rtol=1e-5)
    np.testing.assert_allclose(s2, [std, 2 * std], rtol=1e-5)


def test_all_nan_slice_gives_nan():
    mean, median, std = clipped_stats(np.full((2, 10), np.nan), axis=-1)
    assert np.isnan(mean).all() and np.isnan(median).all() and np.isnan(std).all()


@pytest.mark.parametrize("algorithm", ["AKIMA_SPLINE", "NATURAL_SPLINE"])
@pytest.mark.parametrize("stat", ["MEANCLIP", "MEDIAN", "MEAN"])
def test_interpolated_background_recovers_a_smooth_sky(stat, algorithm):
    rng = np.random.default_rng(2)
    h, w = 700, 900
    y, x = np.mgrid[:h, :w]
    sky = 500 + 0.03 * x - 0.02 * y + 15 * np.sin(x / 300.0)
    image = (sky + rng.normal(0, 20, (h, w))).astype(np.float32)
    bkg = estimate_background(image, np.zeros((h, w), np.int32), MaskPlanes(),
                              BackgroundConfig(binSize=128, statisticsProperty=stat,
                                               useApprox=False, algorithm=algorithm))
    inner = (slice(64, h - 64), slice(64, w - 64))
    # per-cell noise is 20/128 = 0.16; the spline follows the sky to well within a count
    assert np.abs(bkg[inner] - sky[inner]).max() < 1.0
    assert abs(np.mean(bkg - sky)) < 0.1


@pytest.mark.parametrize("stat", ["MEANCLIP", "MEDIAN"])
def test_approximated_background_recovers_a_smooth_sky(stat):
    """LSST's default: an order-6 Chebyshev series over 16 × 12 cells."""
    rng = np.random.default_rng(5)
    h, w = 1536, 2048
    y, x = np.mgrid[:h, :w]
    sky = 500 + 0.03 * x - 0.02 * y + 15 * np.sin(x / 600.0) + 8 * np.cos(y / 500.0)
    image = (sky + rng.normal(0, 20, (h, w))).astype(np.float32)
    bkg = estimate_background(image, np.zeros((h, w), np.int32), MaskPlanes(),
                              BackgroundConfig(statisticsProperty=stat))
    assert bkg.dtype == np.float32
    inner = (slice(64, h - 64), slice(64, w - 64))
    assert np.abs(bkg[inner] - sky[inner]).max() < 0.5
    assert abs(np.mean(bkg - sky)) < 0.05


@pytest.mark.parametrize("size", [16, 100, 192, 256, 300])
@pytest.mark.parametrize("use_approx", [True, False])
def test_background_of_small_images_with_one_or_two_cells(size, use_approx):
    """Images of one or two cells per axis at the default binSize: a lower-order fit, never
    a failure (two cells once crashed the spline's slope)."""
    rng = np.random.default_rng(size)
    y, x = np.mgrid[:size, :size]
    sky = 100 + 0.05 * x - 0.03 * y
    image = (sky + rng.normal(0, 5, (size, size))).astype(np.float32)
    bkg = estimate_background(image, np.zeros((size, size), np.int32), MaskPlanes(),
                              BackgroundConfig(useApprox=use_approx))
    assert bkg.shape == (size, size) and np.isfinite(bkg).all()
    cells = max(1, round(size / 128))
    # one cell: a constant at the mean; two: a plane through the cell means
    tolerance = 0.05 * size + 1.0 if cells == 1 else 5 * 5 / (size / cells)
    assert np.abs(bkg - sky).max() < tolerance


def test_too_few_cells_refused_when_asked_to():
    with pytest.raises(BackgroundError, match="binSize"):
        estimate_background(np.zeros((256, 256), np.float32), np.zeros((256, 256), np.int32),
                            MaskPlanes(), BackgroundConfig(undersampleStyle="THROW_EXCEPTION"))


def test_background_rms_follows_the_local_noise():
    """SExtractor's rms map: a frame whose noise doubles from left to right."""
    rng = np.random.default_rng(9)
    h, w = 1024, 1024
    sigma = 10 + 10 * np.arange(w) / (w - 1)
    image = (200 + rng.normal(0, 1, (h, w)) * sigma).astype(np.float32)
    _, rms = estimate_background_and_rms(image, np.zeros((h, w), np.int32), MaskPlanes(),
                                         BackgroundConfig())
    inner = slice(64, w - 64)
    np.testing.assert_allclose(rms[inner, inner], np.broadcast_to(sigma[inner], (h - 128, w - 128)),
                               rtol=0.03)
    assert abs(np.median(rms / sigma) - 1) < 0.005


def test_background_ignores_masked_sources():
    rng = np.random.default_rng(3)
    h, w = 512, 512
    image = rng.normal(0, 10, (h, w)).astype(np.float32)
    mask = np.zeros((h, w), np.int32)
    image[100:300, 100:300] += 400  # a huge source, marked DETECTED
    mask[100:300, 100:300] = MaskPlanes().bitmask("DETECTED")
    bkg = estimate_background(image, mask, MaskPlanes(), BackgroundConfig(binSize=64))
    assert np.abs(bkg).max() < 3


def test_background_needs_some_pixels():
    mask = np.full((64, 64), MaskPlanes().bitmask("BAD"), np.int32)
    with pytest.raises(BackgroundError, match="no usable pixels"):
        estimate_background(np.zeros((64, 64), np.float32), mask, MaskPlanes(), BackgroundConfig())
