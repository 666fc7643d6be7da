"""Archived PSFs in the layouts afw, meas_algorithms and meas_extensions_psfex write, decoded
to kernels computed here independently from their definitions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

from app.engine.psf_model import PixelPsf
from app.engine.psf_resample import resample_images
from app.io.afw_archive import ArchiveReader, ArchiveWriter, Field
from app.io.afw_psf import (
    PSFEX_SIZES_SCHEMA,
    _psfex_data_schema,
    decode_psf,
    psfex_exponents,
)


def archive_of(name: str, module: str, catalogs: list[tuple[tuple[Field, ...], dict]]
               ) -> tuple[ArchiveReader, int]:
    """A file holding one archived object (one row per catalog), read back."""
    writer = ArchiveWriter()
    archive_id = writer.new_id()
    for n, (schema, row) in enumerate(catalogs):
        writer.save(archive_id, name, module, schema, [row], persistable_catalog=n)
    primary = fits.PrimaryHDU()
    primary.header["AR_HDU"] = 2
    primary.header["HIERARCH ARCHIVE_ID_PSF"] = archive_id
    buffer = io.BytesIO()
    fits.HDUList([primary, *writer.hdus()]).writeto(buffer)
    buffer.seek(0)
    hdul = fits.open(buffer)
    return ArchiveReader(hdul, hdul[0].header), archive_id


def psfex_archive(comp: np.ndarray, pixstep: float, degree: int, offsets, scales):
    n, h, w = comp.shape
    return archive_of("PsfexPsf", "lsst.meas.extensions.psfex", [
        (PSFEX_SIZES_SCHEMA, {"ndim": 2, "ngroup": 1, "ncoeff": n, "_size_size": 3,
                              "_comp_size": comp.size, "_context_size": 2,
                              "averagePosition_x": offsets[0], "averagePosition_y": offsets[1],
                              "_pixstep": pixstep}),
        (_psfex_data_schema(n, comp.size), {
            "group": [0, 0], "degree": [degree], "basis": np.zeros(n), "coeff": np.zeros(n),
            "_size": [w, h, n], "_comp": comp.astype(np.float32).ravel(),
            "_context_first": offsets, "_context_second": scales}),
    ])


def gaussian(n: int, sigma_x: float, sigma_y: float | None = None) -> np.ndarray:
    x = np.arange(n) - n // 2
    sy = sigma_x if sigma_y is None else sigma_y
    return np.exp(-0.5 * ((x[None, :] / sigma_x) ** 2 + (x[:, None] / sy) ** 2))


def test_psfex_polynomial_order_is_psfexs():
    """PSFEx documents its terms as 1, x, x², y, xy, y² (POLY_DEGREE 2, one group)."""
    assert psfex_exponents([0, 0], [2]) == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (0, 2)]
    assert len(psfex_exponents([0, 0], [3])) == 10
    assert psfex_exponents([0, 1], [1, 1]) == [(0, 0), (1, 0), (0, 1), (1, 1)]


def test_resampling_at_pixstep_one_is_the_identity():
    image = np.random.default_rng(1).normal(size=(1, 11, 11))
    np.testing.assert_allclose(resample_images(image, 1.0, 11, 11), image, atol=1e-14)


def test_resampling_an_oversampled_gaussian_gives_it_at_image_pixels():
    """A Gaussian of sigma 3.2 PSF samples at pixstep 0.5 is one of sigma 1.6 pixels."""
    model = gaussian(41, 3.2)[None]
    out = resample_images(model, 0.5, 21, 21)[0]  # PsfexPsf: int(41 * 0.5) = 20, made odd
    want = gaussian(21, 1.6)
    np.testing.assert_allclose(out / out.sum(), want / want.sum(), atol=2e-5)


def test_psfex_psf_varies_as_its_polynomial_in_the_parent_frame():
    """A degree-2 PsfexPsf at pixstep 0.8: the decoded kernel at an array position is PSFEx's
    components weighted by 1, X, X², Y, XY, Y² of X = (x + x0 - offset) / scale, resampled
    and normalized, exactly."""
    rng = np.random.default_rng(7)
    base = gaussian(31, 2.5)
    comp = np.stack([base] + [0.05 * rng.normal(size=(31, 31)) * base for _ in range(5)])
    offsets, scales = (1200.0, 2100.0), (350.0, 260.0)
    archive, psf_id = psfex_archive(comp, 0.8, 2, offsets, scales)
    shape, xy0 = (500, 700), (900, 1800)
    psf = decode_psf(archive, psf_id, shape, xy0)
    assert isinstance(psf, PixelPsf) and psf.order == 2 and psf.size == 25  # int(31·0.8)|1
    comp32 = comp.astype(np.float32).astype(float)
    for x, y in [(0.0, 0.0), (699.0, 499.0), (250.0, 400.0)]:
        X = (x + xy0[0] - offsets[0]) / scales[0]
        Y = (y + xy0[1] - offsets[1]) / scales[1]
        weights = np.array([1, X, X * X, Y, X * Y, Y * Y])
        image = np.einsum("c,cij->ij", weights, comp32)[None]
        want = resample_images(image, 0.8, 25, 25)[0]
        np.testing.assert_allclose(psf.kernel(x, y), want / want.sum(), atol=1e-13)


def test_double_gaussian_psf_is_its_sampled_kernel():
    schema = (Field("dimensions_x", "J", "width/height of kernel", "pixel"),
              Field("dimensions_y", "J", "width/height of kernel", "pixel"),
              Field("sigma1", "D", "radius of inner Gaussian", "pixel"),
              Field("sigma2", "D", "radius of outer Gaussian", "pixel"),
              Field("b", "D", "central amplitude of outer Gaussian (inner amplitude == 1)"))
    archive, psf_id = archive_of("DoubleGaussianPsf", "lsst.meas.algorithms", [
        (schema, {"dimensions_x": 21, "dimensions_y": 21, "sigma1": 1.5, "sigma2": 4.0,
                  "b": 0.1})])
    psf = decode_psf(archive, psf_id, (100, 100), (0, 0))
    r2 = (np.arange(21) - 10)[:, None] ** 2 + (np.arange(21) - 10)[None, :] ** 2
    want = np.exp(-r2 / (2 * 1.5**2)) + 0.1 * np.exp(-r2 / (2 * 4.0**2))
    np.testing.assert_allclose(psf.kernel(50.0, 50.0), want / want.sum(), rtol=1e-13)
    # the determinant radius of the mixture's adaptive moments lies between the two sigmas
    assert 1.5 < psf.sigma(50.0, 50.0) < 2.5


def test_gaussian_psf_of_a_non_square_stamp_keeps_afws_image():
    schema = (Field("dimensions_x", "J", "width/height of realization of Psf", "pixel"),
              Field("dimensions_y", "J", "width/height of realization of Psf", "pixel"),
              Field("sigma", "D", "radius of Gaussian", "pixel"))
    archive, psf_id = archive_of("GaussianPsf", "lsst.afw.detection", [
        (schema, {"dimensions_x": 7, "dimensions_y": 3, "sigma": 1.2})])
    kernel = decode_psf(archive, psf_id, (50, 50), (0, 0)).kernel(0.0, 0.0)
    assert kernel.shape == (7, 7)
    want = gaussian(7, 1.2)[2:5]  # afw's 7×3 stamp, normalized over itself
    np.testing.assert_allclose(kernel[2:5], want / want.sum(), rtol=1e-13)
    assert not kernel[:2].any() and not kernel[5:].any()


def test_unknown_psf_kind_is_named():
    archive, psf_id = archive_of("CoaddPsf", "lsst.meas.algorithms", [
        ((Field("x", "D", "a value"),), {"x": 1.0})])
    with pytest.raises(ValueError, match="archived CoaddPsf not decoded"):
        decode_psf(archive, psf_id, (10, 10), (0, 0))
