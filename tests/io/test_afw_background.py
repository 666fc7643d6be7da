"""afw BackgroundList files (calexpBackground), laid out as afw's BackgroundList.writeFits
writes them, evaluated as BackgroundMI.getImage does."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits
from scipy.interpolate import Akima1DInterpolator, CubicSpline

from app.engine.interpolation import AKIMA, CONSTANT, CUBIC_SPLINE, LINEAR, NATURAL_SPLINE
from app.io.afw_background import (
    REDUCE_INTERP_ORDER,
    THROW_EXCEPTION,
    bin_centres,
    evaluate_background_list,
    is_background_list,
)
from app.io.errors import ExposureReadError

WIDTH, HEIGHT, X0, Y0 = 200, 150, 1000, 3000


def background_list(*backgrounds: dict) -> fits.HDUList:
    """Each background as afw writes it: statistics image, mask, variance, in that order
    (the first image in the primary HDU), every header with the same keys."""
    hdus: list[fits.hdu.base._BaseHDU] = []
    for bg in backgrounds:
        stats = np.asarray(bg["stats"], np.float32)
        md = fits.Header()  # afw writes keys longer than 8 characters as HIERARCH cards
        for key, value in (
            ("INTERPSTYLE", bg.get("interp", AKIMA)),
            ("UNDERSAMPLESTYLE", bg.get("undersample", REDUCE_INTERP_ORDER)),
            ("APPROXSTYLE", bg.get("approx", -1)), ("APPROXORDERX", bg.get("order", 1)),
            ("APPROXORDERY", bg.get("order", 1)),
            ("APPROXWEIGHTING", bg.get("weighting", True)), ("BKGD_X0", X0), ("BKGD_Y0", Y0),
            ("BKGD_WIDTH", WIDTH), ("BKGD_HEIGHT", HEIGHT),
        ):
            md[f"HIERARCH {key}" if len(key) > 8 else key] = value
        variance = np.asarray(bg.get("variance", np.ones_like(stats)), np.float32)
        planes = (stats, np.zeros(stats.shape, np.int32), variance)
        for n, data in enumerate(planes):
            cls = fits.PrimaryHDU if not hdus else fits.ImageHDU
            header = md.copy()
            if n == 1:
                header["MP_BAD"] = 0
            hdus.append(cls(data=data, header=header))
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer)
    buffer.seek(0)
    return fits.open(buffer)


def plane(x, y):
    return 250.0 + 0.03 * x - 0.02 * y


def binned(function, nx: int, ny: int) -> np.ndarray:
    xc, yc = bin_centres(WIDTH, nx), bin_centres(HEIGHT, ny)
    return function(xc[None, :], yc[:, None])


def test_bin_centres_are_afws():
    # 200 px in 6 bins: ends at (i * 200 + 3) // 6 = 33, 67, 100, 133, 167, 200
    np.testing.assert_array_equal(bin_centres(200, 6),
                                  [16.0, 49.5, 83.0, 116.0, 149.5, 183.0])


@pytest.mark.parametrize("style", [LINEAR, NATURAL_SPLINE, CUBIC_SPLINE, AKIMA])
def test_every_style_reproduces_a_plane_to_the_edges(style):
    """Each interpolant is exact on linear data, and afw's quadratic extension beyond the
    outer bin centres keeps it so out to the image's edges."""
    hdul = background_list({"stats": binned(plane, 6, 5), "interp": style})
    assert is_background_list(hdul)
    image = evaluate_background_list(hdul, (X0, Y0), (HEIGHT, WIDTH))
    y, x = np.mgrid[:HEIGHT, :WIDTH]
    assert image.dtype == np.float32 and image.shape == (HEIGHT, WIDTH)
    np.testing.assert_allclose(image, plane(x, y), rtol=2e-7)


def test_akima_and_natural_spline_match_their_definitions_inside_the_bins():
    """Inside the bin centres: columns along y, then rows along x, by the interpolant
    (scipy's Akima matches GSL's away from flat stretches; both splines are natural)."""
    rng = np.random.default_rng(5)
    stats = 300 + rng.normal(0, 5, (5, 7))
    xc, yc = bin_centres(WIDTH, 7), bin_centres(HEIGHT, 5)
    xs, ys = np.arange(int(xc[0]) + 1, int(xc[-1])), np.arange(int(yc[0]) + 1, int(yc[-1]))
    for style, make in ((AKIMA, Akima1DInterpolator),
                        (NATURAL_SPLINE, lambda x, y: CubicSpline(x, y, bc_type="natural"))):
        image = evaluate_background_list(background_list({"stats": stats, "interp": style}))
        columns = np.array([make(yc, stats[:, i])(ys) for i in range(7)])  # (7, rows)
        want = np.array([make(xc, columns[:, r])(xs) for r in range(len(ys))])
        np.testing.assert_allclose(image[np.ix_(ys, xs)], want, rtol=1e-6)


def test_extension_beyond_the_outer_bins_is_the_quadratic_taylor_series():
    stats = np.tile(np.array([10.0, 14.0, 11.0, 17.0, 12.0]), (3, 1))  # varies along x only
    image = evaluate_background_list(background_list({"stats": stats,
                                                      "interp": NATURAL_SPLINE}))
    xc = bin_centres(WIDTH, 5)
    spline = CubicSpline(xc, stats[0], bc_type="natural")
    for x, node in ((0, xc[0]), (WIDTH - 1, xc[-1])):
        s = x - node
        want = spline(node) + s * spline(node, 1) + 0.5 * s * s * spline(node, 2)
        assert image[75, x] == pytest.approx(want, rel=1e-6)


