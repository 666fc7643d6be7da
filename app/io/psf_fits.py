"""PSF models and aperture corrections to and from FITS, so a stored exposure keeps them.

``PSFTYPE`` says which model: ``PIXEL`` (the measured :class:`~app.engine.psf_model.PixelPsf`:
its basis cube as the data, spatial order and image size in the header) or ``GAUSSIAN``
(sigma and kernel size in the header). Models of other kinds (e.g. a simulation's exact
PSF) are not written. Aperture corrections go to a small APCORR table.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from app.engine.apcorr import ApCorr
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


def apcorr_to_hdu(ap_corr: dict[str, ApCorr]) -> fits.BinTableHDU | None:
    """The APCORR table: one row per corrected flux (coefficients of a linear field)."""
    if not ap_corr:
        return None
    names = sorted(ap_corr)
    coef = np.zeros((len(names), 3))
    for i, name in enumerate(names):
        c = ap_corr[name].coef
        coef[i, : len(c)] = c
    hdu = fits.BinTableHDU.from_columns([
        fits.Column("name", "32A", array=np.array(names)),
        fits.Column("ncoef", "J", array=[len(ap_corr[n].coef) for n in names]),
        fits.Column("coef", "3D", array=coef),
        fits.Column("err", "D", array=[ap_corr[n].err for n in names]),
        fits.Column("nstars", "J", array=[ap_corr[n].n_stars for n in names]),
        fits.Column("width", "J", array=[ap_corr[n].width for n in names]),
        fits.Column("height", "J", array=[ap_corr[n].height for n in names]),
    ], name="APCORR")
    return hdu


def apcorr_from_hdu(hdu: fits.BinTableHDU) -> dict[str, ApCorr]:
    """The aperture corrections stored in an APCORR table."""
    out = {}
    for row in hdu.data:
        out[str(row["name"]).strip()] = ApCorr(
            np.asarray(row["coef"][: int(row["ncoef"])], float), float(row["err"]),
            int(row["nstars"]), int(row["width"]), int(row["height"]))
    return out
