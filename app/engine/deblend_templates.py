"""Templates of meas_deblender's baseline deblender, one per peak that is not a point source.

The steps of ``baseline.deblend`` in its order, each written from meas_deblender's C++
(``src/BaselineUtils.cc``) and plugins (``python/lsst/meas/deblender/plugins.py``):

1. `symmetric_template` (buildSymmetricTemplate): over the pixels p of the parent footprint
   whose mirror 2c − p about the peak c is in it too, ``max(0, min(I(p), I(2c − p)))``.
   With ``patch`` (edgeHandling 'noclip') a template touching an EDGE pixel also keeps the
   footprint's pixels whose mirror falls off the footprint's box, at their own value.
2. `ramp_template` (rampFluxAtEdge, edgeHandling 'ramp'): a template with more than 3σ at
   the edge of its footprint is made again on the image inside the parent footprint grown by
   S = 1.5 FWHM (odd), where pixels with no data (off the image) take the ramp
   ``max over edge pixels e of T(e) · PSF(p − e) / max PSF``: a template a peak near the edge
   of its footprint (or of the image) cut short continues as the PSF falls.
3. `median_smooth` (medianFilter): a (2h+1)² median over the template's box.
4. `make_monotonic` (makeMonotonic): every pixel casts a "shadow" over the pixels up to five
   rings farther from the peak in a wedge of slopes ± 0.3 about its own direction, clipping
   them to at most its value; the rings are worked outwards in chunks of five, the shadows
   of a chunk cast from its values at the chunk's start.
5. `Template.clipped` (clipFootprintsToNonzero): the footprint shrinks to the template's
   positive pixels.

A template lives on its own box of exposure pixels and carries its footprint, so a peak far
from the others costs its own box, not the parent's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from app.engine.detection import dilate_disk

FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)
SHADOW_CHUNK = 5  # rings per chunk of makeMonotonic, and the length of each shadow
SHADOW_SLOPE = 0.3  # half-width of a shadow's wedge, in slope


@dataclass
class Template:
    """A template image on its own box: ``image[y - y0, x - x0]`` is the value at (x, y)."""

    image: np.ndarray  # float64, zero outside ``footprint``
    footprint: np.ndarray  # bool, same shape
    x0: int
    y0: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), inclusive, in exposure pixels."""
        h, w = self.image.shape
        return self.x0, self.y0, self.x0 + w - 1, self.y0 + h - 1

    def clipped(self) -> Template | None:
        """clipFootprintsToNonzero: the footprint cut to the positive pixels, the box to
        them; None when no pixel is positive."""
        keep = self.footprint & (self.image > 0)
        rows, cols = np.nonzero(keep.any(axis=1))[0], np.nonzero(keep.any(axis=0))[0]
        if not len(rows):
            return None
        sl = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        return Template(np.where(keep[sl], self.image[sl], 0.0), keep[sl].copy(),
                        self.x0 + int(cols[0]), self.y0 + int(rows[0]))


def _cropped(image: np.ndarray, footprint: np.ndarray, x0: int, y0: int) -> Template | None:
    """The template cut to its footprint's box (None for an empty footprint)."""
    rows, cols = np.nonzero(footprint.any(axis=1))[0], np.nonzero(footprint.any(axis=0))[0]
    if not len(rows):
        return None
    sl = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return Template(np.where(footprint[sl], image[sl], 0.0), footprint[sl].copy(),
                    x0 + int(cols[0]), y0 + int(rows[0]))