def test_constant_style_is_afws_recentred_step():
    """afw's CONSTANT: the first value up to the middle between the first two centres, the
    mean of each neighbouring pair between middles, the last value after the last middle."""
    stats = np.array([[10.0, 20.0, 50.0]])
    image = evaluate_background_list(background_list({"stats": stats, "interp": CONSTANT}))
    xc = bin_centres(WIDTH, 3)  # 33, 99.5, 166
    row = image[0]
    assert row[0] == row[int((xc[0] + xc[1]) / 2)] == 10.0
    assert row[int((xc[0] + xc[1]) / 2) + 1] == row[int((xc[1] + xc[2]) / 2)] == 15.0
    assert row[int((xc[1] + xc[2]) / 2) + 1] == 35.0 and row[-1] == 35.0


def test_too_few_bins_reduce_the_style_or_refuse():
    stats = binned(lambda x, y: 100 + (x / 50.0) ** 2 + 0 * y, 3, 3)
    reduced = evaluate_background_list(background_list({"stats": stats, "interp": AKIMA}))
    cubic = evaluate_background_list(background_list({"stats": stats, "interp": CUBIC_SPLINE}))
    np.testing.assert_array_equal(reduced, cubic)  # 3 bins: afw's richest is CUBIC_SPLINE
    with pytest.raises(ExposureReadError, match="too few for AKIMA_SPLINE") as info:
        evaluate_background_list(background_list({"stats": stats, "interp": AKIMA,
                                                  "undersample": THROW_EXCEPTION}))
    assert info.value.code == "bad_background"


def test_nan_bins_are_dropped():
    stats = binned(plane, 6, 5)
    stats[2, 3] = np.nan
    image = evaluate_background_list(background_list({"stats": stats, "interp": LINEAR}))
    y, x = np.mgrid[:HEIGHT, :WIDTH]
    np.testing.assert_allclose(image, plane(x, y), rtol=2e-7)


def test_chebyshev_approximation_and_sum_of_backgrounds():
    """APPROXSTYLE 0 fits a Chebyshev series of APPROXORDERX to the bins (weighted by
    1/variance): a plane of order 1 exactly; a list adds its backgrounds."""
    quadratic = binned(lambda x, y: 5.0 + 1e-4 * (x - 90.0) ** 2 + 0 * y, 8, 6)
    hdul = background_list({"stats": binned(plane, 8, 6), "approx": 0, "order": 1,
                            "variance": np.full((6, 8), 4.0)},
                           {"stats": quadratic, "interp": AKIMA})
    total = evaluate_background_list(hdul)
    second = evaluate_background_list(background_list({"stats": quadratic, "interp": AKIMA}))
    y, x = np.mgrid[:HEIGHT, :WIDTH]
    np.testing.assert_allclose(total - second, plane(x, y), rtol=1e-6)


def test_a_cutout_gets_its_part_and_a_wrong_box_is_refused():
    hdul = background_list({"stats": binned(plane, 6, 5) + np.arange(5)[:, None] ** 2})
    full = evaluate_background_list(hdul)
    part = evaluate_background_list(hdul, (X0 + 30, Y0 + 40), (50, 70))
    np.testing.assert_array_equal(part, full[40:90, 30:100])
    with pytest.raises(ExposureReadError, match="calexpBackground of this exposure"):
        evaluate_background_list(hdul, (X0 - 1, Y0), (10, 10))
    with pytest.raises(ExposureReadError, match="BackgroundList keys"):
        evaluate_background_list(fits.HDUList([fits.PrimaryHDU(np.zeros((3, 3)))]))


def test_a_calexp_background_file_is_read_as_its_full_resolution_sky(tmp_path):
    """The tutorial's calexpBackground given beside a calexp (``ReadOptions.background``, the
    CLI's ``--background``): the exposure's background is the list evaluated, so adding it
    back restores the sky."""
    from app.engine.exposure import Exposure
    from app.io.fits_exposure import read_exposure, write_exposure
    from app.io.read_options import PlaneRef, ReadOptions

    hdul = background_list({"stats": binned(plane, 8, 6), "interp": AKIMA})
    list_path = tmp_path / "calexpBackground.fits"
    hdul.writeto(list_path)
    truth = evaluate_background_list(hdul)
    rng = np.random.default_rng(3)
    sky_free = rng.normal(0, 5, (HEIGHT, WIDTH)).astype(np.float32)
    calexp = tmp_path / "calexp.fits"
    write_exposure(Exposure(sky_free, np.zeros(sky_free.shape, np.int32),
                            np.full(sky_free.shape, 25.0, np.float32), xy0=(X0, Y0)), calexp)
    exposure = read_exposure(calexp, ReadOptions(background=PlaneRef(list_path)))
    np.testing.assert_array_equal(exposure.background, truth)
    with_sky = exposure.with_background_added()
    np.testing.assert_allclose(with_sky.image - sky_free, plane(
        np.arange(WIDTH)[None, :], np.arange(HEIGHT)[:, None]), atol=0.05)
