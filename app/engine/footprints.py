"""Footprints: the pixels a detection covers, as spans, with its peaks.

A footprint is LSST's ``afw.detection.Footprint``: a list of spans ``(y, x0, x1)`` (x1
inclusive), a bounding box and a list of peaks sorted by height. A heavy footprint also
carries the image, mask and variance values of its pixels, flattened in span order, as
``HeavyFootprint.getImageArray()`` returns them. Spans are derived from a label image in one
vectorized pass, never by walking pixels.

Coordinates here are array coordinates of the exposure they came from (0-based).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PEAK_DTYPE = np.dtype([("id", "i8"), ("x", "i4"), ("y", "i4"), ("value", "f8")])
SPAN_DTYPE = np.dtype([("y", "i4"), ("x0", "i4"), ("x1", "i4")])


@dataclass
class Footprint:
    """One detection's pixels (spans) and peaks, optionally heavy."""

    spans: np.ndarray  # SPAN_DTYPE, sorted by (y, x0)
    peaks: np.ndarray = field(default_factory=lambda: np.zeros(0, PEAK_DTYPE))
    image: np.ndarray | None = None  # heavy: pixel values in span order
    mask: np.ndarray | None = None
    variance: np.ndarray | None = None

    @property
    def area(self) -> int:
        """Number of pixels."""
        return int((self.spans["x1"] - self.spans["x0"] + 1).sum())

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), inclusive, as LSST's Box2I min and max."""
        return (
            int(self.spans["x0"].min()),
            int(self.spans["y"].min()),
            int(self.spans["x1"].max()),
            int(self.spans["y"].max()),
        )

    @property
    def is_heavy(self) -> bool:
        return self.image is not None

    def indices(self) -> tuple[np.ndarray, np.ndarray]:
        """(ys, xs) of every pixel, in span order (computed once; spans do not change)."""
        cached = self.__dict__.get("_indices")
        if cached is not None and cached[0] is self.spans:
            return cached[1], cached[2]
        lengths = self.spans["x1"] - self.spans["x0"] + 1
        ys = np.repeat(self.spans["y"], lengths)
        starts = np.repeat(self.spans["x0"] - np.cumsum(lengths) + lengths, lengths)
        xs = starts + np.arange(lengths.sum())
        self.__dict__["_indices"] = (self.spans, ys, xs)
        return ys, xs

    def make_heavy(self, image: np.ndarray, mask: np.ndarray, variance: np.ndarray) -> Footprint:
        """A copy carrying the pixel values of the given planes (afw's makeHeavy)."""
        ys, xs = self.indices()
        return Footprint(
            spans=self.spans,
            peaks=self.peaks,
            image=image[ys, xs].copy(),
            mask=mask[ys, xs].copy(),
            variance=variance[ys, xs].copy(),
        )

    def shifted(self, dx: int, dy: int) -> Footprint:
        """A copy with spans and peaks moved by (dx, dy): e.g. from the array frame to the
        parent frame (``dx, dy = xy0``); pixel values are shared."""
        spans = self.spans.copy()
        spans["x0"] += dx
        spans["x1"] += dx
        spans["y"] += dy
        peaks = self.peaks.copy()
        peaks["x"] += dx
        peaks["y"] += dy
        return Footprint(spans=spans, peaks=peaks, image=self.image, mask=self.mask,
                         variance=self.variance)

    def unflatten(self, values: np.ndarray, fill: float = 0) -> np.ndarray:
        """Place span-ordered values into a bbox-sized 2-d array (afw's spans.unflatten)."""
        x0, y0, x1, y1 = self.bbox
        out = np.full((y1 - y0 + 1, x1 - x0 + 1), fill, dtype=np.asarray(values).dtype)
        ys, xs = self.indices()
        out[ys - y0, xs - x0] = values
        return out

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether integer pixels (x, y) are in the footprint."""
        x = np.asarray(x)
        y = np.asarray(y)
        rows = np.searchsorted(self.spans["y"], y, side="left")
        inside = np.zeros(np.shape(x), dtype=bool)
        # a row may hold several spans: check each span of the row
        for k in range(int(np.bincount(self.spans["y"] - self.spans["y"].min()).max())):
            idx = np.clip(rows + k, 0, len(self.spans) - 1)
            span = self.spans[idx]
            inside |= (span["y"] == y) & (span["x0"] <= x) & (x <= span["x1"])
        return inside


def spans_from_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every run of equal non-zero label along rows, in one pass.

    Returns ``(spans, span_labels, offsets)``: spans sorted by label then (y, x0), the label of
    each, and ``offsets`` such that the spans of the k-th distinct label (ascending) are
    ``spans[offsets[k]:offsets[k+1]]``.
    """
    h, w = labels.shape
    # (h, w+1): True at column boundary x where a run starts or ends, the image seen as
    # padded with zeros on both sides (not copied into a padded array)
    change = np.empty((h, w + 1), dtype=bool)
    change[:, 0] = labels[:, 0] != 0
    change[:, w] = labels[:, w - 1] != 0
    np.not_equal(labels[:, 1:], labels[:, :-1], out=change[:, 1:w])
    ys, xs = np.nonzero(change)
    # at a boundary, the run to the right starts (if non-zero) and the one to the left ends
    right = np.where(xs < w, labels[ys, np.minimum(xs, w - 1)], 0)
    left = np.where(xs > 0, labels[ys, np.maximum(xs - 1, 0)], 0)
    starts = right != 0
    ends = left != 0
    sy, sx, slab = ys[starts], xs[starts], right[starts]
    ey, ex = ys[ends], xs[ends] - 1
    # starts and ends come in the same (y, x) order, and runs do not nest
    spans = np.empty(len(sy), SPAN_DTYPE)
    spans["y"], spans["x0"], spans["x1"] = sy, sx, ex
    assert np.array_equal(sy, ey)
    order = np.lexsort((spans["x0"], spans["y"], slab))
    spans, slab = spans[order], slab[order]
    uniq, first = np.unique(slab, return_index=True)
    offsets = np.append(first, len(slab))
    return spans, slab, offsets


