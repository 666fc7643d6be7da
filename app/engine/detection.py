"""Source detection, LSST's SourceDetectionTask algorithm.

1. Smooth the image with a normalized Gaussian of the PSF's sigma, kernel width
   ``(int(7σ + 0.5) // 2) * 2 + 1``; the variance is smoothed with the kernel squared.
   Pixels where the kernel does not fit are marked EDGE and are not searched.
2. Threshold the smoothed image: ``stdev`` = value × clipped stdev of the smoothed image
   (BAD, SAT, EDGE, NO_DATA left out); ``pixel_stdev`` = value × sqrt(smoothed variance) per
   pixel; ``variance`` = value × sqrt(clipped variance of the smoothed image) (afw's rule);
   ``value`` = the value itself. ``includeThresholdMultiplier`` keeps only footprints whose
   peak reaches threshold × multiplier.
3. 8-connected footprints of at least ``minPixels``; peaks are the local maxima of the
   smoothed image inside each footprint, sorted by height.
4. ``doTempLocalBackground`` (applyTempLocalBackground): a background of fine cells
   (``tempLocalBackground``, 64 px) is fitted to the image with its sources in and taken from
   the smoothed image; the threshold is made again on that, and every footprint with more than
   ``nPeaksMaxSimple`` peaks takes as its peaks the local maxima of the footprints found above
   it inside its box (updatePeaks), keeping its brightest peak if none is left. The wings of
   bright stars and galaxies sit on that local background, so their noise bumps make no peaks.
   The background is interpolated with Akima splines, as LSST configures it
   (`tempLocalBackground`: `app.engine.background` with `useApprox` off). As LSST, the
   peaks are updated in the footprints as found, before growing: updating them in the grown
   footprints too dropped noise bumps in bright objects' wings but lost a third of the faint
   stars next to galaxies. (skyphot keeps its own ``minPeakContrast`` cull as an option,
   off by default.)
5. Grow each footprint by ``int(nSigmaToGrow × σ + 0.5)`` pixels with a disk (isotropic);
   footprints that touch after growing merge, keeping all their peaks.
6. Set DETECTED (and DETECTED_NEGATIVE) mask planes; optionally re-estimate the background
   with the detections masked and subtract it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from app.engine.background import estimate_background
from app.engine.config import DetectionConfig
from app.engine.exposure import Exposure
from app.engine.footprints import PEAK_DTYPE, FootprintSet
from app.engine.masks import MaskPlanes
from app.engine.psf import SIGMA_TO_FWHM
from app.engine.stats import clipped_stats

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


class NoNoiseError(ValueError):
    """The image's noise cannot be measured (every pixel masked, or a constant image)."""


