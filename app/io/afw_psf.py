"""PSFs in an afw archive: GaussianPsf, DoubleGaussianPsf and PsfexPsf as skyphot's models.

Each is converted exactly, so a decoded PSF gives the kernel image afw's
``computeKernelImage`` gives:

- ``GaussianPsf`` (afw): a :class:`~app.engine.psf.GaussianPsf` sampled as afw samples it (at
  pixel centres, normalized over the stamp), or a constant pixel PSF of that image when the
  stamp is not an odd square.
- ``DoubleGaussianPsf`` (meas_algorithms, a KernelPsf of an AnalyticKernel): a constant
  :class:`~app.engine.psf_model.PixelPsf` holding the kernel image (the two Gaussians sampled
  at pixel centres about the kernel's centre ``(w - 1) // 2``, normalized to sum 1).
- ``PsfexPsf`` (meas_extensions_psfex): PSFEx's model is component images, at its own pixel
  step ``pixstep`` (image pixels per PSF sample), weighted by a polynomial in
  ``(x - offset) / scale`` of the parent-frame position. Resampling to image pixels is linear,
  so each component is resampled once (:func:`~app.engine.psf_resample.resample_images`,
  PSFEx's ``vignet_resample``), and the polynomial is re-expanded in skyphot's ``u, v`` (the
  array position scaled to [-1, 1] over the image): the result is a ``PixelPsf`` of the same
  kernels everywhere. An oversampled model (``pixstep`` < 1) is kept at its own sampling, a
  ``PixelPsf`` of that ``step``, so kernels at sub-pixel phases are resampled from it as
  afw resamples them.

The conversion is exact but for rounding: PSFEx sums its components in float32 and resamples
through a float32 buffer; here it is float64 (differences of order 1e-7 of the peak).
Shifting a kernel to a sub-pixel position is as afw's: an oversampled model is resampled at
the shifted phase; a pixel-resolution one is shifted by Lanczos-5, the same resampling at
``pixstep = 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from math import comb

import numpy as np

from app.engine.psf import GaussianPsf, PsfModel
from app.engine.psf_model import PixelPsf, term_exponents
from app.engine.psf_resample import kernel_side, resample_images
from app.io.afw_archive import (
    ArchivedObject,
    ArchiveError,
    ArchiveReader,
    ArchiveWriter,
    Field,
    value,
)

Shape = tuple[int, int]  # (height, width) of the exposure
Origin = tuple[int, int]  # xy0 of the exposure


def decode_psf(archive: ArchiveReader, archive_id: int, shape: Shape, xy0: Origin) -> PsfModel:
    """The archived PSF as a skyphot model; ArchiveError naming the kind when it is one not
    decoded here (PiffPsf, CoaddPsf, ...) or is malformed."""
    obj = archive.get(archive_id)
    decoder = DECODERS.get(obj.name)
    if decoder is None:
        raise ArchiveError(f"archived {obj.name} not decoded")
    try:
        return decoder(obj, shape, xy0)
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        raise ArchiveError(f"archived {obj.name} could not be decoded ({exc})") from exc


def _gaussian(obj: ArchivedObject, shape: Shape, xy0: Origin) -> PsfModel:
    row, header = obj.one_row(), obj.headers[0]
    width = int(value(row, header, "dimensions_x"))
    height = int(value(row, header, "dimensions_y"))
    sigma = float(value(row, header, "sigma"))
    if width == height and width % 2:
        return GaussianPsf(sigma, width, sampling="point")
    # afw's box starts at -dimensions / 2: its centre is pixel w // 2
    xs = np.arange(width) - width // 2
    ys = np.arange(height) - height // 2
    image = np.outer(np.exp(-0.5 * (ys / sigma) ** 2), np.exp(-0.5 * (xs / sigma) ** 2))
    return _constant_psf(image / image.sum(), width // 2, height // 2, shape)


def _double_gaussian(obj: ArchivedObject, shape: Shape, xy0: Origin) -> PsfModel:
    row, header = obj.one_row(), obj.headers[0]
    width = int(value(row, header, "dimensions_x"))
    height = int(value(row, header, "dimensions_y"))
    sigma1 = float(value(row, header, "sigma1"))
    sigma2 = float(value(row, header, "sigma2"))
    b = float(value(row, header, "b"))
    if b == 0.0 and sigma2 == 0.0:
        sigma2 = 1.0  # as meas_algorithms does, to avoid 0/0 at the centre
    if not (sigma1 > 0 and sigma2 > 0):
        raise ValueError(f"sigma may not be 0: {sigma1}, {sigma2}")
    # AnalyticKernel: centre (w - 1) // 2, the function sampled at pixel centres
    cx, cy = (width - 1) // 2, (height - 1) // 2
    x = (np.arange(width) - cx)[None, :]
    y = (np.arange(height) - cy)[:, None]
    r2 = x * x + y * y
    image = np.exp(-0.5 * r2 / sigma1**2) + b * np.exp(-0.5 * r2 / sigma2**2)
    return _constant_psf(image / image.sum(), cx, cy, shape)


def _constant_psf(image: np.ndarray, cx: int, cy: int, shape: Shape) -> PixelPsf:
    """A PSF the same everywhere, its kernel ``image`` with the PSF centre at pixel
    (cx, cy), padded with zeros to the odd square skyphot's kernels are."""
    return PixelPsf(_centred(image[None], cx, cy), 0, shape[1], shape[0])


