"""The deblender's rules (meas_deblender's baseline) on small blends with a known PSF."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from app.engine.config import DeblendConfig, DetectionConfig
from app.engine.deblend import deblend
from app.engine.deblend_templates import (
    Template,
    make_monotonic,
    median_smooth,
    symmetric_template,
)
from app.engine.detection import detect
from app.engine.exposure import Exposure
from app.engine.footprints import PEAK_DTYPE, FootprintSet
from app.engine.psf import GaussianPsf, pixel_gaussian

SIGMA = 1.6


def _image(stars=(), blobs=(), shape=(200, 200), noise=5.0, seed=0) -> np.ndarray:
    """Noise of stdev ``noise`` plus PSF stars (x, y, flux) and Gaussian blobs
    (x, y, flux, sigma), each blob's light summing to its flux."""
    rng = np.random.default_rng(seed)
    pad = 40
    image = np.pad(rng.normal(0, noise, shape) if noise else np.zeros(shape), pad)
    for x, y, flux, *sig in [*stars, *blobs]:
        s = sig[0] if sig else SIGMA
        ix, iy = int(round(x)), int(round(y))
        image[iy + pad - 40: iy + pad + 41, ix + pad - 40: ix + pad + 41] += (
            flux * pixel_gaussian(81, s, x - ix, y - iy))
    return image[pad:-pad, pad:-pad]


def _exposure(image: np.ndarray, variance: float) -> Exposure:
    shape = image.shape
    return Exposure(image.astype(np.float32), np.zeros(shape, np.int32),
                    np.full(shape, variance, np.float32), psf=GaussianPsf(SIGMA, size=31))


def _blend(stars, shape=(200, 200), noise=5.0, seed=0) -> Exposure:
    return _exposure(_image(stars, (), shape, noise, seed), noise**2)


def _records(ex: Exposure, config: DeblendConfig | None = None):
    found = detect(ex, SIGMA, DetectionConfig(reEstimateBackground=False))
    return deblend(found.positive, ex, config or DeblendConfig())


def _children_sum(records, parent) -> np.ndarray:
    total = np.zeros(parent.footprint.unflatten(parent.footprint.image).shape)
    x0, y0, _, _ = parent.footprint.bbox
    for c in records:
        if c.parent == parent.id:
            ys, xs = c.footprint.indices()
            np.add.at(total, (ys - y0, xs - x0), c.footprint.image)
    return total


def test_blend_becomes_parent_and_children_isolated_source_stays_alone():
    ex = _blend([(80.0, 100.0, 20000.0), (87.5, 100.0, 8000.0), (160.0, 40.0, 9000.0)])
    records = _records(ex)
    parents = [r for r in records if r.n_child > 0]
    children = [r for r in records if r.parent != 0]
    alone = [r for r in records if r.parent == 0 and r.n_child == 0]
    assert len(parents) == 1 and parents[0].n_child == 2 and len(children) == 2
    assert {c.parent for c in children} == {parents[0].id}
    assert len(alone) == 1 and len(alone[0].footprint.peaks) == 1
    assert all(c.flags["deblend_deblendedAsPsf"] for c in children)
    # the children's pixels add up to the parent's, pixel by pixel
    parent = parents[0].footprint
    total = _children_sum(records, parents[0])
    np.testing.assert_allclose(total[parent.unflatten(np.ones(parent.area, bool), False)],
                               parent.image, rtol=1e-5, atol=1e-3)
    # each child holds its own star's flux, and the PSF fit found its flux and centre (the
    # second star is half a pixel off its peak pixel: the fit's shift has the right sign)
    fluxes = sorted(float(c.footprint.image.sum()) for c in children)
    np.testing.assert_allclose(fluxes, [8000, 20000], rtol=0.05)
    by_x = sorted(children, key=lambda c: c.values["deblend_psfCenter_x"])
    np.testing.assert_allclose([c.values["deblend_psfCenter_x"] for c in by_x], [80.0, 87.5],
                               atol=0.06)
    np.testing.assert_allclose([c.values["deblend_psfCenter_y"] for c in by_x], [100, 100],
                               atol=0.06)
    np.testing.assert_allclose([c.values["deblend_psf_instFlux"] for c in by_x],
                               [20000, 8000], rtol=0.03)
    assert all(c.values["deblend_parentNPeaks"] == 2 for c in children)


