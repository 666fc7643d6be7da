"""Measurement plugins on images with known sources and a known (Gaussian) PSF."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS
from photutils.aperture import CircularAperture, aperture_photometry

from app.engine.config import DetectConfig
from app.engine.exposure import Exposure, PhotoCalib
from app.engine.measure.registry import REGISTRY, Column, Plugin, register
from app.engine.pipeline import run_detect
from app.engine.psf import GaussianPsf, pixel_gaussian

SIGMA = 1.7
SKY_NOISE = 5.0


def _exposure(sources, shape=(400, 400), noise=SKY_NOISE, seed=0) -> Exposure:
    rng = np.random.default_rng(seed)
    image = np.pad(rng.normal(0, noise, shape) if noise else np.zeros(shape), 20)
    for x, y, flux, *shape_args in sources:
        ix, iy = int(round(x)), int(round(y))
        if shape_args:  # an elliptical Gaussian with covariance (xx, yy, xy)
            xx, yy, xy = shape_args
            gy, gx = np.mgrid[-20:21, -20:21].astype(float)
            dx, dy = gx - (x - ix), gy - (y - iy)
            det = xx * yy - xy * xy
            q = (yy * dx * dx - 2 * xy * dx * dy + xx * dy * dy) / det
            stamp = np.exp(-0.5 * q)
            stamp *= flux / stamp.sum()
        else:
            stamp = flux * pixel_gaussian(41, SIGMA, x - ix, y - iy)
        image[iy: iy + 41, ix: ix + 41] += stamp
    image = image[20:-20, 20:-20].astype(np.float32)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [200.0, 200.0]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    variance = np.full(shape, max(noise, 1.0) ** 2, np.float32)
    return Exposure(image, np.zeros(shape, np.int32), variance, wcs=wcs,
                    psf=GaussianPsf(SIGMA, size=41), photo_calib=PhotoCalib.from_magzero(27.0))


def _config(noiseless: bool = False, **measurement) -> DetectConfig:
    cfg = DetectConfig()
    cfg.characterize.doMeasurePsf = False
    cfg.detection.reEstimateBackground = False
    if noiseless:
        cfg.detection.thresholdType = "value"
        cfg.detection.thresholdValue = 1.0
    for key, value in measurement.items():
        setattr(cfg.measurement, key, value)
    cfg.characterize.doApCorr = cfg.measurement.doApCorr
    return cfg


def _row(cat, x, y):
    d = np.hypot(np.asarray(cat["base_SdssCentroid_x"]) - x,
                 np.asarray(cat["base_SdssCentroid_y"]) - y)
    return cat[int(np.argmin(d))]


STARS = [(100.3, 100.7, 20000.0), (300.6, 120.1, 8000.0), (120.9, 290.4, 50000.0),
         (280.2, 300.5, 12000.0)]


@pytest.fixture(scope="module")
def noiseless():
    ex = _exposure(STARS, noise=0.0)
    return ex, run_detect(ex, _config(noiseless=True, doApCorr=False))


def test_centroids_and_psf_fluxes_are_exact_without_noise(noiseless):
    _, result = noiseless
    for x, y, flux in STARS:
        row = _row(result.catalog, x, y)
        assert abs(row["base_SdssCentroid_x"] - x) < 0.01
        assert abs(row["base_SdssCentroid_y"] - y) < 0.01
        assert row["base_PsfFlux_instFlux"] == pytest.approx(flux * pixel_gaussian(41, SIGMA).sum(),
                                                             rel=2e-3)


def test_aperture_fluxes_match_exact_photometry(noiseless):
    ex, result = noiseless
    for x, y, _ in STARS:
        row = _row(result.catalog, x, y)
        pos = (row["base_SdssCentroid_x"], row["base_SdssCentroid_y"])
        for r, name in ((3.0, "3_0"), (4.5, "4_5"), (12.0, "12_0")):
            ref = aperture_photometry(ex.image, CircularAperture(pos, r), method="exact")
            assert row[f"base_CircularApertureFlux_{name}_instFlux"] == pytest.approx(
                float(ref["aperture_sum"][0]), rel=1e-5)
        ref17 = aperture_photometry(ex.image, CircularAperture(pos, 17.0), method="center")
        assert row["base_CircularApertureFlux_17_0_instFlux"] == pytest.approx(
            float(ref17["aperture_sum"][0]), rel=1e-5)


def _reference_overlap(dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Area of each unit pixel (centre offset dx, dy) inside a circle of radius r, from the
    disk's area within a quadrant, A(x, y) = ∫_0^x min(y, √(r² − u²)) du, by inclusion–exclusion
    over the pixel's corners."""
    def quadrant(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        sign = np.sign(x) * np.sign(y)
        x, y = np.minimum(np.abs(x), r), np.minimum(np.abs(y), r)

        def under(t: np.ndarray) -> np.ndarray:  # ∫_0^t √(r² − u²) du
            return 0.5 * (t * np.sqrt(np.maximum(r * r - t * t, 0)) + r * r * np.arcsin(t / r))

        cross = np.sqrt(np.maximum(r * r - y * y, 0))  # where the circle is at height y
        area = np.where(x * x + y * y <= r * r, x * y,
                        cross * y + under(x) - under(np.minimum(cross, x)))
        return sign * area

    x0, x1, y0, y1 = dx - 0.5, dx + 0.5, dy - 0.5, dy + 0.5
    return quadrant(x1, y1) - quadrant(x0, y1) - quadrant(x1, y0) + quadrant(x0, y0)


@pytest.mark.parametrize("r", [0.3, 1.0, 2.5, 7.2, 12.0])
def test_exact_circle_weights_match_the_plain_integral(r):
    """The compiled overlap (photutils' kernel) against the integral written out in numpy,
    at random sub-pixel centres; the weights also sum to the disk's area."""
    from app.engine.measure.cubes import exact_circle_weights

    rng = np.random.default_rng(4)
    size = 2 * int(np.ceil(r)) + 3
    ox, oy = rng.uniform(size / 2 - 1, size / 2, (2, 50))
    weights = exact_circle_weights(ox, oy, size, r)
    grid = np.arange(size, dtype=float)
    reference = _reference_overlap(grid[None, None, :] - ox[:, None, None],
                                   grid[None, :, None] - oy[:, None, None], r)
    np.testing.assert_allclose(weights, reference, rtol=0, atol=1e-9)
    np.testing.assert_allclose(weights.sum(axis=(1, 2)), np.pi * r * r, rtol=1e-10)


def test_adaptive_moments_of_an_elliptical_gaussian():
    xx, yy, xy = 9.0, 4.0, 1.5
    ex = _exposure([(200.2, 200.6, 30000.0, xx, yy, xy)], noise=0.0)
    row = _row(run_detect(ex, _config(noiseless=True, doApCorr=False)).catalog, 200.2, 200.6)
    assert row["base_SdssShape_xx"] == pytest.approx(xx, rel=0.01)
    assert row["base_SdssShape_yy"] == pytest.approx(yy, rel=0.01)
    assert row["base_SdssShape_xy"] == pytest.approx(xy, abs=0.03)
    assert row["base_SdssShape_instFlux"] == pytest.approx(30000.0, rel=0.01)
    assert row["base_GaussianFlux_instFlux"] == pytest.approx(30000.0, rel=0.01)
    assert row["base_ClassificationExtendedness_value"] == 1.0


def test_point_source_is_not_extended_and_calibrated(noiseless):
    ex, result = noiseless
    row = _row(result.catalog, 120.9, 290.4)
    assert row["base_ClassificationExtendedness_value"] == 0.0
    assert row["base_PsfFlux_flux"] == pytest.approx(
        row["base_PsfFlux_instFlux"] * ex.photo_calib.njy_per_count)
    ra, dec = ex.pixel_to_sky(np.array([row["base_SdssCentroid_x"]]),
                              np.array([row["base_SdssCentroid_y"]]))
    assert row["coord_ra"] == pytest.approx(ra[0]) and row["coord_dec"] == pytest.approx(dec[0])


def test_psf_flux_errors_and_noise_replacement():
    """Noise: the error describes the scatter; a neighbour is hidden while a star is measured."""
    pulls = []
    for seed in range(6):
        ex = _exposure(STARS, seed=seed)
        cat = run_detect(ex, _config(doApCorr=False)).catalog
        for x, y, flux in STARS:
            row = _row(cat, x, y)
            true = flux * pixel_gaussian(41, SIGMA).sum()
            pulls.append((row["base_PsfFlux_instFlux"] - true) / row["base_PsfFlux_instFluxErr"])
    assert abs(np.mean(pulls)) < 0.6 and 0.6 < np.std(pulls) < 1.5


def test_pixel_flags_for_saturated_and_edge_sources():
    ex = _exposure([(150.0, 150.0, 40000.0), (4.0, 250.0, 30000.0)])
    sat = ex.planes.bitmask("SAT")
    ex.mask[149:152, 149:152] |= sat
    cat = run_detect(ex, _config(doApCorr=False)).catalog
    row = _row(cat, 150.0, 150.0)
    assert row["base_PixelFlags_flag_saturated"] and row["base_PixelFlags_flag_saturatedCenter"]
    assert not row["base_PixelFlags_flag_edge"]
    edge_row = _row(cat, 4.0, 250.0)
    assert edge_row["base_PixelFlags_flag_edge"]
    assert not edge_row["base_PixelFlags_flag_saturated"]


def test_every_column_has_a_description_and_fluxes_have_units(noiseless):
    _, result = noiseless
    cat = result.catalog
    for name in cat.colnames:
        assert cat[name].description, name
        if name.endswith(("_instFlux", "_instFluxErr")):
            assert str(cat[name].unit) == "ct", name
        if name.endswith(("_flux", "_fluxErr")):
            assert str(cat[name].unit) == "nJy", name
    assert str(cat["coord_ra"].unit) == "deg"
    assert str(cat["base_SdssCentroid_x"].unit) == "pix"


class Exploding(Plugin):
    name = "test_Exploding"
    order = 2.0

    def columns(self, ctx):
        return [Column(f"{self.name}_value", "f8", None, "Never filled.")]

    def measure(self, ctx, out):
        raise RuntimeError("boom")


@pytest.fixture
def exploding_plugin():
    register(Exploding)
    yield Exploding.name
    del REGISTRY[Exploding.name]


def test_a_failing_plugin_sets_its_flag_and_the_catalog_goes_on(exploding_plugin, noiseless):
    ex, _ = noiseless
    cfg = _config(noiseless=True, doApCorr=False)
    cfg.measurement.plugins = cfg.measurement.plugins + [exploding_plugin]
    cat = run_detect(ex, cfg).catalog
    assert cat[f"{exploding_plugin}_flag"].all()
    assert np.isnan(cat[f"{exploding_plugin}_value"]).all()
    assert np.isfinite(cat["base_PsfFlux_instFlux"]).all()


def test_unknown_plugin_is_refused_with_the_known_names(noiseless):
    ex, _ = noiseless
    with pytest.raises(ValueError, match="base_PsfFlux"):
        run_detect(ex, _config(noiseless=True, plugins=["base_NoSuchThing"]))


def test_kernel_moments_follow_an_undersampled_psf():
    """A pixel-integrated Gaussian's kernel moments are its covariance, σ² + 1/12 px², from
    FWHM 0.9 px (where the adaptive iteration collapses onto the central pixel) to 3.8 px,
    rising with σ, ellipticity kept."""
    from app.engine.measure.plugins.shape import kernel_moments

    sigmas = np.array([0.4, 0.55, 0.64, 0.75, 0.9, 1.1, 1.6])
    xx = np.array([kernel_moments(pixel_gaussian(21, s)[None])[0][0] for s in sigmas])
    np.testing.assert_allclose(xx, sigmas**2 + 1 / 12, rtol=0.025)
    assert (np.diff(xx) > 0).all()
    yy_, xx_ = np.mgrid[-10:11, -10:11].astype(float)
    cov = np.array([[0.5, 0.12], [0.12, 0.3]])  # px², continuous; sampled at pixel centres
    inv = np.linalg.inv(cov)
    kernel = np.exp(-0.5 * (inv[0, 0] * xx_**2 + 2 * inv[0, 1] * xx_ * yy_ + inv[1, 1] * yy_**2))
    mxx, myy, mxy = (m[0] for m in kernel_moments(kernel[None]))
    np.testing.assert_allclose([mxx, myy, mxy], [0.5, 0.3, 0.12], rtol=0.03, atol=0.005)
