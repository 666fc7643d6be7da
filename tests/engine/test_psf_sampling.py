"""The PSF sampler: the PSF at each position is the model's kernel shifted there.

A varying PixelPsf is built from a mean image and two components with polynomial
amplitudes (as the PSF fit makes it: six terms, three independent images), so the
sampler's factored, pre-shifted basis can be checked against the kernel computed and
shifted position by position.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.measure.context import shift_cube
from app.engine.psf_kolmogorov import KolmogorovPsf
from app.engine.psf_model import PixelPsf
from app.engine.psf_sampling import N_PHASES, PsfSampler, factor_basis

WIDTH, HEIGHT = 2000, 1800
RADIUS = 8.25


@pytest.fixture(scope="module")
def varying_psf() -> PixelPsf:
    """Order-2 model whose size and ellipticity change over the field (rank 3 of 6 terms)."""
    mean = KolmogorovPsf(3.75, kernel_size=41).kernel(0.0, 0.0)
    wide = KolmogorovPsf(4.2, kernel_size=41).kernel(0.0, 0.0) - mean
    stretched = np.roll(mean, 1, axis=1) + np.roll(mean, -1, axis=1) - 2 * mean
    coef_wide = np.array([0.1, 0.3, -0.2, 0.15, 0.05, -0.1])
    coef_stretch = np.array([0.0, -0.1, 0.2, 0.05, -0.08, 0.12])
    basis = (coef_wide[:, None, None] * wide + coef_stretch[:, None, None] * stretched)
    basis[0] += mean
    return PixelPsf(basis, order=2, width=WIDTH, height=HEIGHT)


def _direct(psf: PixelPsf, sampler: PsfSampler, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The kernel at each position, Lanczos-shifted by its sub-pixel offset, at the
    sampler's disk pixels."""
    shifted = shift_cube(psf.kernels(x, y), x - np.round(x), y - np.round(y))
    c = psf.size // 2
    rows, cols = c + sampler.dy, c + sampler.dx
    return shifted[:, rows, cols]


def test_factored_basis_is_the_basis_with_its_rank(varying_psf):
    mix, images = factor_basis(varying_psf.basis)
    assert mix.shape == (6, 3) and images.shape == (3, 41, 41)
    rebuilt = np.einsum("tr,rij->tij", mix, images)
    assert np.abs(rebuilt - varying_psf.basis).max() < 1e-13 * np.abs(varying_psf.basis).max()


@pytest.mark.parametrize("n", [5, 500])  # dense gather and sparse product
def test_at_the_phase_nodes_the_sampler_is_the_shifted_kernel(varying_psf, n):
    rng = np.random.default_rng(n)
    sampler = PsfSampler(varying_psf, RADIUS)
    cx, cy = rng.integers(0, WIDTH, n), rng.integers(0, HEIGHT, n)
    x = cx + rng.integers(0, N_PHASES + 1, n) / N_PHASES - 0.5
    y = cy + rng.integers(0, N_PHASES + 1, n) / N_PHASES - 0.5
    got = sampler.images(x, y)
    want = _direct(varying_psf, sampler, x, y)
    assert np.abs(got - want).max() < 1e-12 * want.max()


def test_between_the_nodes_the_sampler_interpolates_closely(varying_psf):
    rng = np.random.default_rng(4)
    sampler = PsfSampler(varying_psf, RADIUS)
    x, y = rng.uniform(0, WIDTH - 1, 2000), rng.uniform(0, HEIGHT - 1, 2000)
    got = sampler.images(x, y)
    want = _direct(varying_psf, sampler, x, y)
    assert np.abs(got - want).max() < 1e-3 * want.max()
    # what the PSF fit sees: ΣP² agrees far better than the noise of any flux
    assert np.abs((got**2).sum(1) / (want**2).sum(1) - 1).max() < 1e-3


def test_the_disk_holds_every_pixel_the_fit_can_use_and_its_ring_the_ones_it_may_not(
        varying_psf):
    sampler = PsfSampler(varying_psf, RADIUS)
    rng = np.random.default_rng(5)
    fx, fy = rng.uniform(-0.5, 0.5, 20000), rng.uniform(-0.5, 0.5, 20000)
    off = np.arange(-sampler.half - 2, sampler.half + 3)
    gx, gy = (g.ravel() for g in np.meshgrid(off, off))
    inside = (gx[None] - fx[:, None]) ** 2 + (gy[None] - fy[:, None]) ** 2 <= RADIUS**2
    used = {(int(a), int(b)) for a, b in zip(gx[inside.any(0)], gy[inside.any(0)], strict=True)}
    always = {(int(a), int(b)) for a, b in zip(gx[inside.all(0)], gy[inside.all(0)], strict=True)}
    disk = {(int(a), int(b)) for a, b in zip(sampler.dx, sampler.dy, strict=True)}
    not_ring = {(int(a), int(b)) for a, b in
                zip(np.delete(sampler.dx, np.arange(len(sampler.dx))[sampler.ring]),
                    np.delete(sampler.dy, np.arange(len(sampler.dy))[sampler.ring]),
                    strict=True)}
    assert used <= disk
    assert not_ring <= always
    assert len(disk) < 1.15 * np.pi * (RADIUS + np.sqrt(0.5)) ** 2
