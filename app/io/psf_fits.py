"""skyphot's own PSF extension, and the APCORR tables of files written before the afw archive.

``PSFTYPE`` says which model: ``PIXEL`` (the measured :class:`~app.engine.psf_model.PixelPsf`:
its basis cube as float64 data, spatial order, image size and the basis's sampling step in
the header; files without ``PSFSTEP`` hold pixel-resolution models) or ``GAUSSIAN``
(skyphot's pixel-integrated Gaussian: sigma and kernel size in the header). The archive's
PsfexPsf holds a PixelPsf too, but in float32 (PSFEx's ``_comp``), and afw's GaussianPsf is
point-sampled, so these two stay here, where they read back exactly. Models of other kinds
(e.g. a simulation's exact PSF) are not written. Aperture corrections are written to the
archive's ApCorrMap now; earlier files' APCORR tables still read.
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
        hdu.header["PSFSTEP"] = (psf.step, "basis sampling step, image pixels")
        return hdu
    if isinstance(psf, GaussianPsf) and psf.sampling == "integrated":
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
                            int(hdu.header["PSFHGHT"]), float(hdu.header.get("PSFSTEP", 1.0)))
        if kind == "GAUSSIAN":
            return GaussianPsf(float(hdu.header["PSFSIGMA"]), int(hdu.header["PSFSIZE"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ExposureReadError("bad_psf", f"the PSF extension is damaged: {exc}") from exc
    raise ExposureReadError(
        "bad_psf", f"the PSF extension has PSFTYPE {kind!r}; expected 'PIXEL' or 'GAUSSIAN'")


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
