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
from app.engine.fields import ChebyshevBoundedField
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
    """The APCORR table: one row per corrected flux, its Chebyshev field (array frame)."""
    if not ap_corr:
        return None
    names = sorted(ap_corr)
    shapes = [ap_corr[n].field.coefficients.shape for n in names]
    ny, nx = max(s[0] for s in shapes), max(s[1] for s in shapes)
    coef = np.zeros((len(names), ny * nx))
    for i, name in enumerate(names):
        c = np.zeros((ny, nx))
        field = ap_corr[name].field
        c[: field.coefficients.shape[0], : field.coefficients.shape[1]] = field.coefficients
        coef[i] = c.ravel()
    boxes = np.array([ap_corr[n].field.bbox for n in names])
    hdu = fits.BinTableHDU.from_columns([
        fits.Column("name", "32A", array=np.array(names)),
        fits.Column("order_x", "J", array=np.full(len(names), nx - 1)),
        fits.Column("coefficients", f"{ny * nx}D", array=coef),
        fits.Column("bbox", "4J", array=boxes),
        fits.Column("err", "D", array=[ap_corr[n].err for n in names]),
        fits.Column("nstars", "J", array=[ap_corr[n].n_stars for n in names]),
    ], name="APCORR")
    hdu.header["APCFORM"] = ("CHEBYSHEV", "afw ChebyshevBoundedField, y then x")
    return hdu


def apcorr_from_hdu(hdu: fits.BinTableHDU) -> dict[str, ApCorr]:
    """The aperture corrections stored in an APCORR table.

    Tables written before the fields were Chebyshev series hold a constant or a linear
    polynomial in ``u = 2x/(w-1) - 1``; that is the same field as a first-order Chebyshev
    series over the image with ``c_x = a_u · w/(w-1)``, so it is converted exactly.
    """
    out = {}
    for row in hdu.data:
        name = str(row["name"]).strip()
        if hdu.header.get("APCFORM") == "CHEBYSHEV":
            nx = int(row["order_x"]) + 1
            coefficients = np.asarray(row["coefficients"], float).reshape(-1, nx)
            bbox = tuple(int(v) for v in row["bbox"])
        else:
            a = np.asarray(row["coef"][: int(row["ncoef"])], float)
            w, h = int(row["width"]), int(row["height"])
            coefficients = np.array([[a[0]]])
            if len(a) == 3:
                coefficients = np.array([[a[0], a[1] * w / max(w - 1, 1)],
                                         [a[2] * h / max(h - 1, 1), 0.0]])
            bbox = (0, 0, w - 1, h - 1)
        out[name] = ApCorr(ChebyshevBoundedField(bbox, coefficients),  # type: ignore[arg-type]
                           float(row["err"]), int(row["nstars"]))
    return out