def _centred(images: np.ndarray, cx: int, cy: int) -> np.ndarray:
    """(T, h, w) images whose centre is pixel (cx, cy) as (T, K, K), K odd, centre K // 2."""
    _, h, w = images.shape
    half = max(cx, w - 1 - cx, cy, h - 1 - cy)
    out = np.zeros((len(images), 2 * half + 1, 2 * half + 1))
    out[:, half - cy:half - cy + h, half - cx:half - cx + w] = images
    return out


# ---------------------------------------------------------------------------------------------
# PsfexPsf


def _psfex(obj: ArchivedObject, shape: Shape, xy0: Origin) -> PsfModel:
    """PsfexPsf's two catalogs: sizes (ndim, ngroup, ncoeff, ..., averagePosition, _pixstep),
    then the polynomial (group, degree, basis, coeff), _size (w, h, ncomp), _comp (the
    component images, x fastest) and the context offsets and scales."""
    if len(obj.catalogs) != 2:
        raise ValueError(f"PsfexPsf has {len(obj.catalogs)} catalogs, expected 2")
    sizes, h1 = obj.one_row(0), obj.headers[0]
    data, h2 = obj.one_row(1), obj.headers[1]
    ndim = int(value(sizes, h1, "ndim"))
    if ndim != 2:  # as PsfexPsf itself: only spatial variation
        raise ValueError(f"only spatial variation (ndim == 2) is supported; saw {ndim}")
    pixstep = np.float32(value(sizes, h1, "_pixstep"))
    group = [int(g) for g in np.atleast_1d(value(data, h2, "group"))]
    degree = [int(d) for d in np.atleast_1d(value(data, h2, "degree"))]
    size = [int(s) for s in np.atleast_1d(value(data, h2, "_size"))]
    comp = np.asarray(np.atleast_1d(value(data, h2, "_comp")), np.float64)
    offsets = np.atleast_1d(np.asarray(value(data, h2, "_context_first"), float))
    scales = np.atleast_1d(np.asarray(value(data, h2, "_context_second"), float))
    w, h = size[0], size[1]
    n_comp = size[2] if len(size) > 2 else 1
    exponents = psfex_exponents(group, degree)
    if len(exponents) != n_comp or comp.size != n_comp * w * h:
        raise ValueError(f"{n_comp} components of {w}×{h} do not match {len(exponents)} "
                         f"polynomial terms and {comp.size} pixels")
    order = max(p + q for p, q in exponents)
    mix = _reexpand(exponents, order, offsets, scales, shape, xy0)
    images = comp.reshape(n_comp, h, w)
    if pixstep < 1:
        # an oversampled model stays oversampled: its kernels at any sub-pixel phase are
        # then resampled from its own grid, as PsfexPsf's computeImage does
        centred = _centred(images, w // 2, h // 2)
        return PixelPsf(np.einsum("tc,cij->tij", mix, centred), order, shape[1], shape[0],
                        step=float(pixstep))
    out_w, out_h = kernel_side(w, pixstep), kernel_side(h, pixstep)
    resampled = resample_images(images, pixstep, out_w, out_h)
    centred = _centred(resampled, out_w // 2, out_h // 2)
    return PixelPsf(np.einsum("tc,cij->tij", mix, centred), order, shape[1], shape[0])


def psfex_exponents(group: list[int], degree: list[int]) -> list[tuple[int, int]]:
    """The powers of the two context variables in each of PSFEx's polynomial terms, in its
    order (``poly_func``'s recursion: 1, x, x², …, y, xy, …, y², … for one group).

    ``group`` is 0-based, as PSFEx keeps it (and PsfexPsf writes it); ``degree`` per group.
    """
    ndim, ngroup = len(group), len(degree)
    per_group = [sum(g == k for g in group) for k in range(ngroup)]
    ncoeff = 1
    for k in range(ngroup):
        n, dmax = per_group[k], degree[k]
        ncoeff *= comb(n + dmax, min(dmax, n))
    xpol = [np.zeros(ndim, int) for _ in range(ndim)]  # monomials as exponent vectors
    expo = [0] * ndim
    gexpo = list(degree)
    if gexpo[group[0]]:
        gexpo[group[0]] -= 1
    out = [np.zeros(ndim, int)]
    expo[0] = 1
    xpol[0] = np.eye(ndim, dtype=int)[0]
    for _ in range(ncoeff - 1):
        out.append(xpol[0].copy())
        for d in range(ndim):
            g = group[d]
            old = gexpo[g]
            gexpo[g] -= 1
            if old:
                expo[d] += 1
                xpol[d] = xpol[d] + np.eye(ndim, dtype=int)[d]
                for e in range(d - 1, -1, -1):
                    xpol[e] = xpol[d].copy()
                break
            gexpo[g] = expo[d]
            expo[d] = 0
            xpol[d] = np.zeros(ndim, int)
    return [(int(e[0]), int(e[1])) for e in out]


def _reexpand(exponents: list[tuple[int, int]], order: int, offsets: np.ndarray,
              scales: np.ndarray, shape: Shape, xy0: Origin) -> np.ndarray:
    """(T, C): each skyphot term u^i v^j's share of each PSFEx term xs^p ys^q, where
    ``xs = (x + x0 - offset) / scale`` of the array position ``x = (u + 1) D / 2``,
    ``D = max(W - 1, 1)`` (PixelPsf's scaling): ``xs = a u + b``, expanded binomially."""
    i_of, j_of = term_exponents(order)
    term = {(int(i), int(j)): t for t, (i, j) in enumerate(zip(i_of, j_of, strict=True))}
    lin = []
    for axis, extent in ((0, shape[1]), (1, shape[0])):
        span = max(extent - 1, 1)
        a = span / (2 * scales[axis])
        b = (span / 2 + xy0[axis] - offsets[axis]) / scales[axis]
        lin.append((a, b))
    (ax, bx), (ay, by) = lin
    mix = np.zeros((len(term), len(exponents)))
    for c, (p, q) in enumerate(exponents):
        for i in range(p + 1):
            cu = comb(p, i) * ax**i * bx ** (p - i)
            for j in range(q + 1):
                mix[term[(i, j)], c] += cu * comb(q, j) * ay**j * by ** (q - j)
    return mix


DECODERS: dict[str, Callable[[ArchivedObject, Shape, Origin], PsfModel]] = {
    "GaussianPsf": _gaussian,
    "DoubleGaussianPsf": _double_gaussian,
    "PsfexPsf": _psfex,
}


# ---------------------------------------------------------------------------------------------
# Writing

GAUSSIAN_SCHEMA = (
    Field("dimensions_x", "J", "width/height of realization of Psf", "pixel"),
    Field("dimensions_y", "J", "width/height of realization of Psf", "pixel"),
    Field("sigma", "D", "radius of Gaussian", "pixel"),
)
PSFEX_SIZES_SCHEMA = (
    Field("ndim", "J", "Number of elements in group"),
    Field("ngroup", "J", "Number of elements in degree"),
    Field("ncoeff", "J", "Number of coefficients"),
    Field("_size_size", "J", "Size of _size array"),
    Field("_comp_size", "J", "Size of _comp array"),
    Field("_context_size", "J", "Size of _context array"),
    Field("averagePosition_x", "D", "average position of stars used to make the PSF", "pixel"),
    Field("averagePosition_y", "D", "average position of stars used to make the PSF", "pixel"),
    Field("_pixstep", "E", "oversampling", "pixel"),
)


def _psfex_data_schema(ncoeff: int, n_pixels: int) -> tuple[Field, ...]:
    return (
        Field("group", "2J", "Groups (of coefficients?)", array=True),
        Field("degree", "1J", "Degree in each group", array=True),
        Field("basis", f"{ncoeff}D", "Values of the basis functions", array=True),
        Field("coeff", f"{ncoeff}D", "Polynomial coefficients", array=True),
        Field("_size", "3J", "PSF dimensions", array=True),
        Field("_comp", f"{n_pixels}E", "Complete pixel data", array=True),
        Field("_context_first", "2D", "Offset to apply to context data", array=True),
        Field("_context_second", "2D", "Scale to apply to context data", array=True),
    )


def put_psf(writer: ArchiveWriter, psf: PsfModel, xy0: Origin) -> int | None:
    """Archive ``psf`` as afw would read it back: a point-sampled GaussianPsf as afw's
    GaussianPsf, a PixelPsf as the PsfexPsf of the same kernels (``pixstep`` 1, context
    scaled so PSFEx's variables are skyphot's ``u, v``; an oversampled one at its ``step``
    as ``pixstep``). Other models (skyphot's integrated
    Gaussian, a simulation's exact PSF) have no afw form that gives the same image: None."""
    if isinstance(psf, GaussianPsf) and psf.sampling == "point":
        archive_id = writer.new_id()
        writer.save(archive_id, "GaussianPsf", "lsst.afw.detection", GAUSSIAN_SCHEMA,
                    [{"dimensions_x": psf.size, "dimensions_y": psf.size,
                      "sigma": psf.sigma(0.0, 0.0)}])
        return archive_id
    if isinstance(psf, PixelPsf):
        return _put_psfex(writer, psf, xy0)
    return None


def _put_psfex(writer: ArchiveWriter, psf: PixelPsf, xy0: Origin) -> int:
    i_of, j_of = term_exponents(psf.order)
    index = {(int(i), int(j)): t for t, (i, j) in enumerate(zip(i_of, j_of, strict=True))}
    exponents = psfex_exponents([0, 0], [psf.order])
    comp = np.stack([psf.basis[index[e]] for e in exponents]).astype(np.float32)
    span_x, span_y = max(psf.width - 1, 1) / 2, max(psf.height - 1, 1) / 2
    offsets = [span_x + xy0[0], span_y + xy0[1]]
    basis = [1.0 if e == (0, 0) else 0.0 for e in exponents]  # poly_func at the centre
    archive_id = writer.new_id()
    k = psf.basis.shape[-1]
    writer.save(archive_id, "PsfexPsf", "lsst.meas.extensions.psfex", PSFEX_SIZES_SCHEMA, [{
        "ndim": 2, "ngroup": 1, "ncoeff": len(exponents), "_size_size": 3,
        "_comp_size": comp.size, "_context_size": 2, "averagePosition_x": offsets[0],
        "averagePosition_y": offsets[1], "_pixstep": psf.step}], persistable_catalog=0)
    writer.save(archive_id, "PsfexPsf", "lsst.meas.extensions.psfex",
                _psfex_data_schema(len(exponents), comp.size), [{
                    "group": [0, 0], "degree": [psf.order], "basis": basis,
                    "coeff": np.zeros(len(exponents)), "_size": [k, k, len(exponents)],
                    "_comp": comp.ravel(), "_context_first": offsets,
                    "_context_second": [span_x, span_y]}], persistable_catalog=1)
    return archive_id
