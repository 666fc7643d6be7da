"""APCORR tables of files written before the afw archive: both earlier forms read exactly."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from app.engine.apcorr import ApCorr
from app.engine.fields import ChebyshevBoundedField
from app.io.psf_fits import apcorr_from_hdu


def test_a_chebyshev_table_of_the_earlier_form_reads_its_fields():
    """The APCORR table skyphot wrote before the afw archive: one row per flux, coefficients
    padded to a common (ny, nx) and flattened y then x."""
    coefficients = np.array([[1.01, 0.002, -0.001], [0.003, 0.0004, 0.0], [0.0005, 0.0, 0.0]])
    padded = np.zeros((2, 9))
    padded[0] = coefficients.ravel()
    padded[1, 0] = 1.05
    hdu = fits.BinTableHDU.from_columns([
        fits.Column("name", "32A", array=np.array(["base_PsfFlux", "base_GaussianFlux"])),
        fits.Column("order_x", "J", array=[2, 2]),
        fits.Column("coefficients", "9D", array=padded),
        fits.Column("bbox", "4J", array=np.array([[0, 0, 99, 49], [0, 0, 99, 49]])),
        fits.Column("err", "D", array=[1e-3, 2e-3]),
        fits.Column("nstars", "J", array=[40, 41]),
    ], name="APCORR")
    hdu.header["APCFORM"] = "CHEBYSHEV"
    back = apcorr_from_hdu(hdu)
    want = {"base_PsfFlux": ApCorr(ChebyshevBoundedField((0, 0, 99, 49), coefficients), 1e-3, 40),
            "base_GaussianFlux": ApCorr(ChebyshevBoundedField.constant((0, 0, 99, 49), 1.05),
                                        2e-3, 41)}
    x, y = np.array([0.0, 40.0, 99.0]), np.array([0.0, 20.0, 49.0])
    for name, ap in want.items():
        np.testing.assert_allclose(back[name](x, y), ap(x, y), rtol=1e-14)
        assert (back[name].err, back[name].n_stars) == (ap.err, ap.n_stars)
    assert back["base_GaussianFlux"](x, y) == pytest.approx([1.05] * 3, rel=1e-15)


def test_a_linear_table_of_the_earlier_form_reads_as_the_same_field():
    w, h = 300, 200
    a = np.array([1.02, 0.01, -0.02])  # a0 + a1 u + a2 v, u = 2x/(w-1) - 1
    hdu = fits.BinTableHDU.from_columns([
        fits.Column("name", "32A", array=np.array(["base_PsfFlux"])),
        fits.Column("ncoef", "J", array=[3]),
        fits.Column("coef", "3D", array=a[None, :]),
        fits.Column("err", "D", array=[1e-3]),
        fits.Column("nstars", "J", array=[30]),
        fits.Column("width", "J", array=[w]),
        fits.Column("height", "J", array=[h]),
    ], name="APCORR")
    field = apcorr_from_hdu(hdu)["base_PsfFlux"]
    x, y = np.array([0.0, 123.0, 299.0]), np.array([0.0, 77.0, 199.0])
    expected = a[0] + a[1] * (2 * x / (w - 1) - 1) + a[2] * (2 * y / (h - 1) - 1)
    np.testing.assert_allclose(field(x, y), expected, rtol=1e-13)
