"""Heavy footprints to and from FITS: spans, peaks and pixel values, by source id.

Three binary tables: SPANS (id, y, x0, x1), PEAKS (id, x, y, value) and PIXELS (id, image,
mask, variance, in span order, as ``HeavyFootprint.getImageArray()`` gives them). Positions
are in the parent pixel frame (array coordinates + ``xy0``).
"""

from __future__ import annotations

import os
from typing import BinaryIO

import numpy as np
from astropy.io import fits

from app.engine.footprints import PEAK_DTYPE, SPAN_DTYPE, Footprint


def footprints_hdul(footprints: dict[int, Footprint], xy0: tuple[int, int] = (0, 0)
                    ) -> fits.HDUList:
    """An HDU list holding the footprints (heavy ones with their pixels)."""
    ids = np.array(sorted(footprints), dtype=np.int64)
    fps = [footprints[int(i)] for i in ids]
    ox, oy = xy0
    n_spans = np.array([len(f.spans) for f in fps], dtype=np.int64)
    n_peaks = np.array([len(f.peaks) for f in fps], dtype=np.int64)
    n_pix = np.array([f.area if f.is_heavy else 0 for f in fps], dtype=np.int64)

    def cat(arrays: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype)

    spans = cat([f.spans for f in fps], SPAN_DTYPE)
    peaks = cat([f.peaks for f in fps], PEAK_DTYPE)
    heavy = [f for f in fps if f.is_heavy]
    spans_hdu = fits.BinTableHDU.from_columns([
        fits.Column("id", "K", array=np.repeat(ids, n_spans)),
        fits.Column("y", "J", array=spans["y"] + oy, unit="pix"),
        fits.Column("x0", "J", array=spans["x0"] + ox, unit="pix"),
        fits.Column("x1", "J", array=spans["x1"] + ox, unit="pix"),
    ], name="SPANS")
    peaks_hdu = fits.BinTableHDU.from_columns([
        fits.Column("id", "K", array=np.repeat(ids, n_peaks)),
        fits.Column("x", "J", array=peaks["x"] + ox, unit="pix"),
        fits.Column("y", "J", array=peaks["y"] + oy, unit="pix"),
        fits.Column("value", "D", array=peaks["value"], unit="ct"),
    ], name="PEAKS")
    pixels_hdu = fits.BinTableHDU.from_columns([
        fits.Column("id", "K", array=np.repeat(ids, n_pix)),
        fits.Column("image", "E", array=cat([f.image for f in heavy], np.float32), unit="ct"),
        fits.Column("mask", "J", array=cat([f.mask for f in heavy], np.int32)),
        fits.Column("variance", "E", array=cat([f.variance for f in heavy], np.float32),
                    unit="ct2"),
    ], name="PIXELS")
    primary = fits.PrimaryHDU()
    primary.header["NFOOTPR"] = (len(ids), "number of footprints")
    return fits.HDUList([primary, spans_hdu, peaks_hdu, pixels_hdu])


def write_footprints(footprints: dict[int, Footprint], target: str | os.PathLike | BinaryIO,
                     xy0: tuple[int, int] = (0, 0)) -> None:
    """Write footprints (by source id) to a FITS file or file object."""
    footprints_hdul(footprints, xy0).writeto(target, overwrite=True)


def read_footprints(source: str | os.PathLike | BinaryIO) -> dict[int, Footprint]:
    """Read footprints written by :func:`write_footprints` (positions in the parent frame)."""
    with fits.open(source) as hdul:
        spans_t = hdul["SPANS"].data
        peaks_t = hdul["PEAKS"].data
        pix_t = hdul["PIXELS"].data
        out: dict[int, Footprint] = {}
        for sid in np.unique(np.asarray(spans_t["id"])):
            sel = np.asarray(spans_t["id"]) == sid
            spans = np.zeros(int(sel.sum()), SPAN_DTYPE)
            spans["y"], spans["x0"], spans["x1"] = (spans_t["y"][sel], spans_t["x0"][sel],
                                                    spans_t["x1"][sel])
            psel = np.asarray(peaks_t["id"]) == sid
            peaks = np.zeros(int(psel.sum()), PEAK_DTYPE)
            peaks["x"], peaks["y"], peaks["value"] = (peaks_t["x"][psel], peaks_t["y"][psel],
                                                      peaks_t["value"][psel])
            fp = Footprint(spans=spans, peaks=peaks)
            xsel = np.asarray(pix_t["id"]) == sid
            if xsel.any():
                fp.image = np.asarray(pix_t["image"][xsel], np.float32)
                fp.mask = np.asarray(pix_t["mask"][xsel], np.int32)
                fp.variance = np.asarray(pix_t["variance"][xsel], np.float32)
            out[int(sid)] = fp
    return out
