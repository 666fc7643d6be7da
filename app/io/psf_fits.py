"""PSF models to and from a FITS extension named PSF, so a stored exposure keeps its PSF.

``PSFTYPE`` says which model: ``PIXEL`` (the measured :class:`~app.engine.psf_model.PixelPsf`:
its basis cube as the data, spatial order and image size in the header) or ``GAUSSIAN``
(sigma and kernel size in the header). Models of other kinds (e.g. a simulation's exact
PSF) are not written.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from app.engine.psf import GaussianPsf, PsfModel
from app.engine.psf_model import PixelPsf
from app.io.errors import ExposureReadError


def psf_to_hdu(psf: PsfModel | None) -> fits.ImageHDU | None:
    """The PSF extension for ``psf``, or None when it cannot be written."""
    if isinstance(psf, PixelPsf):
        hdu = fits.ImageHDU(data=psf.basis.astype(np.float64), name="PSF")
        hdu.header["PSFTYPE"] = ("PIXEL", "pixel basis, polynomial over the field")
        hdu.header["PSFORDER"] = (psf.order, "polynomial order of the spatial variation")
        hdu.header["PSFWIDTH"] = (psf.width, "image width the positions are scaled by")
        hdu.header["PSFHGHT"] = (psf.height, "image height the positions are scaled by")
        return hdu
    if isinstance(psf, GaussianPsf):
        hdu = fits.ImageHDU(name="PSF")
        hdu.header["PSFTYPE"] = ("GAUSSIAN", "circular Gaussian")
        hdu.header["PSFSIGMA"] = (psf.sigma(0.0, 0.0), "sigma in pixels")
        hdu.header["PSFSIZE"] = (psf.size, "kernel side in pixels")
        return hdu
    return None


def psf_from_hdu(hdu: fits.ImageHDU) -> PsfModel:
    """The PSF model stored in a PSF extension."""
    kind = hdu.header.get("PSFTYPE")
    try:
        if kind == "PIXEL":
            basis = np.asarray(hdu.data, dtype=np.float64)
            return PixelPsf(basis, int(hdu.header["PSFORDER"]), int(hdu.header["PSFWIDTH"]),
                            int(hdu.header["PSFHGHT"]))
        if kind == "GAUSSIAN":
            return GaussianPsf(float(hdu.header["PSFSIGMA"]), int(hdu.header["PSFSIZE"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ExposureReadError("bad_psf", f"the PSF extension is damaged: {exc}") from exc
    raise ExposureReadError(
        "bad_psf", f"the PSF extension has PSFTYPE {kind!r}; expected 'PIXEL' or 'GAUSSIAN'")
