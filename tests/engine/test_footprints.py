"""Footprints: spans from labels and back, heavy pixels, masks and segmentation images."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from app.engine.footprints import Footprint, FootprintSet, spans_from_pixels


def _blobs(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    seeds = rng.random((120, 160)) > 0.996
    return ndimage.binary_dilation(seeds, iterations=3)


def test_labels_round_trip_through_spans():
    labels, n = ndimage.label(_blobs(), structure=np.ones((3, 3)))
    fps = FootprintSet.from_labels(labels)
    assert len(fps) == n
    rebuilt = FootprintSet(fps.footprints, fps.shape)  # forget the cached label image
    np.testing.assert_array_equal(rebuilt.to_labels(), labels)
    assert sum(fp.area for fp in fps) == (labels > 0).sum()


def test_from_mask_is_eight_connected():
    mask = np.zeros((5, 5), bool)
    mask[1, 1] = mask[2, 2] = mask[4, 4] = True  # diagonal neighbours join, (4,4) does not
    fps = FootprintSet.from_mask(mask)
    assert sorted(fp.area for fp in fps) == [1, 2]
    np.testing.assert_array_equal(fps.to_mask(), mask)


def test_spans_bbox_and_contains():
    spans = spans_from_pixels(np.array([3, 3, 3, 4, 4, 4]), np.array([5, 6, 8, 2, 3, 4]))
    fp = Footprint(spans=spans)
    assert spans.tolist() == [(3, 5, 6), (3, 8, 8), (4, 2, 4)]
    assert fp.area == 6 and fp.bbox == (2, 3, 8, 4)
    assert fp.contains(np.array([6, 7, 8, 2]), np.array([3, 3, 3, 4])).tolist() == [
        True, False, True, True]


def test_heavy_footprint_carries_pixels_in_span_order():
    image = np.arange(200, dtype=np.float32).reshape(10, 20)
    mask = np.zeros((10, 20), np.int32)
    mask[4, 6] = 32
    variance = image + 0.5
    fp = Footprint(spans=spans_from_pixels(np.array([4, 4, 5]), np.array([5, 6, 6])))
    heavy = fp.make_heavy(image, mask, variance)
    assert heavy.is_heavy and not fp.is_heavy
    np.testing.assert_array_equal(heavy.image, [85, 86, 106])
    np.testing.assert_array_equal(heavy.mask, [0, 32, 0])
    np.testing.assert_array_equal(heavy.unflatten(heavy.image), [[85, 86], [0, 106]])
