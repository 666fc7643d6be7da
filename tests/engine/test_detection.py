"""SourceDetectionTask's algorithm on small images with known content."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from app.engine.background import estimate_background
from app.engine.config import DetectionConfig
from app.engine.detection import (
    LocalPeaks,
    detect,
    dilate_disk,
    gaussian_kernel_1d,
    kernel_width,
    smooth,
    update_peaks,
)
from app.engine.exposure import Exposure
from app.engine.psf import pixel_gaussian

SIGMA = 1.6
NOISE = 10.0


def _exposure(sources=(), shape=(300, 300), seed=0) -> Exposure:
    """Gaussian noise of stdev NOISE plus Gaussian-PSF sources (x, y, flux)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0, NOISE, shape).astype(np.float32)
    padded = np.pad(image, 12)
    for x, y, flux in sources:
        ix, iy = int(round(x)), int(round(y))
        padded[iy: iy + 25, ix: ix + 25] += flux * pixel_gaussian(25, SIGMA, x - ix, y - iy)
    image = padded[12:-12, 12:-12]
    return Exposure(image, np.zeros(shape, np.int32), np.full(shape, NOISE**2, np.float32))


def _config(**kw) -> DetectionConfig:
    return DetectionConfig(reEstimateBackground=False, **kw)


def test_kernel_width_is_lsst_formula():
    for sigma in (0.8, 1.6, 2.3, 5.0):
        assert kernel_width(sigma) == (int(7 * sigma + 0.5) // 2) * 2 + 1
        assert len(gaussian_kernel_1d(sigma)) == kernel_width(sigma)
    np.testing.assert_allclose(gaussian_kernel_1d(1.6).sum(), 1.0)


def test_stdev_threshold_is_value_times_clipped_stdev_of_smoothed_image():
    ex = _exposure()
    result = detect(ex, SIGMA, _config(thresholdValue=4.0))
    smoothed = smooth(ex.image, gaussian_kernel_1d(SIGMA))
    half = kernel_width(SIGMA) // 2
    core = smoothed[half:-half, half:-half]
    # white noise smoothed by a normalized Gaussian: stdev = NOISE / (2 √π σ)
    expected_sd = NOISE / (2 * np.sqrt(np.pi) * SIGMA)
    assert result.threshold == pytest.approx(4.0 * np.std(core), rel=0.02)
    assert result.threshold == pytest.approx(4.0 * expected_sd, rel=0.05)


def test_sources_found_with_peaks_sorted_and_masks_set():
    src = [(80.3, 90.6, 3000.0), (200.0, 150.2, 1500.0), (60.0, 240.0, 800.0)]
    ex = _exposure(src)
    result = detect(ex, SIGMA, _config())
    assert len(result.positive) == 3
    peaks = sorted((int(f.peaks[0]["x"]), int(f.peaks[0]["y"])) for f in result.positive)
    assert peaks == sorted((round(x), round(y)) for x, y, _ in src)
    detected = ex.planes.bitmask("DETECTED")
    assert ((ex.mask & detected) != 0).sum() == sum(f.area for f in result.positive)
    # the border the kernel cannot reach is EDGE
    half = kernel_width(SIGMA) // 2
    assert (ex.mask[:, :half] & ex.planes.bitmask("EDGE")).all()
    assert not (ex.mask[half:-half, half:-half] & ex.planes.bitmask("EDGE")).any()


def test_source_at_the_border_reads_edge_plus_detected():
    ex = _exposure([(8.0, 150.0, 4000.0)])
    detect(ex, SIGMA, _config())
    values = set(np.unique(ex.mask[ex.mask > 0]).tolist())
    assert {16, 32, 48} <= values  # EDGE, DETECTED, EDGE|DETECTED


def test_footprints_grow_by_nsigma_to_grow():
    ex = _exposure([(150.0, 150.0, 3000.0)])
    small = detect(ex.copy(), SIGMA, _config(nSigmaToGrow=0.0)).positive[0]
    grown = detect(ex.copy(), SIGMA, _config(nSigmaToGrow=2.4)).positive[0]
    r = int(2.4 * SIGMA + 0.5)
    expected = dilate_disk(small.unflatten(np.ones(small.area, bool), False), 0)  # sanity
    assert expected.sum() == small.area
    x0, y0, x1, y1 = small.bbox
    gx0, gy0, gx1, gy1 = grown.bbox
    assert (x0 - gx0, y0 - gy0, gx1 - x1, gy1 - y1) == (r, r, r, r)


def test_dilate_disk_matches_a_disk():
    m = np.zeros((41, 41), bool)
    m[20, 20] = True
    y, x = np.mgrid[:41, :41]
    np.testing.assert_array_equal(dilate_disk(m, 6), (x - 20) ** 2 + (y - 20) ** 2 <= 36)


def test_min_pixels_and_include_multiplier():
    src = [(80.0, 80.0, 3000.0), (220.0, 220.0, 500.0)]
    ex = _exposure(src)
    both = detect(ex.copy(), SIGMA, _config())
    assert len(both.positive) == 2
    # only footprints whose peak reaches 5 × 5σ are kept
    bright = detect(ex.copy(), SIGMA, _config(includeThresholdMultiplier=5.0))
    assert len(bright.positive) == 1
    assert bright.positive[0].peaks[0]["x"] == 80
    few = detect(ex.copy(), SIGMA, _config(minPixels=10_000))
    assert len(few.positive) == 0


def test_negative_detections():
    ex = _exposure([(100.0, 100.0, -3000.0), (200.0, 200.0, 3000.0)])
    result = detect(ex, SIGMA, _config(thresholdPolarity="both"))
    assert len(result.positive) == 1 and len(result.negative) == 1
    assert result.negative[0].peaks[0]["value"] < 0
    assert (ex.mask & ex.planes.bitmask("DETECTED_NEGATIVE")).any()


@pytest.mark.parametrize("rescale", [True, False])
def test_pixel_stdev_threshold_follows_the_variance_plane(rescale):
    """A variance plane that overstates the noise in part of the image raises the threshold
    there and nowhere else (the sky-noise rescaling only ever raises it)."""
    config = _config(thresholdType="pixel_stdev", doRescaleToSkyNoise=rescale)
    ex = _exposure([(90.0, 150.0, 3000.0)])
    ex.variance[:, :150] *= 400  # left half claims 20x the noise: the source drops to S/N 2.6
    result = detect(ex, SIGMA, config)
    assert len(result.positive) == 0  # the source sits on the high-variance side
    assert result.noise_scale == 1.0
    ex2 = _exposure([(220.0, 150.0, 3000.0)])
    ex2.variance[:, :150] *= 400
    assert len(detect(ex2, SIGMA, config).positive) == 1


def test_pixel_stdev_threshold_is_raised_for_correlated_noise():
    """Noise correlated between neighbours (a resampled image) with a variance plane that
    describes each pixel alone: smoothing leaves more noise than the plane predicts, and a
    threshold on the plane finds dozens of noise peaks. Scaled to the blank sky's real
    spread, 5σ finds almost none, and the one real source stays."""
    rng = np.random.default_rng(12)
    white = rng.normal(0, 1, (320, 320))
    correlated = ndimage.uniform_filter(white, 3)[10:-10, 10:-10]
    correlated *= NOISE / correlated.std()
    ex = _exposure([(150.0, 150.0, 20000.0)])
    ex.image = (ex.image - _exposure().image + correlated).astype(np.float32)
    raw = detect(ex.copy(), SIGMA, _config(thresholdType="pixel_stdev",
                                           doRescaleToSkyNoise=False))
    scaled = detect(ex, SIGMA, _config(thresholdType="pixel_stdev"))
    assert len(raw.positive) > 20
    assert 1.8 < scaled.noise_scale < 3.5
    assert 1 <= len(scaled.positive) <= 3


def test_value_threshold_and_noise_only_image():
    ex = _exposure(seed=5)
    assert len(detect(ex.copy(), SIGMA, _config(thresholdType="value",
                                                 thresholdValue=1e6)).positive) == 0
    # 5σ on pure noise: a Gaussian random field gives few excursions over 90,000 pixels
    assert len(detect(ex, SIGMA, _config()).positive) <= 2


def test_reestimated_background_is_subtracted_and_kept():
    ex = _exposure([(150.0, 150.0, 3000.0)], shape=(512, 512))
    ex.image += 2.0  # a residual sky of 0.2σ per pixel, left after a first subtraction
    result = detect(ex, SIGMA, DetectionConfig(reEstimateBackground=True))
    assert result.background is not None
    assert abs(float(np.median(result.background)) - 2.0) < 0.3
    assert abs(float(np.median(ex.image))) < 0.3
    np.testing.assert_allclose(ex.background, result.background)


def _wing(ex: Exposure, amplitude: float, sigma: float, x: int, y: int) -> None:
    """Add a broad Gaussian (a bright object's wing) of total ``amplitude`` at (x, y)."""
    h, w = ex.shape
    pad = np.pad(amplitude * pixel_gaussian(201, sigma), 300)
    ex.image += pad[300 + 100 - y: 300 + 100 - y + h, 300 + 100 - x: 300 + 100 - x + w].astype(
        np.float32)


@pytest.mark.parametrize("seed", range(4))
def test_temp_local_background_drops_noise_peaks_in_a_wing_and_keeps_a_pair(seed):
    # a bright star on a wide wing 3σ of the smoothed noise high at its centre: without the
    # local background the wing's noise bumps rise above threshold as peaks of its footprint
    ex = _exposure([(150.0, 150.0, 3e5), (50.0, 250.0, 2000.0), (57.5, 250.0, 1500.0)],
                   seed=seed)
    _wing(ex, 3e4, 20.0, 150, 150)
    peaks = {}
    for local in (False, True):
        found = detect(ex.copy(), SIGMA, _config(doTempLocalBackground=local)).positive
        star = next(f for f in found if f.contains(np.array([150]), np.array([150]))[0])
        pair = next(f for f in found if f.contains(np.array([50]), np.array([250]))[0])
        peaks[local] = star.peaks
        # the pair 2 FWHM apart, far from the wing, keeps both its peaks either way
        assert sorted(pair.peaks["x"].tolist()) in ([50, 57], [50, 58])
    # with it, the bumps in the star's own footprint go (LSST updates the peaks of the
    # footprints as found); those that made footprints of their own, joined to the star's
    # by growing, stay, as in LSST: 16-22 peaks become 3-7
    assert len(peaks[False]) >= 15
    assert len(peaks[True]) <= 0.45 * len(peaks[False])
    assert (peaks[True]["x"][0], peaks[True]["y"][0]) == (150, 150)
    assert DetectionConfig().doTempLocalBackground and DetectionConfig().minPeakContrast == 0


def test_update_peaks_keeps_the_brightest_when_none_rise_above_the_local_background():
    labels = np.zeros((20, 20), np.int32)
    labels[5:15, 5:15] = 1
    labels[5:7, 5:7] = 0  # a notch: (6, 6) is in the footprint's box, not in the footprint
    values = np.zeros((20, 20))
    values[8, 8], values[11, 12] = 5.0, 9.0
    py, px = np.array([8, 11]), np.array([8, 12])
    gone = LocalPeaks(values - 100.0, 1.0, 1.0, 1)  # a local background over everything
    assert update_peaks(py, px, labels, values, gone, 1) == (py[1:], px[1:])
    moved = values.copy()
    moved[9, 9] = 20.0  # above the local background the peak at (8, 8) has moved to (9, 9)
    ny, nx = update_peaks(py, px, labels, values, LocalPeaks(moved, 1.0, 1.0, 1), 1)
    assert (ny.tolist(), nx.tolist()) == ([9, 11], [9, 12])
    outside = moved.copy()
    outside[6, 6] = 50.0  # a maximum off the footprint (in its box) is not one of its peaks
    ny, nx = update_peaks(py, px, labels, values, LocalPeaks(outside, 1.0, 1.0, 1), 1)
    assert (ny.tolist(), nx.tolist()) == ([9, 11], [9, 12])
    simple = LocalPeaks(values - 100.0, 1.0, 1.0, 2)  # two peaks are "simple": left alone
    assert update_peaks(py, px, labels, values, simple, 1) == (py, px)


def test_local_background_stays_local_next_to_a_bright_object():
    # a bright blob fills one 32-px cell: Akima's spline moves the background within two
    # cells of it and leaves the rest of the image at the sky's level
    ex = _exposure([(150.0, 150.0, 3e5)], shape=(320, 320))
    _wing(ex, 1e6, 8.0, 150, 150)
    bkg = estimate_background(ex.image, ex.mask, ex.planes,
                              DetectionConfig().tempLocalBackground.model_copy(
                                  update={"binSize": 32}), hold_edges=True)
    yy, xx = np.mgrid[:320, :320]
    far = np.maximum(abs(xx - 150), abs(yy - 150)) > 2 * 32 + 16
    assert bkg[150, 150] > 100
    assert np.abs(bkg[far]).max() < 0.1 * NOISE