def symmetric_template(image: np.ndarray, inside: np.ndarray, origin: tuple[int, int],
                       peak: tuple[int, int], edge: np.ndarray | None = None
                       ) -> tuple[Template | None, bool]:
    """buildSymmetricTemplate of the footprint ``inside`` (a box at ``origin`` = (x0, y0)).

    ``peak`` is (x, y) in the same pixels as ``origin``. ``edge`` (EDGE bits on the box, or
    None) asks for patchEdges: when the symmetric footprint has an EDGE pixel, the footprint's
    pixels whose mirror lies off the box join the template with their own values. Returns the
    template (None when the peak is not in the footprint) and whether it was patched.
    """
    ox, oy = origin
    px, py = peak[0] - ox, peak[1] - oy
    h, w = inside.shape
    if not (0 <= px < w and 0 <= py < h and inside[py, px]):
        return None, False
    a, b = min(px, w - 1 - px), min(py, h - 1 - py)
    win = (slice(py - b, py + b + 1), slice(px - a, px + a + 1))
    sub_in = inside[win]
    both = sub_in & sub_in[::-1, ::-1]
    sub = image[win].astype(np.float64)
    t = np.where(both, np.maximum(np.minimum(sub, sub[::-1, ::-1]), 0.0), 0.0)
    if edge is None or not edge[win][both].any():
        return _cropped(t, both, ox + px - a, oy + py - b), False
    # patchEdges: the pixels whose mirror is off the footprint's box, at their own value
    rows, cols = np.nonzero(inside.any(axis=1))[0], np.nonzero(inside.any(axis=0))[0]
    yy, xx = np.mgrid[:h, :w]
    my, mx = 2 * py - yy, 2 * px - xx
    off = inside & ((mx < cols[0]) | (mx > cols[-1]) | (my < rows[0]) | (my > rows[-1]))
    full_t = np.where(off, image, 0.0).astype(np.float64)
    full_fp = off.copy()
    full_t[win] = np.where(both, t, full_t[win])
    full_fp[win] |= both
    return _cropped(full_t, full_fp, ox, oy), True


def edge_pixels(footprint: np.ndarray) -> np.ndarray:
    """afw's findEdgePixels: pixels of the footprint with a 4-neighbour outside it."""
    return footprint & ~ndimage.binary_erosion(footprint, FOUR_CONNECTED, border_value=0)


def has_flux_at_edge(t: Template, threshold: float) -> bool:
    """hasSignificantFluxAtEdge: an edge pixel of the template's footprint ≥ ``threshold``."""
    return bool((t.image[edge_pixels(t.footprint)] >= threshold).any())


def ramp_size(fwhm: float) -> int:
    """The ramp's reach S: 1.5 FWHM made an odd integer, as _handle_flux_at_edge does."""
    return int((1.5 * fwhm + 0.5) / 2) * 2 + 1


def grow_footprint(inside: np.ndarray, reach: int) -> np.ndarray:
    """The footprint ``inside`` (on its box) grown by a disk of ``reach`` (afw's dilate), on
    its box padded by ``reach`` on every side."""
    h, w = inside.shape
    padded = np.zeros((h + 2 * reach, w + 2 * reach), bool)
    padded[reach: reach + h, reach: reach + w] = inside
    return dilate_disk(padded, reach)