def test_parent_too_big_is_kept_flagged_and_masked_but_not_deblended():
    assert DeblendConfig().maxFootprintArea == 1_000_000  # LSST's default before 2023
    ex = _blend([(80.0, 100.0, 20000.0), (87.5, 100.0, 8000.0)])
    records = _records(ex, DeblendConfig(maxFootprintArea=20))
    assert len(records) == 1
    rec = records[0]
    assert rec.flags["deblend_parentTooBig"] and rec.flags["deblend_skipped"]
    assert rec.n_child == 0 and not rec.flags["deblend_masked"]
    ys, xs = rec.footprint.indices()
    bit = ex.planes.bitmask("NOT_DEBLENDED")
    assert ((ex.mask[ys, xs] & bit) != 0).all() and ((ex.mask & bit) != 0).sum() == len(ys)


def test_too_wide_or_too_flat_parents_are_too_big():
    ex = _blend([(60.0, 100.0, 20000.0), (68.0, 100.0, 12000.0), (76.0, 100.0, 9000.0)])
    assert _records(ex.copy(), DeblendConfig(maxFootprintSize=20))[0].flags[
        "deblend_parentTooBig"]
    assert _records(ex.copy(), DeblendConfig(minFootprintAxisRatio=0.8))[0].flags[
        "deblend_parentTooBig"]
    assert not _records(ex.copy(), DeblendConfig(minFootprintAxisRatio=0.2))[0].flags[
        "deblend_parentTooBig"]


def test_masked_parent_is_not_deblended():
    ex = _blend([(80.0, 100.0, 20000.0), (87.5, 100.0, 8000.0)])
    ex.mask[:, 86:] |= np.int32(ex.planes.bitmask("NO_DATA"))  # ~ 40 % of the parent
    records = _records(ex)
    assert len(records) == 1
    assert records[0].flags["deblend_masked"] and records[0].flags["deblend_skipped"]
    assert not records[0].flags["deblend_parentTooBig"]
    more = _records(_blend([(80.0, 100.0, 20000.0), (87.5, 100.0, 8000.0)]),
                    DeblendConfig(maskLimits={"NO_DATA": 0.5}))
    assert len(more) == 3  # within the limit: deblended


def test_too_many_peaks_keeps_the_brightest():
    ex = _blend([(60.0, 100.0, 20000.0), (68.0, 100.0, 12000.0), (76.0, 100.0, 9000.0)])
    records = _records(ex, DeblendConfig(maxNumberOfPeaks=2))
    parent = next(r for r in records if r.n_child > 0)
    assert parent.flags["deblend_tooManyPeaks"] and parent.n_child == 2
    kids = [r for r in records if r.parent == parent.id]
    assert sorted(k.peak_x for k in kids) == [60, 68]
    assert not any(r.flags["deblend_tooManyPeaks"] for r in _records(ex.copy()))


def test_symmetric_template_is_symmetric_non_negative_and_patched_at_edge():
    rng = np.random.default_rng(1)
    image = np.pad(pixel_gaussian(21, 2.5) * 1e4, 5) + rng.normal(0, 3, (31, 31))
    inside = np.ones_like(image, bool)
    inside[:, 26:] = False  # the footprint ends 11 px right of the peak
    t, patched = symmetric_template(image, inside, (100, 200), (115, 215))
    assert not patched and (t.image >= 0).all()
    assert t.box == (105, 200, 125, 230)  # mirror of the footprint's right edge: 115 − 10
    np.testing.assert_allclose(t.image, t.image[::-1, ::-1])  # symmetric about the peak
    # where both a pixel and its mirror are in the footprint: min of the two, clipped at 0
    sub = image[:, 5:26]
    np.testing.assert_allclose(t.image, np.maximum(np.minimum(sub, sub[::-1, ::-1]), 0))
    # patchEdges: next to an EDGE pixel the pixels whose mirror is off the box join as they are
    edge = np.zeros_like(inside)
    edge[15, 20] = True
    p, patched = symmetric_template(image, inside, (100, 200), (115, 215), edge)
    assert patched and p.box == (100, 200, 125, 230)
    np.testing.assert_allclose(p.image[:, :5], image[:, :5])
    assert symmetric_template(image, inside, (100, 200), (128, 215))[0] is None  # peak outside