def kernel_width(sigma: float, n_sigma: float = 7.0) -> int:
    """LSST's calculateKernelSize: odd width covering ``n_sigma`` × sigma in all."""
    return (int(sigma * n_sigma + 0.5) // 2) * 2 + 1


def gaussian_kernel_1d(sigma: float) -> np.ndarray:
    """Normalized sampled Gaussian of the LSST detection kernel width."""
    half = kernel_width(sigma) // 2
    x = np.arange(-half, half + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


COLUMN_BLOCK_ROWS = 128  # rows per block of the column pass: a block's columns stay in cache


def _correlate_columns(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``ndimage.correlate1d`` along axis 0 (edges repeated), a block of rows at a time.

    Along axis 0 ndimage reads every column of the whole image with a stride of a row,
    which misses the cache; a block of rows plus the kernel's half-width above and below
    fits in it, and runs ~1.6 × faster. Each output pixel is computed as in one call over
    the whole image, so the result is the same to the bit.
    """
    out = np.empty_like(image)
    h, half = image.shape[0], len(kernel) // 2
    for start in range(0, h, COLUMN_BLOCK_ROWS):
        stop = min(start + COLUMN_BLOCK_ROWS, h)
        lo, hi = max(start - half, 0), min(stop + half, h)
        block = ndimage.correlate1d(image[lo:hi], kernel, axis=0, mode="nearest")
        out[start:stop] = block[start - lo:stop - lo]
    return out


def smooth(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable correlation with ``kernel`` on both axes (float32, edges repeated).

    The row pass writes over the column pass's output (ndimage filters a line at a time
    from a buffered copy), so one full-size array is allocated, not two.
    """
    out = _correlate_columns(image, kernel)
    return ndimage.correlate1d(out, kernel, axis=1, mode="nearest", output=out)


@dataclass
class DetectionResult:
    """What one detection pass found."""

    positive: FootprintSet | None
    negative: FootprintSet | None
    threshold: float  # the pixel threshold applied to the smoothed image (value types)
    sigma: float  # smoothing sigma, pixels
    background: np.ndarray | None  # the re-estimated background that was subtracted
    noise_scale: float = 1.0  # pixel_stdev: how much the variance plane's noise was scaled

    @property
    def num_pos_peaks(self) -> int:
        return 0 if self.positive is None else sum(len(f.peaks) for f in self.positive)


def _threshold(
    smoothed: np.ndarray, variance: np.ndarray, kernel: np.ndarray, stdev: float,
    config: DetectionConfig,
) -> np.ndarray | float:
    """The pixel threshold for the smoothed image: a number, or an image for pixel_stdev."""
    t = config.thresholdType
    if t == "value":
        return config.thresholdValue
    if t == "pixel_stdev":
        smoothed_var = smooth(variance, kernel**2)
        return config.thresholdValue * np.sqrt(np.maximum(smoothed_var, 0))
    if t == "variance":
        # afw's rule: the clipped stdev of the whole smoothed image, masks not consulted
        _, _, sd = clipped_stats(smoothed[np.isfinite(smoothed)])
        return float(config.thresholdValue * sd)
    return float(config.thresholdValue * stdev)


STATS_SAMPLES = 2_000_000  # pixels the noise of the smoothed image is estimated from


def smoothed_stdev(smoothed: np.ndarray, mask: np.ndarray, excluded: int, half: int) -> float:
    """Clipped stdev of the smoothed image from a regular subsample of its searched pixels.

    Every s-th pixel along each axis (s chosen to keep about two million), leaving out the
    ``half``-pixel border and pixels whose ``mask`` has a bit of ``excluded`` (tested on the
    subsample only): the smoothing correlates neighbours anyway, so the estimate is as good
    as with every pixel (relative error ~1e-3) at a fraction of the cost of sorting 16
    million values.
    """
    h, w = smoothed.shape
    step = max(1, int(np.sqrt(smoothed.size / STATS_SAMPLES)))
    ys, xs = np.arange(0, h, step), np.arange(0, w, step)
    inside = (((ys >= half) & (ys < h - half))[:, None]
              & ((xs >= half) & (xs < w - half))[None, :])
    sub = smoothed[::step, ::step][inside & ((mask[::step, ::step] & excluded) == 0)]
    _, _, sd = clipped_stats(sub)
    return float(sd)


RESCALE_TOLERANCE = 0.1  # a variance plane within 10 % of the sky's real noise is kept


def sky_noise_scale(smoothed: np.ndarray, sd: np.ndarray, mask: np.ndarray, excluded: int,
                    half: int, grow: int, config: DetectionConfig) -> float:
    """The factor by which the variance plane's prediction of the smoothed image's noise
    must be scaled to match the blank sky's real spread.

    LSST's DynamicDetectionTask measures this on sky objects placed away from a first
    detection; here it is the clipped spread of the significance (smoothed image over its
    predicted noise) at a regular sample of pixels outside the first pass's grown
    footprints. A variance plane that describes each pixel but not their correlation (a
    coadd or a resampled image) predicts too little noise once the image is smoothed, and a
    threshold on it would find noise. Departures: LSST runs this on coadds only, and
    scales both ways; skyphot runs it on every image and only raises the threshold, by the
    factor returned here when it exceeds 1.1 (a variance plane that overstates the noise in
    part of an image must not lower the threshold everywhere else).
    """
    above = smoothed >= config.thresholdValue * sd
    _set_border(above, half, False)
    covered = grow_mask(above, grow, config.isotropicGrow)
    h, w = smoothed.shape
    step = max(1, int(np.sqrt(smoothed.size / STATS_SAMPLES)))
    sub = (slice(half, h - half, step), slice(half, w - half, step))
    blank = ~covered[sub] & ((mask[sub] & excluded) == 0) & (sd[sub] > 0)
    if blank.sum() < 100:
        return 1.0
    significance = smoothed[sub][blank] / sd[sub][blank]
    _, _, spread = clipped_stats(significance)
    return float(spread) if np.isfinite(spread) and spread > 0 else 1.0


def _background_mask(mask: np.ndarray, planes: MaskPlanes, sigma: float,
                     config: DetectionConfig) -> np.ndarray:
    """The mask the background is re-estimated with: the detections grown further by
    ``backgroundMaskGrowFwhm`` × the PSF's FWHM.

    Departure from LSST, which masks the footprints as grown for detection (2.4 σ): the
    wings of stars and galaxies beyond them raise the cells' clipped means, by 0.02–0.05 of
    the sky noise on simulated fields, which every aperture then carries (1 % of a PSF S/N
    100 star's 12-px flux) and which pulls blank-sky forced fluxes below zero. Grown by two
    FWHM, the bias on a field where galaxies are half the bright detections fell from 0.055
    to 0.009 σ; much wider growth empties the cells of crowded fields.
    """
    grow = int(round(config.backgroundMaskGrowFwhm * sigma * SIGMA_TO_FWHM))
    if grow <= 0:
        return mask
    covered = dilate_disk(planes.any(mask, ["DETECTED", "DETECTED_NEGATIVE"]), grow)
    out = mask.copy()
    out[covered] |= np.int32(planes.bitmask("DETECTED"))
    return out


def _widen_rows(m: np.ndarray) -> None:
    """Dilate every row of a 0/1 uint8 image by one pixel each side, in place."""
    right = m[:, :-1].copy()
    np.maximum(m[:, :-1], m[:, 1:], out=m[:, :-1])
    np.maximum(m[:, 1:], right, out=m[:, 1:])


def dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a disk of ``radius`` pixels (afw's CIRCLE stencil).

    A disk is a stack of horizontal segments: the rows are widened one pixel at a time
    through the distinct half-widths, and each widened image is OR-ed in at the vertical
    offsets of that half-width. That is ~4r cheap passes instead of a 2-d structuring element
    over every pixel.
    """
    if radius <= 0:
        return mask.copy()
    row = mask.astype(np.uint8)
    out = np.zeros_like(row)
    h = row.shape[0]
    offsets: dict[int, list[int]] = {}
    for dy in range(-radius, radius + 1):
        offsets.setdefault(int(np.floor(np.sqrt(radius * radius - dy * dy))), []).append(dy)
    for hw in range(radius + 1):
        if hw:
            _widen_rows(row)
        for dy in offsets.get(hw, []):
            if dy >= 0:
                np.maximum(out[dy:], row[: h - dy], out=out[dy:])
            else:
                np.maximum(out[: h + dy], row[-dy:], out=out[: h + dy])
    return out.view(bool)


def local_maxima(values: np.ndarray, inside: np.ndarray, candidates: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs) of pixels ``inside`` footprints not lower than any 8-neighbour inside one.

    ``candidates`` are flat indices of pixels to consider (those inside may be among
    them); only they are visited, not the whole image.
    """
    h, w = inside.shape
    flat_inside = inside.ravel()
    cand = candidates[flat_inside[candidates]]
    ys, xs = np.divmod(cand, w)
    flat_values = values.ravel()
    centre = flat_values[cand]
    is_max = np.ones(len(cand), dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                ny, nx = ys + dy, xs + dx
                idx = np.clip(ny, 0, h - 1) * w + np.clip(nx, 0, w - 1)
                on = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w) & flat_inside[idx]
                neighbour = np.where(on, flat_values[idx], -np.inf)
                is_max &= centre >= neighbour
    return ys[is_max], xs[is_max]


def cull_peaks(peaks: np.ndarray, smoothed: np.ndarray, min_contrast: float) -> np.ndarray:
    """Keep the highest peak and those rising ``min_contrast`` above their col.

    ``peaks`` are sorted by height. A peak's col is approximated by the highest of the minima
    along the straight lines to each higher kept peak; the true col (over all paths) is at
    least that low, so a real peak is never dropped for want of a better path.
    """
    if len(peaks) < 2 or min_contrast <= 0:
        return peaks
    keep = [0]
    for i in range(1, len(peaks)):
        x1, y1, v1 = peaks["x"][i], peaks["y"][i], peaks["value"][i]
        col = -np.inf
        for j in keep:
            x0, y0 = peaks["x"][j], peaks["y"][j]
            n = int(np.ceil(np.hypot(x1 - x0, y1 - y0))) + 1
            t = np.linspace(0.0, 1.0, n)
            line = smoothed[np.round(y0 + t * (y1 - y0)).astype(int),
                            np.round(x0 + t * (x1 - x0)).astype(int)]
            col = max(col, float(line.min()))
        if v1 - col >= min_contrast:
            keep.append(i)
    return peaks[keep]


def kept_labels(above: np.ndarray, include: np.ndarray | None, min_pixels: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of ``above`` of at least ``min_pixels`` that have a pixel in
    ``include`` (None: every component qualifies), labelled 1..n, and the flat indices of
    all pixels of ``above`` (a small part of the image, so later steps visit only them)."""
    labels, n = ndimage.label(above, structure=EIGHT_CONNECTED)
    nz = np.flatnonzero(labels)
    if n == 0:
        return labels, nz
    lab = labels.ravel()[nz]
    keep = np.bincount(lab, minlength=n + 1) >= min_pixels
    if include is not None:
        keep &= np.bincount(lab[include.ravel()[nz]], minlength=n + 1) > 0
    keep[0] = False
    relabel = np.zeros(n + 1, dtype=np.int32)
    relabel[keep] = np.arange(1, keep.sum() + 1)
    labels.ravel()[nz] = relabel[lab]
    return labels, nz


def grow_mask(mask: np.ndarray, grow: int, isotropic: bool) -> np.ndarray:
    """Grow footprints' pixels by ``grow``: a disk (isotropic) or repeated 4-neighbour steps."""
    if grow <= 0:
        return mask
    if isotropic:
        return dilate_disk(mask, grow)
    cross = ndimage.generate_binary_structure(2, 1)
    return ndimage.binary_dilation(mask, structure=cross, iterations=grow)


def footprint_mask(above: np.ndarray, include: np.ndarray | None, *, min_pixels: int,
                   grow: int, isotropic: bool) -> np.ndarray:
    """The pixels ``find_footprints`` would return, without labels, peaks or spans: all a
    polarity that is only masked (for the background re-estimate) needs."""
    if min_pixels > 1 or include is not None:
        above = kept_labels(above, include, min_pixels)[0] > 0
    return grow_mask(above, grow, isotropic)


@dataclass
class LocalPeaks:
    """What updatePeaks needs: the smoothed image less the temporary local background (of the
    polarity searched), its threshold, and the rules of the first search."""

    values: np.ndarray
    threshold: np.ndarray | float
    include_factor: float  # includeThresholdMultiplier, applied when > 1
    n_simple: int  # nPeaksMaxSimple


def update_peaks(py: np.ndarray, px: np.ndarray, labels: np.ndarray, values: np.ndarray,
                 local: LocalPeaks, min_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """LSST's updatePeaks: new peaks for every footprint with more than ``n_simple`` of them.

    ``(py, px)`` are the peaks of the footprints ``labels`` (1..n), found on ``values``. In the
    box of each busy footprint, footprints are found on ``local.values`` above
    ``local.threshold`` (``min_pixels`` and the include multiplier as in the first search);
    their local maxima that lie in the busy footprint replace its peaks. A footprint left
    without any keeps its highest original peak.
    """
    plab = labels[py, px]
    busy = np.nonzero(np.bincount(plab, minlength=int(labels.max()) + 1) > local.n_simple)[0]
    busy = busy[busy > 0]
    if not len(busy):
        return py, px
    keep = ~np.isin(plab, busy)
    new_y, new_x = [py[keep]], [px[keep]]
    boxes = ndimage.find_objects(labels)
    for k in busy:
        sl = boxes[k - 1]
        sub = local.values[sl]
        thr = local.threshold[sl] if np.ndim(local.threshold) else local.threshold
        include = sub >= thr * local.include_factor if local.include_factor > 1 else None
        sub_labels, nz = kept_labels(sub >= thr, include, min_pixels)
        ys, xs = local_maxima(sub, sub_labels > 0, nz)
        own = labels[sl][ys, xs] == k
        if own.any():
            new_y.append(ys[own] + sl[0].start)
            new_x.append(xs[own] + sl[1].start)
        else:
            mine = np.nonzero(plab == k)[0]
            top = mine[np.argmax(values[py[mine], px[mine]])]
            new_y.append(py[top: top + 1])
            new_x.append(px[top: top + 1])
    return np.concatenate(new_y), np.concatenate(new_x)


def find_footprints(
    smoothed: np.ndarray,
    above: np.ndarray,
    include: np.ndarray | None,
    *,
    min_pixels: int,
    grow: int,
    isotropic: bool,
    min_contrast: float = 0.0,
    local: LocalPeaks | None = None,
) -> FootprintSet:
    """Footprints of the pixels ``above`` threshold, their peaks, grown by ``grow`` pixels.

    ``include`` marks pixels above threshold × includeThresholdMultiplier: a footprint is kept
    only if it has one (None when the multiplier is ≤ 1, so every footprint has). Peaks
    (pixels ≥ their 8 neighbours in the smoothed image, inside the footprint) are found
    before growing, replaced by those above the local background when ``local`` is given
    (`update_peaks`), and sorted by their height in ``smoothed`` within each footprint.
    (LSST keeps updatePeaks' peaks in the order it found them, each with its height above the
    local background; here every peak's value is its height in the smoothed image, the same
    quantity for footprints whose peaks were updated and those whose peaks were not.)
    """
    if min_pixels > 1 or include is not None or grow <= 0 or local is not None:
        labels, nz = kept_labels(above, include, min_pixels)
        kept = labels > 0
    else:  # every component is kept and growing relabels them: no labelling before that
        labels, kept, nz = None, above, np.flatnonzero(above)
    if len(nz) == 0:
        return FootprintSet([], smoothed.shape, labels=np.zeros(smoothed.shape, np.int32))
    py, px = local_maxima(smoothed, kept, nz)
    before = labels
    if grow > 0:
        grown = grow_mask(kept, grow, isotropic)
        labels = ndimage.label(grown, structure=EIGHT_CONNECTED)[0]
    if local is not None:  # in the footprints as found, before growing, as LSST
        py, px = update_peaks(py, px, before, smoothed, local, min_pixels)

    # group peaks by final footprint, sorted by height within each
    plab = labels[py, px]
    pval = smoothed[py, px].astype(np.float64)
    order = np.lexsort((-pval, plab))
    py, px, plab, pval = py[order], px[order], plab[order], pval[order]
    fps = FootprintSet.from_labels(labels)
    bounds = np.searchsorted(plab, np.arange(1, len(fps) + 2))
    for k, fp in enumerate(fps.footprints):
        sl = slice(bounds[k], bounds[k + 1])
        peaks = np.zeros(sl.stop - sl.start, PEAK_DTYPE)
        peaks["x"], peaks["y"], peaks["value"] = px[sl], py[sl], pval[sl]
        fp.peaks = cull_peaks(peaks, smoothed, min_contrast)
    return fps


def _set_border(image: np.ndarray, half: int, value: object) -> None:
    """Set the ``half``-pixel border of ``image`` to ``value`` (OR-ed in for an int mask)."""
    h, w = image.shape
    for region in (image[:half], image[h - half:], image[:, :half], image[:, w - half:]):
        if image.dtype == bool:
            region[...] = value
        else:
            region |= value


def _temp_local_background(exposure: Exposure, smoothed: np.ndarray, kernel: np.ndarray,
                           half: int, threshold: np.ndarray | float, config: DetectionConfig
                           ) -> tuple[np.ndarray, np.ndarray | float] | None:
    """applyTempLocalBackground: the smoothed image less a fine-binned background, and the
    threshold made again on it (None when ``doTempLocalBackground`` is off).

    The background is fitted to the unsmoothed image before any DETECTED bit is set, so the
    sources' own wings are part of it, as in LSST; it is taken from a copy of the smoothed
    image, which the footprints are still drawn from. Only the ``stdev`` and ``variance``
    thresholds depend on the image; the others are ``threshold`` again.
    """
    if not config.doTempLocalBackground:
        return None
    planes = exposure.planes
    # held at its edges beyond the outermost cells (LSST extrapolates): a background only
    # subtracted for the peak search must not run away at the border
    bkg = estimate_background(exposure.image, exposure.mask, planes, config.tempLocalBackground,
                              hold_edges=True)
    local = np.subtract(smoothed, bkg, out=bkg)  # the background's buffer, not a new image
    if config.thresholdType not in ("stdev", "variance"):
        return local, threshold
    stdev = smoothed_stdev(local, exposure.mask,
                           np.int32(planes.bitmask(config.excludeMaskPlanes)), half)
    if not np.isfinite(stdev) or stdev <= 0:
        stdev = 0.0
    return local, _threshold(local, exposure.variance, kernel, float(stdev), config)


def detect(exposure: Exposure, sigma: float, config: DetectionConfig) -> DetectionResult:
    """Run detection on ``exposure`` in place: sets DETECTED/EDGE bits, may subtract background.

    ``sigma`` is the PSF's Gaussian sigma in pixels (determinant radius).
    """
    planes = exposure.planes
    mask = exposure.mask
    mask &= ~np.int32(planes.bitmask(["DETECTED", "DETECTED_NEGATIVE"]))
    kernel = gaussian_kernel_1d(sigma)
    half = len(kernel) // 2
    image = exposure.image.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        image = np.where(np.isfinite(image), image, np.float32(0))
    smoothed = smooth(image, kernel)

    # the kernel does not fit within `half` pixels of the border: EDGE, not searched
    _set_border(mask, half, np.int32(planes.bitmask("EDGE")))
    stdev = smoothed_stdev(smoothed, mask, np.int32(planes.bitmask(config.excludeMaskPlanes)),
                           half)
    if not np.isfinite(stdev) or stdev <= 0:
        if config.thresholdType == "stdev":
            raise NoNoiseError("no usable pixels to measure the image's noise: every pixel is "
                             "masked (BAD, SAT, EDGE or NO_DATA) or the image is constant; "
                             "use thresholdType 'value' for a noiseless image")
        stdev = 0.0
    threshold = _threshold(smoothed, exposure.variance, kernel, float(stdev), config)
    local = _temp_local_background(exposure, smoothed, kernel, half, threshold, config)
    grow = int(config.nSigmaToGrow * sigma + 0.5)
    shape = dict(min_pixels=config.minPixels, grow=grow, isotropic=config.isotropicGrow)
    scale = 1.0
    if config.thresholdType == "pixel_stdev" and config.doRescaleToSkyNoise:
        assert isinstance(threshold, np.ndarray)
        scale = sky_noise_scale(smoothed, threshold / config.thresholdValue, mask,
                                np.int32(planes.bitmask(config.excludeMaskPlanes)), half,
                                grow, config)
        if scale > 1.0 + RESCALE_TOLERANCE:
            threshold *= np.float32(scale)
        else:
            scale = 1.0
    mult = config.includeThresholdMultiplier

    def above(sign: int, factor: float = 1.0) -> np.ndarray:
        # sign × smoothed ≥ threshold × factor, off the border
        out = smoothed >= threshold * factor if sign > 0 else smoothed <= -threshold * factor
        _set_border(out, half, False)
        return out

    def polarity(sign: int, plane: str) -> FootprintSet | None:
        # footprints of one polarity, or only its mask plane when just the background needs it
        include = above(sign, mult) if mult > 1 else None
        bit = np.int32(planes.bitmask(plane))
        if config.thresholdPolarity not in (("positive" if sign > 0 else "negative"), "both"):
            covered = footprint_mask(above(sign), include, **shape)
            np.bitwise_or(mask, bit, out=mask, where=covered)
            return None
        values = smoothed if sign > 0 else -smoothed
        peaks = None
        if local is not None:
            peaks = LocalPeaks(local[0] if sign > 0 else -local[0], local[1], mult,
                               config.nPeaksMaxSimple)
        fps = find_footprints(values, above(sign), include, **shape,
                              min_contrast=config.minPeakContrast * float(stdev), local=peaks)
        np.bitwise_or(mask, bit, out=mask, where=fps.to_labels() > 0)
        if sign < 0:
            for fp in fps:
                fp.peaks["value"] *= -1
        return fps

    result = DetectionResult(None, None, float(np.mean(threshold)), sigma, None, scale)
    if config.thresholdPolarity in ("positive", "both") or config.reEstimateBackground:
        result.positive = polarity(1, "DETECTED")
    if config.thresholdPolarity in ("negative", "both") or config.reEstimateBackground:
        result.negative = polarity(-1, "DETECTED_NEGATIVE")

    if config.reEstimateBackground:
        bkg = estimate_background(exposure.image, _background_mask(mask, planes, sigma, config),
                                  planes, config.background)
        exposure.image -= bkg
        exposure.background = bkg if exposure.background is None else exposure.background + bkg
        result.background = bkg
    if config.thresholdPolarity == "positive":
        mask &= ~np.int32(planes.bitmask("DETECTED_NEGATIVE"))
        result.negative = None
    elif config.thresholdPolarity == "negative":
        mask &= ~np.int32(planes.bitmask("DETECTED"))
        result.positive = None
    return result
