"""What the plugins measure on: the exposure, the sources, noise-replaced stamp cubes.

Measuring one source with every other source replaced by noise is LSST's NoiseReplacer.
Instead of inserting and removing footprints one at a time in the full image, the image with
*all* footprints replaced by noise is built once, and each source's stamp is cut from it with
that source's own heavy footprint written back: one gather and one scatter for all sources.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from app.engine.config import ClassificationConfig, SourceSlotConfig
from app.engine.cutouts import gather_windows
from app.engine.exposure import Exposure
from app.engine.footprints import Footprint
from app.engine.psf import PsfModel, lanczos_weights, psf_sigmas
from app.engine.stats import clipped_stats


@dataclass
class Stamps:
    """Per-source square cutouts, all the same size, centred on integer pixels."""

    image: np.ndarray  # (N, S, S) float32, other sources replaced by noise
    variance: np.ndarray  # (N, S, S)
    mask: np.ndarray  # (N, S, S) int32; pixels off the exposure carry NO_DATA
    x0: np.ndarray  # (N,) array-frame x of stamp pixel [.., 0, 0]
    y0: np.ndarray  # (N,)
    on_image: np.ndarray  # (N, S, S) bool

    @property
    def half(self) -> int:
        return self.image.shape[-1] // 2

    def crop(self, half: int) -> Stamps:
        """The central (2·half+1)² pixels of every stamp (contiguous copies)."""
        c = self.half - half
        cut = (slice(None), slice(c, c + 2 * half + 1), slice(c, c + 2 * half + 1))

        def part(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(a[cut])

        return Stamps(part(self.image), part(self.variance), part(self.mask), self.x0 + c,
                      self.y0 + c, part(self.on_image))


@dataclass
class MeasurementContext:
    """State of one measurement run; plugins read it and update the slot centroid/shape."""

    exposure: Exposure
    ids: np.ndarray
    parents: np.ndarray
    footprints: list[Footprint]  # heavy, one per source (children: deblended)
    peak_x: np.ndarray  # array-frame coordinates of each source's peak
    peak_y: np.ndarray
    replace_with_noise: bool = True
    # pixels to replace by noise; default: the footprints of the top-level sources measured.
    # Measuring a subset of the detections still hides all of them when this is given.
    covered: np.ndarray | None = None
    noise_seed: int = 0
    aperture_radii: list[float] = field(default_factory=list)
    slots: SourceSlotConfig = field(default_factory=SourceSlotConfig)
    classification: ClassificationConfig = field(default_factory=ClassificationConfig)
    # slots, set by the centroid and shape plugins (array frame), and their flags (None
    # while no plugin has set them, or when the slot is not defined)
    x: np.ndarray = field(init=False)
    y: np.ndarray = field(init=False)
    shape_xx: np.ndarray = field(init=False)
    shape_yy: np.ndarray = field(init=False)
    shape_xy: np.ndarray = field(init=False)
    centroid_flag: np.ndarray | None = field(init=False, default=None)
    shape_flag: np.ndarray | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.x = self.peak_x.astype(np.float64)
        self.y = self.peak_y.astype(np.float64)
        n = len(self.ids)
        self.shape_xx = np.full(n, np.nan)
        self.shape_yy = np.full(n, np.nan)
        self.shape_xy = np.full(n, np.nan)
        self._fp_cat = _concat_footprints(self.footprints)
        self._base = self._noise_replaced() if self.replace_with_noise else self.exposure.image
        self._cache: dict[int, Stamps] = {}

    @property
    def n_sources(self) -> int:
        return len(self.ids)

    @property
    def psf(self) -> PsfModel:
        if self.exposure.psf is None:
            raise ValueError("this exposure has no PSF model; characterize it first")
        return self.exposure.psf

    @property
    def base_image(self) -> np.ndarray:
        """The image with every top-level footprint replaced by noise."""
        return self._base

    def _noise_replaced(self) -> np.ndarray:
        """Image with the pixels of every parent footprint replaced by Gaussian noise.

        The noise has the clipped mean and stdev of the pixels outside all footprints
        (NoiseReplacer's ``noiseSource="measure"``), drawn from a seeded generator.
        """
        image = self.exposure.image
        covered = self.covered
        if covered is None:
            src, fy, fx, _ = self._fp_cat
            top = self.parents[src] == 0
            covered = np.zeros(image.shape, dtype=bool)
            covered[fy[top], fx[top]] = True
        excluded = self.exposure.planes.any(self.exposure.mask, ["BAD", "SAT", "NO_DATA"])
        excluded |= covered
        mean, _, std = clipped_stats(_every_nth_kept(image, excluded, NOISE_SAMPLES))
        rng = np.random.default_rng(self.noise_seed)
        out = image.copy()
        n = int(covered.sum())
        out[covered] = rng.normal(float(mean), float(std), n).astype(np.float32)
        return out

    def stamps(self, half: int) -> Stamps:
        """(2·half+1)² stamps centred on the rounded slot centroid, own footprint inserted.

        Cached per size, and cut from larger cached stamps when there are some (the same
        pixels, without another gather from the image); the slot centroid should be final
        before stamps are requested by flux plugins (the centroid plugin asks for its own
        before updating it).
        """
        if half not in self._cache:
            larger = [k for k in self._cache if k > half]
            self._cache[half] = (self._cache[min(larger)].crop(half) if larger
                                 else self._gather_stamps(half))
        return self._cache[half]

    def _gather_stamps(self, half: int) -> Stamps:
        """Stamps of every source about its rounded slot centroid."""
        cx = np.round(np.where(np.isfinite(self.x), self.x, self.peak_x)).astype(np.int64)
        cy = np.round(np.where(np.isfinite(self.y), self.y, self.peak_y)).astype(np.int64)
        size = 2 * half + 1
        return self.cutouts(np.arange(self.n_sources), cx - half, cy - half, (size, size))

    def cutouts(self, rows: np.ndarray, x0: np.ndarray, y0: np.ndarray,
                shape: tuple[int, int]) -> Stamps:
        """Windows of ``shape`` (height, width) at array-frame origins (x0, y0) for the
        sources ``rows``, each with its own footprint inserted (``gather_windows``), pixels
        off the image filled (0, infinite variance, NO_DATA). Not cached: for the few
        sources that need a window of their own (SdssCentroid's binning)."""
        ex = self.exposure
        h, w = ex.shape
        rows = np.asarray(rows, dtype=np.int64)
        x0 = np.asarray(x0, dtype=np.int64)
        y0 = np.asarray(y0, dtype=np.int64)
        height, width = shape
        yy = y0[:, None] + np.arange(height)
        xx = x0[:, None] + np.arange(width)
        on = ((yy >= 0) & (yy < h))[:, :, None] & ((xx >= 0) & (xx < w))[:, None, :]
        image = gather_windows(self._base, y0, x0, shape).astype(np.float32, copy=False)
        variance = gather_windows(ex.variance, y0, x0, shape).astype(np.float32, copy=False)
        mask = gather_windows(ex.mask, y0, x0, shape).astype(np.int32, copy=False)
        if not on.all():
            off_image = ~on
            image[off_image] = 0
            variance[off_image] = np.inf
            mask[off_image] = np.int32(ex.planes.bitmask("NO_DATA"))
        if self.replace_with_noise:
            src, fy, fx, values = self._fp_cat
            where = np.full(self.n_sources, -1, dtype=np.int64)
            where[rows] = np.arange(len(rows))
            k = where[src]
            sy, sx = fy - y0[k], fx - x0[k]
            inside = (k >= 0) & (sy >= 0) & (sy < height) & (sx >= 0) & (sx < width)
            image[k[inside], sy[inside], sx[inside]] = values[inside]
        return Stamps(image, variance, mask, x0, y0, on)

    def in_own_footprint(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per source: whether the pixel holding array-frame position (x, y) is in its own
        footprint (meas_base's CentroidChecker ``doFootprintCheck``)."""
        src, fy, fx, _ = self._fp_cat
        h, w = self.exposure.shape
        ix = np.floor(np.asarray(x, float) + 0.5)
        iy = np.floor(np.asarray(y, float) + 0.5)
        ok = np.isfinite(ix) & np.isfinite(iy)
        ix = np.where(ok, ix, -1).astype(np.int64)
        iy = np.where(ok, iy, -1).astype(np.int64)
        area = (h + 1) * (w + 1)
        query = np.arange(self.n_sources) * area + (iy + 1) * (w + 1) + (ix + 1)
        return ok & np.isin(query, src * area + (fy + 1) * (w + 1) + (fx + 1))

    def clear_stamps(self) -> None:
        """Forget cached stamps (after the slot centroid moved)."""
        self._cache.clear()

    def psf_sigma(self) -> np.ndarray:
        """PSF determinant radius at each slot centroid (pixels)."""
        return psf_sigmas(self.psf, self.x, self.y)

    def mask_in_footprints(self, bitmask: int) -> np.ndarray:
        """Per source: whether any of its footprint's pixels has one of ``bitmask``'s bits."""
        src, fy, fx, _ = self._fp_cat
        hit = (self.exposure.mask[fy, fx] & np.int32(bitmask)) != 0
        return np.bincount(src, weights=hit, minlength=self.n_sources) > 0

    def footprint_areas(self) -> np.ndarray:
        return np.array([fp.area for fp in self.footprints], dtype=np.int64)

    def footprint_pixels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """All sources' footprint pixels: (source index, y, x, own heavy value)."""
        return self._fp_cat


NOISE_SAMPLES = 2_000_000  # free pixels (about) the replacing noise is estimated from
SAMPLE_ROWS = 256  # rows of the image read at a time when sampling it


def _every_nth_kept(image: np.ndarray, excluded: np.ndarray, target: int) -> np.ndarray:
    """``image[~excluded][::step]`` with the step that keeps about ``target`` values, taken
    a block of rows at a time so the kept pixels are never all copied out."""
    step = max(1, (excluded.size - int(np.count_nonzero(excluded))) // target)
    parts, seen = [], 0
    for top in range(0, image.shape[0], SAMPLE_ROWS):
        kept = image[top : top + SAMPLE_ROWS][~excluded[top : top + SAMPLE_ROWS]]
        parts.append(kept[-seen % step :: step])
        seen += kept.size
    return np.concatenate(parts) if parts else image[:0].ravel()


def _concat_footprints(fps: list[Footprint]) -> tuple[np.ndarray, ...]:
    """One flat list of every footprint's pixels, tagged with the source index."""
    if not fps:
        z = np.zeros(0, np.int64)
        return z, z, z, np.zeros(0, np.float32)
    ys, xs, vals, src = [], [], [], []
    for k, fp in enumerate(fps):
        y, x = fp.indices()
        ys.append(y)
        xs.append(x)
        vals.append(fp.image if fp.image is not None else np.zeros(len(y), np.float32))
        src.append(np.full(len(y), k, dtype=np.int64))
    return (
        np.concatenate(src),
        np.concatenate(ys).astype(np.int64),
        np.concatenate(xs).astype(np.int64),
        np.concatenate(vals).astype(np.float32),
    )


def psf_kernels(psf: PsfModel, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, K, K) centred PSF kernels at each position (batched when the model can)."""
    batched = getattr(psf, "kernels", None)
    if batched is not None:
        return batched(np.asarray(x, float), np.asarray(y, float))
    if len(x) == 0:
        k = psf.kernel(0.0, 0.0)
        return np.zeros((0,) + k.shape)
    return np.stack([psf.kernel(float(a), float(b)) for a, b in zip(x, y, strict=True)])


def _resize(cube: np.ndarray, size: int) -> np.ndarray:
    """Crop or zero-pad the last two axes of a centred cube to ``size``."""
    k = cube.shape[-1]
    if k == size:
        return cube
    if k > size:
        c = (k - size) // 2
        return cube[:, c : c + size, c : c + size]
    p = (size - k) // 2
    return np.pad(cube, ((0, 0), (p, p), (p, p)))


def shift_axis(cube: np.ndarray, shift: np.ndarray, axis: int, order: int = 5
               ) -> np.ndarray:
    """Shift each stamp of a float64 cube by its own ``shift`` along ``axis`` (1: y, 2: x)
    with Lanczos interpolation; shifts are expected within ±1 pixel.

    Costs 2·order passes over the cube, whatever the number of stamps: stamps sharing a
    whole-pixel part of their shift (two or three groups) read plain slices.
    """
    n, s, _ = cube.shape
    shift = np.asarray(shift, float)
    whole = np.floor(-shift).astype(np.int64)
    weights = lanczos_weights(-shift - whole, order)  # (N, 2*order)
    pad = order + 2
    padded = np.pad(cube, [(0, 0)] + [(pad, pad) if a == axis else (0, 0) for a in (1, 2)])
    acc = np.zeros_like(cube)
    for step in np.unique(whole):
        group = np.nonzero(whole == step)[0]
        every = len(group) == n
        src = padded if every else padded[group]
        part = np.zeros((len(group), s, s))
        for k, off in enumerate(range(-order + 1, order + 1)):
            lo = pad + step + off
            taken = src[:, :, lo : lo + s] if axis == 2 else src[:, lo : lo + s, :]
            part += weights[group, k, None, None] * taken
        if every:
            acc = part
        else:
            acc[group] = part
    return acc


def shift_cube(cube: np.ndarray, dx: np.ndarray, dy: np.ndarray, order: int = 5) -> np.ndarray:
    """Shift each stamp of a cube by its own (dx, dy) with separable Lanczos interpolation:
    ``out[k](x, y) = cube[k](x - dx[k], y - dy[k])``, along x and then along y."""
    along_x = shift_axis(cube.astype(np.float64), dx, 2, order)
    return shift_axis(along_x, dy, 1, order)
