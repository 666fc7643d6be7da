"""Heavy footprints of a job, kept as one archive, and one footprint as a FITS file.

The archive concatenates every footprint's spans, peaks and pixel values with offset arrays,
so it is one artifact per job however many sources there are, and one footprint is read back
by slicing.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
from astropy.io import fits

from app.engine.footprints import PEAK_DTYPE, SPAN_DTYPE, Footprint
from app.io.frames import xy0_cards

MEDIA_TYPE = "application/x-npz"


def _offsets(lengths: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)


def footprints_archive(footprints: Mapping[int, Footprint]) -> bytes:
    """All footprints, keyed by source id, as ``.npz`` bytes."""
    ids = np.array(sorted(footprints), dtype=np.int64)
    fps = [footprints[int(i)] for i in ids]
    heavy = [fp for fp in fps if fp.is_heavy]
    pixels = [fp.area if fp.is_heavy else 0 for fp in fps]

    def joined(name: str, dtype: np.dtype) -> np.ndarray:
        parts = [getattr(fp, name) for fp in heavy]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    buffer = io.BytesIO()
    np.savez(
        buffer,
        ids=ids,
        span_offsets=_offsets([len(fp.spans) for fp in fps]),
        spans=np.concatenate([fp.spans for fp in fps]) if fps else np.zeros(0, SPAN_DTYPE),
        peak_offsets=_offsets([len(fp.peaks) for fp in fps]),
        peaks=np.concatenate([fp.peaks for fp in fps]) if fps else np.zeros(0, PEAK_DTYPE),
        pixel_offsets=_offsets(pixels),
        image=joined("image", np.dtype(np.float32)),
        mask=joined("mask", np.dtype(np.int32)),
        variance=joined("variance", np.dtype(np.float32)),
    )
    return buffer.getvalue()


def read_footprint(archive: io.BufferedIOBase | str, source_id: int) -> Footprint | None:
    """One footprint from an archive, or None if the source has none."""
    with np.load(archive) as data:
        ids = data["ids"]
        k = int(np.searchsorted(ids, source_id))
        if k >= len(ids) or ids[k] != source_id:
            return None

        def part(name: str) -> np.ndarray:
            offsets = data[f"{name}_offsets"]
            return data[name + "s"][offsets[k] : offsets[k + 1]]

        fp = Footprint(spans=part("span"), peaks=part("peak"))
        offsets = data["pixel_offsets"]
        if offsets[k + 1] > offsets[k]:
            fp.image, fp.mask, fp.variance = (
                data[name][offsets[k] : offsets[k + 1]] for name in ("image", "mask", "variance")
            )
        return fp


def footprint_fits(fp: Footprint, source_id: int, mask_planes: Mapping[str, int]) -> bytes:
    """A heavy footprint as FITS: IMAGE, MASK and VARIANCE cutouts of its bounding box.

    Pixels outside the footprint are NaN (image, variance) and 0 (mask). The cutout's
    origin is the footprint's bbox corner in whatever frame its spans are in (the parent
    frame, as the service gives them), stated as afw's A WCS and ``LTV1``/``LTV2``.
    """
    if not fp.is_heavy:
        raise ValueError(f"footprint of source {source_id} carries no pixels")
    x0, y0, _, _ = fp.bbox
    header = fits.Header()
    header["SOURCEID"] = (source_id, "source id in the job's catalog")
    header.extend(xy0_cards(x0, y0))
    for name, bit in mask_planes.items():
        header[f"HIERARCH MP_{name}"] = bit
    hdus = fits.HDUList([fits.PrimaryHDU(header=header)])
    for name, values, fill in (
        ("IMAGE", fp.image, np.nan),
        ("MASK", fp.mask, 0),
        ("VARIANCE", fp.variance, np.nan),
    ):
        hdus.append(fits.ImageHDU(fp.unflatten(values, fill=fill), header=header, name=name))
    buffer = io.BytesIO()
    hdus.writeto(buffer)
    return buffer.getvalue()
