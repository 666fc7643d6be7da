"""Small synthetic exposures in the LSST calexp layout, written with astropy directly."""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from app.engine.masks import DEFAULT_PLANES as MASK_PLANES


def calexp_bytes(
    shape: tuple[int, int] = (64, 80),
    *,
    seed: int = 0,
    stars: list[tuple[float, float, float]] | None = None,
    sigma_psf: float = 1.5,
) -> bytes:
    """A calexp (primary + IMAGE/MASK/VARIANCE) with unit noise and Gaussian stars.

    ``stars`` are (x, y, total counts); the default is three well-separated bright ones.
    """
    rng = np.random.default_rng(seed)
    height, width = shape
    image = rng.normal(0.0, 1.0, shape).astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width]
    for x, y, flux in (
        stars if stars is not None else [(20, 20, 2000), (55, 40, 1500), (30, 50, 900)]
    ):
        image += (
            flux
            / (2 * np.pi * sigma_psf**2)
            * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma_psf**2))
        ).astype(np.float32)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [width / 2, height / 2]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    primary = fits.Header()
    primary["VISIT"] = 1234
    primary["DETECTOR"] = 42
    primary["BAND"] = "r"
    primary["MJD-OBS"] = 60000.5
    primary["FLUXMAG0"] = 1e11
    mask_header = fits.Header()
    for name, bit in MASK_PLANES.items():
        mask_header[f"HIERARCH MP_{name}"] = bit
    hdus = fits.HDUList(
        [
            fits.PrimaryHDU(header=primary),
            fits.ImageHDU(image, header=wcs.to_header(), name="IMAGE"),
            fits.ImageHDU(np.zeros(shape, np.int32), header=mask_header, name="MASK"),
            fits.ImageHDU(np.ones(shape, np.float32), header=wcs.to_header(), name="VARIANCE"),
        ]
    )
    buffer = io.BytesIO()
    hdus.writeto(buffer)
    return buffer.getvalue()