def ramp_template(t: Template, peak: tuple[int, int], image: np.ndarray,
                  grown_parent: np.ndarray, parent_origin: tuple[int, int],
                  psf_stamp: np.ndarray, reach: int) -> Template | None:
    """_handle_flux_at_edge: the template made again with the footprint grown by ``reach``.

    ``image`` is the whole exposure's; ``grown_parent`` the parent footprint grown by
    ``reach`` (`grow_footprint` of the footprint on its box at ``parent_origin``);
    ``psf_stamp`` the PSF at the parent's centre (odd, centred). Returns the new template,
    cut to the image. (SourceDeblendTask ramps only with edgeHandling 'ramp', where
    patchEdges is off, so the remade template is never patched.)
    """
    s = reach
    tx0, ty0, tx1, ty1 = t.box
    fx0, fy0, fx1, fy1 = tx0 - s, ty0 - s, tx1 + s, ty1 + s  # the grown box, maybe off-image
    shape = (fy1 - fy0 + 1, fx1 - fx0 + 1)
    grown = np.zeros(shape, bool)
    _paste(grown, grown_parent, parent_origin[0] - s - fx0, parent_origin[1] - s - fy0)
    # the image inside the grown footprint and the image bounds; zero elsewhere
    ih, iw = image.shape
    oy0, ox0 = max(fy0, 0), max(fx0, 0)
    oy1, ox1 = min(fy1, ih - 1), min(fx1, iw - 1)
    padim = np.zeros(shape)
    window = (slice(oy0, oy1 + 1), slice(ox0, ox1 + 1))
    local = (slice(oy0 - fy0, oy1 - fy0 + 1), slice(ox0 - fx0, ox1 - fx0 + 1))
    padim[local] = np.where(grown[local], image[window], 0.0)
    # the ramp: every edge pixel e of the old template spreads T(e)·PSF/max(PSF) out to ±S
    k = psf_stamp.shape[0] // 2
    r = min(k, s)
    psf = psf_stamp[k - r: k + r + 1, k - r: k + r + 1] / psf_stamp.max()
    ey, ex = np.nonzero(edge_pixels(t.footprint))
    seed = t.image[ey, ex]
    oy, ox = np.mgrid[-r: r + 1, -r: r + 1]
    ty = (ey[:, None] + s + oy.ravel()[None, :]).ravel()  # every (edge pixel, offset), in
    tx = (ex[:, None] + s + ox.ravel()[None, :]).ravel()  # the grown box (it holds them all)
    ramped = np.zeros(shape)
    np.maximum.at(ramped, (ty, tx), (seed[:, None] * psf.ravel()[None, :]).ravel())
    empty = padim == 0
    padim[empty] = ramped[empty]
    new, _ = symmetric_template(padim, grown, (fx0, fy0), peak)
    if new is None:
        return None
    # cut to the image (the template may now reach past it; LSST clips the same way)
    nx0, ny0, nx1, ny1 = new.box
    cx0, cy0, cx1, cy1 = max(nx0, 0), max(ny0, 0), min(nx1, iw - 1), min(ny1, ih - 1)
    sl = (slice(cy0 - ny0, cy1 - ny0 + 1), slice(cx0 - nx0, cx1 - nx0 + 1))
    return _cropped(new.image[sl], new.footprint[sl], cx0, cy0)


def _paste(dst: np.ndarray, src: np.ndarray, x0: int, y0: int) -> None:
    """OR ``src`` into ``dst`` with its corner at (x0, y0) of ``dst``, cropped to ``dst``."""
    h, w = dst.shape
    sh, sw = src.shape
    ya, xa = max(y0, 0), max(x0, 0)
    yb, xb = min(y0 + sh, h), min(x0 + sw, w)
    if ya < yb and xa < xb:
        dst[ya:yb, xa:xb] |= src[ya - y0: yb - y0, xa - x0: xb - x0]


def median_smooth(t: Template, half: int) -> Template:
    """medianFilter: the (2·half+1)² median of every pixel at least ``half`` from the box's
    edges; the margins keep their values.

    Departures: meas_deblender's C++ also leaves the column ``half + 1`` from the right
    unfiltered (an off-by-one); here every margin is ``half`` wide. And the filtered values
    outside the template's footprint are dropped (LSST keeps them in the template's box,
    where they take a share of the pixel's flux that no child's footprint then holds).
    """
    size = 2 * half + 1
    h, w = t.image.shape
    if half < 1 or h < size or w < size:
        return t
    out = t.image.copy()
    inner = (slice(half, h - half), slice(half, w - half))
    out[inner] = ndimage.median_filter(t.image, size=size, mode="nearest")[inner]
    return Template(np.where(t.footprint, out, 0.0), t.footprint, t.x0, t.y0)


def _lround(v: np.ndarray) -> np.ndarray:
    """C's lround: halves away from zero."""
    return (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int64)