def spans_from_pixels(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Spans of a set of pixels given in (y, x) order (as ``Footprint.indices`` returns)."""
    if len(ys) == 0:
        return np.zeros(0, SPAN_DTYPE)
    breaks = np.nonzero((np.diff(ys) != 0) | (np.diff(xs) != 1))[0] + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks - 1, [len(ys) - 1]])
    spans = np.empty(len(starts), SPAN_DTYPE)
    spans["y"], spans["x0"], spans["x1"] = ys[starts], xs[starts], xs[ends]
    return spans


def spans_to_mask(spans: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean image with the spans' pixels set."""
    out = np.zeros(shape, dtype=bool)
    fp = Footprint(spans=spans)
    ys, xs = fp.indices()
    out[ys, xs] = True
    return out


@dataclass
class FootprintSet:
    """All footprints of one detection pass over an image of ``shape``."""

    footprints: list[Footprint]
    shape: tuple[int, int]
    labels: np.ndarray | None = None  # footprint i has value i+1; kept when built from one

    def __len__(self) -> int:
        return len(self.footprints)

    def __iter__(self):
        return iter(self.footprints)

    def __getitem__(self, i: int) -> Footprint:
        return self.footprints[i]

    @classmethod
    def from_labels(cls, labels: np.ndarray, peaks: list[np.ndarray] | None = None) -> FootprintSet:
        """One footprint per distinct non-zero label, in ascending label order."""
        spans, _, offsets = spans_from_labels(labels)
        fps = []
        for k in range(len(offsets) - 1):
            pk = peaks[k] if peaks is not None else np.zeros(0, PEAK_DTYPE)
            fps.append(Footprint(spans=spans[offsets[k] : offsets[k + 1]], peaks=pk))
        dense = labels if len(fps) == int(labels.max(initial=0)) else None
        return cls(fps, labels.shape, labels=dense)

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> FootprintSet:
        """One footprint per 8-connected region of a boolean mask (no peaks)."""
        from scipy import ndimage

        labels, _ = ndimage.label(np.asarray(mask, bool), structure=np.ones((3, 3), bool))
        return cls.from_labels(labels)

    def to_labels(self) -> np.ndarray:
        """Segmentation image: footprint i (0-based) has value i+1, background 0."""
        if self.labels is not None:
            return self.labels
        labels = np.zeros(self.shape, dtype=np.int32)
        for i, fp in enumerate(self.footprints):
            ys, xs = fp.indices()
            labels[ys, xs] = i + 1
        return labels

    def to_mask(self) -> np.ndarray:
        """Boolean image: True inside any footprint."""
        return self.to_labels() > 0

    def make_heavy(self, image: np.ndarray, mask: np.ndarray, variance: np.ndarray) -> FootprintSet:
        heavy = [fp.make_heavy(image, mask, variance) for fp in self.footprints]
        return FootprintSet(heavy, self.shape, labels=self.labels)
