"""Companion planes of a plain image: variance, weight and data-quality maps, background.

Read as :mod:`app.io.read_options` describes them, checked to match the image pixel for
pixel, and turned into what the exposure holds: a variance (a weight ``w`` gives ``1/w``; a
weight of 0 or less has no data, so its variance is infinite and the reader flags the
pixel NO_DATA), mask bits to add (through the `MaskMap`), and the subtracted background.
LSST's obs_decam builds an exposure from the same three DECam files the same way, except
that it gives zero-weight pixels a huge finite variance rather than NO_DATA.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from app.engine.masks import MaskPlanes
from app.io.background_file import read_background_file
from app.io.errors import ExposureReadError
from app.io.fits_open import (
    ImageLike,
    find_hdu,
    first_image,
    is_image,
    open_fits,
    plane_name,
    require_shape,
)
from app.io.fits_pixels import read_float, read_integers
from app.io.read_options import MaskMap, PlaneRef, ReadOptions

WHAT = {"variance": "the variance map", "weight": "the weight map",
        "mask": "the data-quality map", "background": "the background"}


@dataclass
class Companions:
    """What the companion planes give; None where none was given."""

    variance: np.ndarray | None = None
    variance_source: str = ""  # "weight map oow.fits[#1 N2]", for messages
    mask: np.ndarray | None = None
    background: np.ndarray | None = None
    provenance: dict[str, str] = field(default_factory=dict)


def read_companions(
    hdul: fits.HDUList, image: ImageLike, shape: tuple[int, int], options: ReadOptions,
    planes: MaskPlanes, notes: list[str], max_bytes: int | None = None,
) -> Companions:
    """The companion planes of ``options`` for ``image`` (an HDU of ``hdul``).

    Errors name the companion ("the weight map oow.fits: …") and keep their codes.
    """
    out = Companions()
    for name, ref in options.companions.items():
        what = f"{WHAT[name]} {ref.describe()}"
        try:
            if name == "background":
                if ref.source is None or ref.hdu is not None:
                    raise ExposureReadError(
                        "bad_option", "a background is a file of its own (its BACKGROUND HDU "
                        "or first image is read); give the file without [HDU]")
                out.background = read_background_file(ref.source, shape)
                out.provenance["background"] = f"background file {ref.describe()}"
                continue
            with _companion_hdu(ref, hdul, image, what, notes, max_bytes) as (hdu, where):
                require_shape(hdu, shape, "it",
                              "a companion plane must match the image pixel for pixel")
                if name == "mask":
                    values, blank = read_integers(hdu, what, shape, whole_floats=True)
                    out.mask = dq_to_mask(values, blank, options.mask_map, planes, what, notes)
                    rule = ("nonzero = BAD" if options.mask_map is None
                            else options.mask_map.describe())
                    out.provenance["mask"] = f"data-quality map {where} ({rule})"
                    continue
                plane = read_float(hdu, what, shape)
                out.variance_source = f"{name} map {where}"
                if name == "weight":
                    with np.errstate(divide="ignore"):
                        np.divide(np.float32(1.0), plane, out=plane)  # 1/0 = inf: no data
                    plane[~np.isfinite(plane) | (plane <= 0)] = np.inf
                    out.provenance["variance"] = f"1/weight, {out.variance_source}"
                else:
                    out.provenance["variance"] = out.variance_source
                out.variance = plane
        except ExposureReadError as error:
            raise ExposureReadError(error.code, f"{what}: {error.message}") from error
    return out


@contextmanager
def _companion_hdu(
    ref: PlaneRef, hdul: fits.HDUList, image: ImageLike, what: str, notes: list[str],
    max_bytes: int | None,
) -> Iterator[tuple[ImageLike, str]]:
    """The companion's HDU, and where it is for provenance ("oow.fits[#1 N2]")."""
    if ref.source is None:
        if ref.hdu is None:
            raise ExposureReadError(
                "bad_option", "an HDU of the image's own file needs its name or index, "
                "e.g. [WEIGHT] or [2]")
        index = find_hdu(hdul, ref.hdu, what)
        yield hdul[index], f"HDU #{index} {plane_name(hdul[index]) or 'PRIMARY'} of the image file"
        return
    with open_fits(ref.source, notes, max_bytes=max_bytes) as other:
        if ref.hdu is not None:
            index = find_hdu(other, ref.hdu, what)
        else:
            index = _same_name(other, plane_name(image))
        yield other[index], f"{ref.name}[#{index} {plane_name(other[index]) or 'PRIMARY'}]"


def _same_name(hdul: fits.HDUList, name: str) -> int:
    """The HDU named as the image's (a DECam CCD), else the first 2-d image."""
    if name:
        index = next((i for i, h in enumerate(hdul) if is_image(h) and plane_name(h) == name),
                     None)
        if index is not None:
            return index
    index = first_image(hdul)
    if index is None:
        raise ExposureReadError("no_image", "the file holds no 2-d image")
    return index


def dq_to_mask(
    values: np.ndarray, blank: np.ndarray | None, mask_map: MaskMap | None,
    planes: MaskPlanes, what: str, notes: list[str],
) -> np.ndarray:
    """Mask bits (int32, in ``planes``' layout) for a data-quality map's values.

    Values the map does not list set BAD, with a note saying how many pixels; BLANK
    pixels are NO_DATA.
    """
    mask = np.zeros(values.shape, np.int32)
    bad = np.int32(planes.bitmask("BAD"))
    if mask_map is None:
        mask[values != 0] = bad
    else:
        listed = 0
        for value, name in mask_map.planes:
            bit = np.int32(planes.bitmask(name))
            if mask_map.kind == "bits":
                hit = (values & value) != 0
                listed |= value
            else:
                hit = values == value
            mask[hit] |= bit
        if mask_map.kind == "bits":
            unlisted = (values & ~np.array(listed, values.dtype)) != 0
        else:
            codes = np.array([v for v, _ in mask_map.planes], values.dtype)
            unlisted = (values != 0) & ~np.isin(values, codes)
        count = int(np.count_nonzero(unlisted))
        if count:
            found = np.unique(values[unlisted])
            shown = ", ".join(str(int(v)) for v in found[:8]) + (", …" if found.size > 8 else "")
            notes.append(f"{what}: {count} pixels hold values the {mask_map.kind} map does not "
                         f"list ({shown}); they are flagged BAD")
            mask[unlisted] |= bad
    if blank is not None:
        mask[blank] = np.int32(planes.bitmask("NO_DATA"))
    return mask
