"""Exposures written the other ways FITS images come: plain frames, scaled integers, compressed.

What an astronomer is handed is often not a float32 calexp:

* a *plain* frame: one image HDU with its sky still in, no mask, no variance, no background,
  and the detector's ``GAIN`` (e⁻/count) and ``RDNOISE`` (e⁻) in the header;
* *int16 + BSCALE/BZERO*: integers scaled to the pixel values (``physical = BZERO + BSCALE ×
  stored``), as cameras and many archives write them;
* *tile-compressed* with ``RICE_1`` (fpack's default): integers losslessly, floating-point
  planes quantized to a fraction (1/16 by default) of each tile's noise with subtractive
  dithering, in ``CompImageHDU`` extensions behind an empty primary.

These writers build those files with astropy from the same exposure, so tests and benchmarks
can read them back with :func:`app.io.fits_exposure.read_exposure` and compare with the truth.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from astropy.io import fits

from app.engine.exposure import Exposure
from app.engine.matrix import MatrixCase
from app.engine.simulate import SimulatedExposure
from app.io.fits_exposure import Source, read_exposure, write_exposure

Layout = Literal["calexp", "plain"]
Encoding = Literal["float32", "int16", "rice"]
INT16_RANGE = (-32768, 32767)
RICE_QUANTIZE_LEVEL = 16.0  # fpack's default: quantization step = tile noise / 16


def write_plain_image(exposure: Exposure, target: Source, *, gain: float, read_noise: float,
                      encoding: Encoding = "float32", saturation: float | None = None) -> None:
    """Write the image alone, as a raw-ish frame: one image HDU, WCS, GAIN and RDNOISE.

    Parameters
    ----------
    exposure
        Its image is written as it is (a frame with its sky in, typically); mask, variance
        and background are not.
    target
        Path or writable binary file.
    gain, read_noise
        ``GAIN`` (e⁻ per count) and ``RDNOISE`` (e⁻) header values.
    encoding
        ``float32``; ``int16`` scaled by ``BSCALE``/``BZERO`` to the image's range; ``rice``
        (a ``RICE_1`` tile-compressed float image in extension 1).
    saturation
        Written as ``SATURATE`` (counts) when given.
    """
    header = _observation_header(exposure)
    header["GAIN"] = (float(gain), "e-/count")
    header["RDNOISE"] = (float(read_noise), "read noise (e-)")
    if saturation is not None:
        header["SATURATE"] = (float(saturation), "counts")
    if exposure.wcs is not None:
        header.extend(exposure.wcs.to_header(relax=True).cards)
    image = exposure.image.astype(np.float32, copy=False)
    if encoding == "rice":
        hdus = fits.HDUList([fits.PrimaryHDU(), _compressed(image, header, "IMAGE")])
    elif encoding == "int16":
        hdus = fits.HDUList([_scaled_primary(image, header)])
    else:
        hdus = fits.HDUList([fits.PrimaryHDU(image, header)])
    _save(hdus, target)


def write_calexp_variant(exposure: Exposure, target: Source, encoding: Encoding) -> None:
    """Write the LSST calexp layout of :func:`~app.io.fits_exposure.write_exposure` with its
    planes encoded otherwise: ``int16`` (IMAGE scaled by BSCALE/BZERO; MASK and VARIANCE as
    written), or ``rice`` (every image extension ``RICE_1`` tile-compressed)."""
    buffer = io.BytesIO()
    write_exposure(exposure, buffer, compress=False)
    buffer.seek(0)
    with fits.open(buffer, memmap=False) as original:
        hdus: list[fits.hdu.base._BaseHDU] = [original[0].copy()]
        for hdu in original[1:]:
            if encoding == "float32" or not isinstance(hdu, fits.ImageHDU):
                hdus.append(hdu.copy())
            elif encoding == "int16" and hdu.name == "IMAGE":
                hdus.append(_scaled_extension(hdu.data, hdu.header))
            elif encoding == "rice":
                hdus.append(_compressed(hdu.data, hdu.header, hdu.name))
            else:
                hdus.append(hdu.copy())
        _save(fits.HDUList(hdus), target)


def round_trip(exposure: Exposure, layout: Layout, encoding: Encoding, *,
               gain: float | None = None, read_noise: float | None = None,
               saturation: float | None = None, directory: str | os.PathLike[str] | None = None
               ) -> Exposure:
    """The exposure as :func:`~app.io.fits_exposure.read_exposure` reads it back from that
    kind of file: what a user's file of that kind gives the engine.

    The file is written in memory, or with ``directory`` to a file there (read by path, as a
    user's file is, then deleted).
    """
    if layout == "plain" and (gain is None or read_noise is None):
        raise ValueError("a plain image needs its gain and read noise for the header")
    header_gain, header_noise = float(gain or 0.0), float(read_noise or 0.0)

    def write(target: Source) -> None:
        if layout == "plain":
            write_plain_image(exposure, target, gain=header_gain, read_noise=header_noise,
                              encoding=encoding, saturation=saturation)
        else:
            write_calexp_variant(exposure, target, encoding)

    if directory is None:
        buffer = io.BytesIO()
        write(buffer)
        buffer.seek(0)
        return read_exposure(buffer)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = Path(tmp) / f"{layout}_{encoding}.fits"
        write(path)
        return read_exposure(path)


def case_loader(directory: str | os.PathLike[str] | None = None
                ) -> Callable[[SimulatedExposure, MatrixCase], Exposure]:
    """For :func:`app.engine.matrix.run_case`: a case's exposure read back through its kind of
    file (``case.file``), written in ``directory`` (in memory when None)."""

    def load(sim: SimulatedExposure, case: MatrixCase) -> Exposure:
        if case.file is None:
            return sim.exposure
        c = case.config
        layout, encoding = case.file
        return round_trip(sim.exposure, layout, encoding, gain=c.gain,  # type: ignore[arg-type]
                          read_noise=c.read_noise, saturation=c.saturation,
                          directory=directory)

    return load


def int16_scaling(data: np.ndarray) -> tuple[float, float]:
    """``(bscale, bzero)`` mapping the finite range of ``data`` onto int16 (the step is the
    range / 65534, so min and max are stored exactly to within half a step)."""
    finite = data[np.isfinite(data)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    bscale = max(hi - lo, 1e-30) / (INT16_RANGE[1] - INT16_RANGE[0] - 1)
    bzero = 0.5 * (hi + lo)
    return bscale, bzero


def _quantized(data: np.ndarray) -> tuple[np.ndarray, float, float]:
    bscale, bzero = int16_scaling(data)
    stored = np.round((data.astype(np.float64) - bzero) / bscale)
    return np.clip(stored, *INT16_RANGE).astype(np.int16), bscale, bzero


def _scaled_primary(data: np.ndarray, header: fits.Header) -> fits.PrimaryHDU:
    stored, bscale, bzero = _quantized(data)
    hdu = fits.PrimaryHDU(stored, header)
    hdu.header["BSCALE"], hdu.header["BZERO"] = bscale, bzero
    return hdu


def _scaled_extension(data: np.ndarray, header: fits.Header) -> fits.ImageHDU:
    stored, bscale, bzero = _quantized(data)
    hdu = fits.ImageHDU(stored, header.copy(), name=header.get("EXTNAME"))
    hdu.header["BSCALE"], hdu.header["BZERO"] = bscale, bzero
    return hdu


def _compressed(data: np.ndarray, header: fits.Header, name: str | None) -> fits.CompImageHDU:
    """A RICE_1 tile-compressed HDU (row tiles, as fpack); floats quantized with dithering."""
    kept = fits.Header([c for c in header.cards if c.keyword not in _STRUCTURE])
    return fits.CompImageHDU(data, kept, name=name, compression_type="RICE_1",
                             quantize_level=RICE_QUANTIZE_LEVEL,
                             quantize_method=1)  # SUBTRACTIVE_DITHER_1


_STRUCTURE = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT",
              "GCOUNT", "EXTNAME", "BSCALE", "BZERO"}


def _observation_header(exposure: Exposure) -> fits.Header:
    """The observation and calibration keys a plain frame carries: the calexp writer's
    primary header for this exposure."""
    buffer = io.BytesIO()
    write_exposure(exposure, buffer, compress=False)
    buffer.seek(0)
    with fits.open(buffer, memmap=False) as hdul:
        return fits.Header([c for c in hdul[0].header.cards if c.keyword not in _STRUCTURE])


def _save(hdus: fits.HDUList, target: Source) -> None:
    if hasattr(target, "write"):
        hdus.writeto(target)
    else:
        hdus.writeto(target, overwrite=True)