@lru_cache(maxsize=128)
def _shadows(chunk: int) -> tuple[np.ndarray, ...]:
    """Every shadow cast by the rings ``chunk·5 .. chunk·5 + 4`` (ring L: the pixels at
    Chebyshev distance L from the peak), relative to the peak and grouped by target:
    (source dx, source dy, target dx, target dy, start of each target's run of sources).

    The same for every template, so kept: rings out to 640 px (a few hundred MB at most);
    with fewer kept, the large footprints of a crowded or galaxy-rich field recomputed
    them for every child (48 s of 100 on such a field)."""
    src_x, src_y, dst_x, dst_y = [], [], [], []
    for ring in range(max(chunk * SHADOW_CHUNK, 1), (chunk + 1) * SHADOW_CHUNK):
        side = np.arange(-ring, ring + 1)
        # the ring's pixels; vertical sides hold (±L, y) for y in [−L, L) on the right and
        # (−L, L] on the left, the corners left over lie on the horizontal sides (makeMonotonic's
        # walk around the ring decides which side a corner belongs to this way)
        vx = np.concatenate([np.full(2 * ring, ring), np.full(2 * ring, -ring)])
        vy = np.concatenate([side[:-1], side[1:]])
        hx = np.concatenate([side[1:], side[:-1]])
        hy = np.concatenate([np.full(2 * ring, ring), np.full(2 * ring, -ring)])
        for along_x, (ax, ay) in ((True, (vx, vy)), (False, (hx, hy))):
            lead, cross = (ax, ay) if along_x else (ay, ax)
            sign = np.sign(lead)
            ds0 = cross / lead - SHADOW_SLOPE
            for step in range(1, SHADOW_CHUNK + 1):
                lo, hi = _lround(step * ds0), _lround(step * (ds0 + 2 * SHADOW_SLOPE))
                for k in range(int((hi - lo).max()) + 1):
                    ok = lo + k <= hi
                    t_lead = lead[ok] + sign[ok] * step
                    t_cross = cross[ok] + sign[ok] * (lo[ok] + k)
                    src_x.append(ax[ok])
                    src_y.append(ay[ok])
                    dst_x.append(t_lead if along_x else t_cross)
                    dst_y.append(t_cross if along_x else t_lead)
    sx, sy, tx, ty = (np.concatenate(a).astype(np.int32) for a in (src_x, src_y, dst_x, dst_y))
    order = np.lexsort((tx, ty))
    sx, sy, tx, ty = sx[order], sy[order], tx[order], ty[order]
    starts = np.flatnonzero(np.r_[True, (np.diff(tx) != 0) | (np.diff(ty) != 0)])
    return sx, sy, tx[starts], ty[starts], starts


def make_monotonic(t: Template, peak: tuple[int, int]) -> Template:
    """makeMonotonic: clip every pixel to the shadows cast by the pixels nearer the peak.

    The shadows of each chunk of five rings are cast from the template as it stood at the
    chunk's start, so within a chunk their order does not matter: each pixel takes the
    minimum of all the shadows on it at once. The template is set in a square about the peak
    whose pixels off the template read +inf, so a shadow from off the template clips nothing
    (LSST skips those) and no index needs a bounds test but the writes.
    """
    h, w = t.image.shape
    cx, cy = peak[0] - t.x0, peak[1] - t.y0
    n_chunks = (max(cx, w - cx, cy, h - cy) + SHADOW_CHUNK - 1) // SHADOW_CHUNK
    r = n_chunks * SHADOW_CHUNK + SHADOW_CHUNK  # the farthest target's ring, and a margin
    side = 2 * r + 1
    square = np.full((side, side), np.inf)
    square[r - cy: r - cy + h, r - cx: r - cx + w] = t.image
    flat = square.ravel()
    for chunk in range(n_chunks):
        sx, sy, tx, ty, starts = _shadows(chunk)
        shadow = np.minimum.reduceat(flat[(sy + r) * side + sx + r], starts)
        on = (tx + cx >= 0) & (tx + cx < w) & (ty + cy >= 0) & (ty + cy < h)
        target = (ty[on] + r) * side + tx[on] + r
        flat[target] = np.minimum(flat[target], shadow[on])
    return Template(square[r - cy: r - cy + h, r - cx: r - cx + w].copy(), t.footprint,
                    t.x0, t.y0)
