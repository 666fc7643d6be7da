"""The deblender's rules on small blends with a known Gaussian PSF."""

from __future__ import annotations

import numpy as np

from app.engine.config import DeblendConfig, DetectionConfig
from app.engine.deblend import deblend, make_monotonic, symmetric_template
from app.engine.detection import detect
from app.engine.exposure import Exposure
from app.engine.psf import GaussianPsf, pixel_gaussian

SIGMA = 1.6


def _blend(sources, shape=(200, 200), noise=5.0, seed=0) -> Exposure:
    rng = np.random.default_rng(seed)
    image = np.pad(rng.normal(0, noise, shape), 20)
    for x, y, flux in sources:
        ix, iy = int(round(x)), int(round(y))
        image[iy: iy + 41, ix: ix + 41] += flux * pixel_gaussian(41, SIGMA, x - ix, y - iy)
    return Exposure(image[20:-20, 20:-20], np.zeros(shape, np.int32),
                    np.full(shape, noise**2, np.float32), psf=GaussianPsf(SIGMA, size=31))


def _records(ex: Exposure, config: DeblendConfig | None = None):
    found = detect(ex, SIGMA, DetectionConfig(reEstimateBackground=False))
    return deblend(found.positive, ex, config or DeblendConfig())


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
    total = np.zeros(ex.shape)
    for c in children:
        ys, xs = c.footprint.indices()
        np.add.at(total, (ys, xs), c.footprint.image)
    ys, xs = parent.indices()
    np.testing.assert_allclose(total[ys, xs], parent.image, rtol=1e-5, atol=1e-3)
    # and each child holds its own star's flux
    fluxes = sorted(float(c.footprint.image.sum()) for c in children)
    np.testing.assert_allclose(fluxes, [8000, 20000], rtol=0.05)


def test_parent_too_big_is_kept_but_not_deblended():
    ex = _blend([(80.0, 100.0, 20000.0), (87.5, 100.0, 8000.0)])
    records = _records(ex, DeblendConfig(maxFootprintArea=20))
    assert len(records) == 1
    assert records[0].flags["deblend_parentTooBig"] and records[0].n_child == 0


def test_too_many_peaks_keeps_the_brightest():
    ex = _blend([(60.0, 100.0, 20000.0), (68.0, 100.0, 12000.0), (76.0, 100.0, 9000.0)])
    records = _records(ex, DeblendConfig(maxNumberOfPeaks=2))
    parent = next(r for r in records if r.n_child > 0)
    assert parent.flags["deblend_tooManyPeaks"] and parent.n_child == 2


def test_templates_are_symmetric_monotonic_and_non_negative():
    rng = np.random.default_rng(1)
    image = np.pad(pixel_gaussian(21, 2.5) * 1e4, 5) + rng.normal(0, 3, (31, 31))
    inside = np.ones_like(image, bool)
    t, patched = symmetric_template(image, inside, 15, 15)
    assert not patched and (t >= 0).all()
    np.testing.assert_allclose(t, t[::-1, ::-1])  # symmetric about the peak
    m = make_monotonic(t, 15, 15)
    assert (m <= t).all()
    # along every row from the peak outwards the template never rises
    assert (np.diff(m[15, 15:]) <= 1e-12).all() and (np.diff(m[15, :16][::-1]) <= 1e-12).all()