def _monotonic_reference(img: np.ndarray, cx: int, cy: int) -> np.ndarray:
    """meas_deblender's makeMonotonic, walked pixel by pixel as BaselineUtils.cc does."""
    img = img.copy()
    h, w = img.shape
    shadowing = img.copy()
    dw, dh = max(cx, w - cx), max(cy, h - cy)
    s = 0
    while s < max(dw, dh):
        for p in range(5):
            ring = s + p
            x, y, dx, dy = ring, -ring, 0, 0
            for i in range(8 * ring):
                if i % (2 * ring) == 0:
                    leg = i // (2 * ring)
                    dx = (leg % 2) * (-1 + 2 * (leg // 2))
                    dy = ((leg + 1) % 2) * (1 - 2 * (leg // 2))
                px, py = cx + x, cy + y
                if 0 <= px < w and 0 <= py < h:
                    pix = shadowing[py, px]
                    for sh in range(1, 6):
                        if dx == 0:
                            sign, ds0 = (1 if x > 0 else -1), y / x - 0.3
                        else:
                            sign, ds0 = (1 if y > 0 else -1), x / y - 0.3
                        lo = int(np.sign(sh * ds0) * np.floor(abs(sh * ds0) + 0.5))
                        v = sh * (ds0 + 0.6)
                        hi = int(np.sign(v) * np.floor(abs(v) + 0.5))
                        for o in range(lo, hi + 1):
                            if dx == 0:
                                tx, ty = cx + x + sign * sh, cy + y + sign * o
                            else:
                                tx, ty = cx + x + sign * o, cy + y + sign * sh
                            if 0 <= tx < w and 0 <= ty < h:
                                img[ty, tx] = min(img[ty, tx], pix)
                x, y = x + dx, y + dy
        shadowing = img.copy()
        s += 5
    return img


@pytest.mark.parametrize("shape, peak", [((23, 23), (11, 11)), ((17, 26), (6, 9)),
                                         ((31, 12), (10, 25))])
def test_make_monotonic_is_meas_deblenders(shape, peak):
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = 100 * np.exp(-((xx - peak[0]) ** 2 + (yy - peak[1]) ** 2) / 30.0)
    img += rng.uniform(0, 20, shape)
    t = Template(img, np.ones(shape, bool), 40, 70)
    out = make_monotonic(t, (peak[0] + 40, peak[1] + 70))
    np.testing.assert_array_equal(out.image, _monotonic_reference(img, *peak))
    assert (out.image <= img).all() and (out.image < img).any()


def test_make_monotonic_removes_a_bump_beyond_the_peak():
    img = np.pad(pixel_gaussian(21, 2.5) * 1e4, 10)
    img[20, 33] += 200.0  # a bump 13 px right of the peak at (20, 20)
    out = make_monotonic(Template(img, np.ones(img.shape, bool), 0, 0), (20, 20)).image
    assert out[20, 33] <= out[20, 32] + 1e-9 and out[20, 33] < 0.01 * img[20, 33]
    np.testing.assert_array_equal(out[15:26, 15:26], img[15:26, 15:26])  # the core untouched


def test_median_smooth_filters_the_inside_and_keeps_the_margins():
    rng = np.random.default_rng(4)
    img = rng.uniform(0, 10, (15, 19))
    t = median_smooth(Template(img, np.ones(img.shape, bool), 0, 0), 2)
    np.testing.assert_array_equal(t.image[2:-2, 2:-2],
                                  ndimage.median_filter(img, size=5)[2:-2, 2:-2])
    border = np.ones(img.shape, bool)
    border[2:-2, 2:-2] = False
    np.testing.assert_array_equal(t.image[border], img[border])
    small = Template(img[:4, :4], np.ones((4, 4), bool), 0, 0)
    assert median_smooth(small, 2) is small  # smaller than the box: left alone


# stray flux: a noiseless row of sources in one rectangular footprint; the peak of the blob
# at x = 145 is left out, so its light lies outside every template: stray
VAR = 1.0  # noiseless: the stars fit their PSF exactly, the blobs nowhere near


def _stray_blend(first_is_star: bool, config: DeblendConfig):
    first = [(50.0, 100.0, 20000.0)] if first_is_star else []
    blobs = [] if first_is_star else [(50.0, 100.0, 1e5, 4.0)]
    image = _image([*first, (100.0, 100.0, 20000.0)], [*blobs, (145.0, 100.0, 1e5, 4.0)],
                   noise=0.0)
    ex = _exposure(image, VAR)
    rect = np.zeros(image.shape, bool)
    rect[70:131, 20:181] = True
    fps = FootprintSet.from_mask(rect)
    peaks = np.zeros(2, PEAK_DTYPE)
    peaks["x"], peaks["y"] = [50, 100], [100, 100]
    fps.footprints[0].peaks = peaks
    records = deblend(fps, ex, config)
    parent, kids = records[0], sorted(records[1:], key=lambda r: r.peak_x)
    return ex, image, rect, parent, kids


@pytest.mark.parametrize("rule", ["r-to-peak", "r-to-footprint", "nearest-footprint"])
def test_stray_flux_goes_to_extended_children_unless_always(rule):
    for to_psf in ("necessary", "never", "always"):
        config = DeblendConfig(strayFluxRule=rule, strayFluxToPointSources=to_psf)
        _, image, rect, parent, (blob, star) = _stray_blend(False, config)
        assert star.flags["deblend_deblendedAsPsf"] and not blob.flags["deblend_deblendedAsPsf"]
        assert blob.flags["deblend_hasStrayFlux"]
        # a point source gets stray flux only under 'always' (LSST's rule; it ran backwards)
        assert star.flags["deblend_hasStrayFlux"] == (to_psf == "always")
        # every pixel's flux went to a child
        total = blob.footprint.image.sum() + star.footprint.image.sum()
        np.testing.assert_allclose(total, image[rect].sum(), rtol=1e-5)
        np.testing.assert_allclose(parent.footprint.image.sum(), image[rect].sum(), rtol=1e-5)
        if to_psf != "always":  # the blob took the other blob's light
            np.testing.assert_allclose(blob.footprint.image.sum(), 2e5, rtol=0.01)
            np.testing.assert_allclose(star.footprint.image.sum(), 2e4, rtol=0.01)


def test_stray_flux_to_point_sources_only_when_necessary_or_always():
    for to_psf, given in (("never", False), ("necessary", True), ("always", True)):
        config = DeblendConfig(strayFluxRule="r-to-peak", strayFluxToPointSources=to_psf)
        _, image, rect, parent, kids = _stray_blend(True, config)
        assert all(k.flags["deblend_deblendedAsPsf"] for k in kids)
        assert all(k.flags["deblend_hasStrayFlux"] == given for k in kids)
        total = sum(k.footprint.image.sum() for k in kids)
        np.testing.assert_allclose(total, image[rect].sum() - (0 if given else 1e5), rtol=1e-3)


def test_trim_drops_stray_flux_and_shrinks_the_parent_to_its_children():
    assert DeblendConfig().strayFluxRule == "trim"
    ex, image, rect, parent, kids = _stray_blend(False, DeblendConfig())
    assert not any(k.flags["deblend_hasStrayFlux"] for k in kids)
    assert parent.footprint.area < rect.sum()
    total = _children_sum([parent, *kids], parent)
    inside = parent.footprint.unflatten(np.ones(parent.footprint.area, bool), False)
    np.testing.assert_allclose(total[inside], parent.footprint.image, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(parent.footprint.image.sum(), 1.2e5, rtol=0.01)  # blob 2 gone
    ys, xs = parent.footprint.indices()
    np.testing.assert_array_equal(parent.footprint.image, ex.image[ys, xs])


def test_template_cut_by_the_image_edge_is_ramped():
    # a blob 6 px from the image's left edge blended with one 24 px in: the first's template
    # stops at its mirror of the edge (x = 12) with flux there, so it is ramped by the PSF
    image = _image([], [(6.0, 100.0, 3e5, 4.0), (30.0, 100.0, 3e5, 4.0)], noise=10.0)
    fluxes = {}
    for handling in ("ramp", "clip"):
        ex = _exposure(image, 100.0)
        found = detect(ex, SIGMA, DetectionConfig(reEstimateBackground=False))
        records = deblend(found.positive, ex, DeblendConfig(edgeHandling=handling))
        edge_kid = min((r for r in records if r.parent), key=lambda r: r.peak_x)
        assert edge_kid.flags["deblend_rampedTemplate"] == (handling == "ramp")
        assert not edge_kid.flags["deblend_patchedTemplate"]
        fluxes[handling] = edge_kid.footprint.image.sum()
    truth = 3e5 * pixel_gaussian(81, 4.0, 0.0, 0.0)[:, 34:].sum()  # its light on the image
    assert abs(fluxes["ramp"] / truth - 1) < 0.05
    assert abs(fluxes["ramp"] - truth) < abs(fluxes["clip"] - truth)
