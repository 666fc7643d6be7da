"""The background that was subtracted from an exposure, given as a file of its own."""

from __future__ import annotations

import numpy as np

from app.io.afw_background import evaluate_background_list, is_background_list
from app.io.errors import ExposureReadError
from app.io.fits_open import Source, first_image, open_fits, plane_name, require_shape
from app.io.fits_pixels import read_float


def read_background_file(source: Source, shape: tuple[int, int]) -> np.ndarray:
    """The full-resolution background image in ``source``, float32 of ``shape``.

    An afw BackgroundList (the butler's ``calexpBackground``: per-bin statistics with their
    interpolation keywords) is evaluated to full resolution over the exposure, taken to
    start where the list's box does (`app.io.afw_background`). Otherwise the HDU named
    BACKGROUND is read if there is one, else the first 2-d image. Values
    that are not finite (no background where there are no data) become 0, so adding the
    background back never turns a pixel into NaN.

    Raises
    ------
    ExposureReadError
        ``shape_mismatch`` when the image is not ``shape``; ``no_image`` when the file has
        none; the file errors of `app.io.fits_open.open_fits`.
    """
    with open_fits(source, []) as hdul:
        if is_background_list(hdul):  # the butler's calexpBackground
            background = evaluate_background_list(hdul, None, shape)
            background[~np.isfinite(background)] = 0.0
            return background
        index = next((i for i, h in enumerate(hdul) if plane_name(h) == "BACKGROUND"), None)
        if index is None:
            index = first_image(hdul)
        if index is None:
            raise ExposureReadError("no_image", "the background file holds no 2-d image")
        hdu = hdul[index]
        require_shape(hdu, shape, "the background image",
                      "a full-resolution background matches the image pixel for pixel")
        background = read_float(hdu, "BACKGROUND", shape)
    background[~np.isfinite(background)] = 0.0
    return background
