"""Chebyshev fields: afw's conventions, checked against numpy's own Chebyshev series."""

from __future__ import annotations

import numpy as np
from numpy.polynomial import chebyshev

from app.engine.fields import ChebyshevBoundedField

BOX = (10, 20, 209, 119)  # 200 × 100 pixels, not at the origin


def test_evaluation_matches_numpy_over_the_half_pixel_grown_box():
    rng = np.random.default_rng(1)
    coefficients = rng.normal(size=(3, 4))
    field = ChebyshevBoundedField(BOX, coefficients)
    x, y = rng.uniform(9.5, 209.5, 50), rng.uniform(19.5, 119.5, 50)
    sx = (x - 9.5) / 200 * 2 - 1
    sy = (y - 19.5) / 100 * 2 - 1
    expected = chebyshev.chebval2d(sx, sy, coefficients.T)
    np.testing.assert_allclose(field(x, y), expected, rtol=1e-12, atol=1e-12)
    # the box's outer pixel edges are ±1
    corner = ChebyshevBoundedField(BOX, np.array([[0.0, 1.0], [0.0, 0.0]]))
    np.testing.assert_allclose(corner([9.5, 209.5], [50, 50]), [-1.0, 1.0])


def test_a_triangular_fit_recovers_a_field_of_its_order():
    rng = np.random.default_rng(2)
    truth = np.array([[1.02, 0.01, -0.003], [0.02, 0.004, 0.0], [-0.01, 0.0, 0.0]])
    field = ChebyshevBoundedField(BOX, truth)
    x, y = rng.uniform(10, 209, 300), rng.uniform(20, 119, 300)
    fit = ChebyshevBoundedField.fit(BOX, x, y, field(x, y), order_x=2)
    np.testing.assert_allclose(fit.coefficients, truth, atol=1e-12)


def test_weights_multiply_rows_as_afw_does():
    x = np.array([20.0, 100.0, 180.0, 60.0])
    y = np.array([30.0, 60.0, 100.0, 90.0])
    z = np.array([1.0, 1.0, 1.0, 2.0])
    w = np.array([1.0, 1.0, 1.0, 1e-9])  # the outlier weighs nothing
    fit = ChebyshevBoundedField.fit(BOX, x, y, z, w, order_x=0)
    assert abs(fit.coefficients[0, 0] - 1.0) < 1e-6


def test_relocated_field_is_the_same_function_in_the_other_frame():
    field = ChebyshevBoundedField(BOX, np.array([[1.0, 0.3], [0.2, 0.0]]))
    moved = field.relocated(-10, -20)
    np.testing.assert_allclose(moved([0.0, 50.0], [0.0, 70.0]), field([10.0, 60.0], [20.0, 90.0]))
