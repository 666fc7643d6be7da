"""PSFEx's resampling of a PSF model between its own grid and image pixels (``vignet_resample``).

An oversampled PSF model (PSFEx's ``pixstep`` < 1, skyphot's ``PixelPsf.step``) is the
pixel-convolved PSF ("effective PSF") sampled every ``step`` image pixels. Its image at
pixel resolution, at any sub-pixel position, is a Lanczos-5 interpolation of that grid at
the image pixels' offsets from the position: what meas_extensions_psfex's ``PsfexPsf``
computes (``vignet_resample`` with step ``1 / pixstep``), and what skyphot's PSF fit uses as
its forward model, so a model fitted here reads back in afw as the same kernels.

Resampling is separable and linear, so one axis is a matrix: output sample ``j`` reads the
input at ``n_in // 2 + shift + (j - n_out // 2) · step`` with normalized Lanczos-5 weights
of the input samples within reach. The index arithmetic, C truncations included, is
PSFEx's (``vignet.c``), so outputs near the edges are the same too.
"""

from __future__ import annotations

import numpy as np

# PSFEx's vignet.h: the interpolant and its reach, in input samples
INTERP_HALF_WIDTH = 4.5  # INTERPW / 2
INTERP_FACTOR = 5.0  # INTERPFAC: Lanczos-5
_HALF = int(INTERP_HALF_WIDTH) + 2  # PSFEx's hmw with an input step of 1
_TAPS = 2 * _HALF


def interpolant(x: np.ndarray) -> np.ndarray:
    """PSFEx's INTERPF: Lanczos-5, 1 within 1e-5 of 0, 0 beyond ±5."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (np.sin(np.pi * x) * np.sin(np.pi / INTERP_FACTOR * x)
               / (np.pi * np.pi / INTERP_FACTOR * x * x))
    out = np.where(np.abs(x) > INTERP_FACTOR, 0.0, out)
    return np.where((x < 1e-5) & (x > -1e-5), 1.0, out)


def resample_weights(n_in: int, n_out: int, step: float, shift: np.ndarray | float
                     ) -> np.ndarray:
    """(M, n_out, n_in) weights of one axis of ``vignet_resample``, one matrix per ``shift``
    (M shifts; a scalar gives M = 1): output ``j`` of matrix ``m`` samples input position
    ``n_in // 2 + shift[m] + (j - n_out // 2) · step``. Outputs whose position falls off
    the input are 0, as PSFEx leaves them."""
    shift = np.atleast_1d(np.asarray(shift, float))
    m = len(shift)
    xs1 = n_in // 2 + shift - (n_out // 2) * step
    # PSFEx skips the outputs before the input starts (with its own rounding) ...
    skip = np.where(xs1 < 0, np.trunc(1 - xs1 / step), 0).astype(np.int64)
    first_x = xs1 + skip * step
    # ... and stops where it ends
    count = np.minimum(np.trunc((n_in - 1 - first_x) / step + 1).astype(np.int64),
                       n_out - skip)
    count = np.where(np.trunc(xs1) >= n_in, 0, count)
    j = np.arange(n_out)
    on = (j[None, :] >= skip[:, None]) & (j[None, :] < (skip + count)[:, None])
    x1 = xs1[:, None] + j[None, :] * step  # (M, n_out)
    ix1 = np.trunc(np.where(on, x1, 0)).astype(np.int64)
    index = ix1[..., None] - _HALF + np.arange(_TAPS)  # (M, n_out, taps)
    inside = (index >= 0) & (index < n_in) & on[..., None]
    w = np.where(inside, interpolant(index - x1[..., None]), 0.0)
    norm = w.sum(axis=-1, keepdims=True)
    w = np.where(norm > 0, w / np.where(norm > 0, norm, 1), 0.0)
    out = np.zeros((m, n_out, n_in))
    rows = np.broadcast_to(np.arange(m)[:, None, None], index.shape)
    cols = np.broadcast_to(j[None, :, None], index.shape)
    np.add.at(out, (rows[inside], cols[inside], index[inside]), w[inside])
    return out


def psfex_step(pixstep: float) -> float:
    """The input step of resampling a model of ``pixstep`` to image pixels, ``1 / pixstep``
    in float32 as PsfexPsf computes it."""
    return float(np.float32(1.0) / np.float32(pixstep))


def resample_images(images: np.ndarray, pixstep: float, out_w: int, out_h: int,
                    dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """Model images (T, h, w) at ``pixstep`` resampled to image pixels (T, out_h, out_w),
    centred (or shifted by ``dx, dy`` image pixels) as PsfexPsf calls ``vignet_resample``
    (step ``1 / pixstep``, shift ``-d / pixstep``)."""
    step = psfex_step(pixstep)
    _, h, w = images.shape
    wx = resample_weights(w, out_w, step, -dx * step)[0]
    wy = resample_weights(h, out_h, step, -dy * step)[0]
    return np.einsum("yi,tij,xj->tyx", wy, images, wx)


def kernel_side(model_side: int, pixstep: float) -> int:
    """Side in image pixels of the kernel of a model ``model_side`` samples wide:
    PsfexPsf's ``_doComputeBBox``, ``int(w · pixstep)`` in float32, made odd."""
    return int(np.float32(model_side) * np.float32(pixstep)) | 1
