"""Clipped statistics and the mesh background."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats

from app.engine.background import estimate_background
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


@pytest.mark.parametrize("stat", ["MEANCLIP", "MEDIAN", "MEAN"])
def test_background_recovers_a_smooth_sky(stat):
    rng = np.random.default_rng(2)
    h, w = 700, 900
    y, x = np.mgrid[:h, :w]
    sky = 500 + 0.03 * x - 0.02 * y + 15 * np.sin(x / 300.0)
    image = (sky + rng.normal(0, 20, (h, w))).astype(np.float32)
    bkg = estimate_background(image, np.zeros((h, w), np.int32), MaskPlanes(),
                              BackgroundConfig(binSize=128, statisticsProperty=stat))
    inner = (slice(64, h - 64), slice(64, w - 64))
    # per-cell noise is 20/128 = 0.16; the spline follows the sky to well within a count
    assert np.abs(bkg[inner] - sky[inner]).max() < 1.0
    assert abs(np.mean(bkg - sky)) < 0.1


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
    with pytest.raises(ValueError, match="no usable pixels"):
        estimate_background(np.zeros((64, 64), np.float32), mask, MaskPlanes(), BackgroundConfig())
