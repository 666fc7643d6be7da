"""Pixels of an image HDU, scaled as the FITS standard says, a block of rows at a time.

Files are opened unscaled (see :mod:`app.io.fits_open`), so this module applies
``physical = BZERO + BSCALE × stored`` itself: straight into float32 for images (BLANK
becomes NaN, which the reader flags NO_DATA) and into integers for masks (BLANK is
reported, so its pixels can be flagged NO_DATA). A block at a time keeps the working memory
to the output array plus one block, whatever the BITPIX: astropy would scale a BITPIX 32
image into a full-size float64 copy, and cannot memory-map scaled data at all. Scaled
values are computed in float64 per block and rounded once to float32, so they are the
float32 nearest to the exact physical value. Tile-compressed HDUs are decompressed tile
row by tile row through astropy's ``section``, so no full-size copy of the stored integers
is made either.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from app.engine.masks import MAX_PLANES
from app.io.errors import ExposureReadError
from app.io.fits_open import ImageLike

BLOCK_PIXELS = 1 << 20
"""Pixels converted at a time: 8 MB of float64 scratch, small beside any real frame."""


@dataclass(frozen=True)
class Scaling:
    """The linear scaling and null value of an HDU's stored integers."""

    bscale: float = 1.0
    bzero: float = 0.0
    blank: int | None = None

    @classmethod
    def of(cls, hdu: ImageLike) -> Scaling:
        header = hdu.header
        blank = header.get("BLANK") if int(header.get("BITPIX", 0)) > 0 else None
        return cls(float(header.get("BSCALE", 1.0)), float(header.get("BZERO", 0.0)),
                   int(blank) if isinstance(blank, int | float) and blank == int(blank) else None)

    @property
    def identity(self) -> bool:
        return self.bscale == 1.0 and self.bzero == 0.0


def block_rows_of(shape: tuple[int, ...], tile_rows: int = 1) -> int:
    """Rows per block of an array of ``shape``: about `BLOCK_PIXELS`, in whole tile rows."""
    return max(tile_rows, BLOCK_PIXELS // max(shape[-1], 1) // tile_rows * tile_rows)


def block_rows(hdu: ImageLike, shape: tuple[int, int]) -> int:
    """Rows per block of an HDU: in whole tile rows when it is tile-compressed."""
    tile_rows = 1
    if isinstance(hdu, fits.CompImageHDU) and len(hdu.tile_shape) >= 2:
        tile_rows = int(hdu.tile_shape[-2])
    return block_rows_of(shape, tile_rows)


def row_blocks(hdu: ImageLike, plane: str, shape: tuple[int, int], step: int | None = None,
               *, whole: bool = False) -> Iterator[tuple[slice, np.ndarray]]:
    """The stored (unscaled) values, as ``(rows, block)`` of ``step`` whole rows.

    A memory-mapped HDU is sliced. A tile-compressed one is decompressed a block of tile
    rows at a time, or, with ``whole``, at once: astropy reads the tiles of a full image
    from one copy of the heap, several times faster than tile by tile, for the memory of
    the stored integers (what astropy's own read costs too). A decoding failure is
    ``corrupt``: the file was checked complete when it was opened.
    """
    height, width = shape
    step = step or block_rows(hdu, shape)
    try:
        if isinstance(hdu, fits.CompImageHDU) and not whole:
            lead = (0,) * (len(hdu.shape) - 2)
            section = hdu.section
            for y0 in range(0, height, step):
                rows = slice(y0, min(y0 + step, height))
                yield rows, np.asarray(section[(*lead, rows)]).reshape(-1, width)
            return
        data = hdu.section[...] if isinstance(hdu, fits.CompImageHDU) else hdu.data
        if data is None:
            raise ValueError("the HDU holds no data")
        data = np.asarray(data).reshape(shape)
    except ExposureReadError:
        raise
    except Exception as exc:  # astropy raises TypeError/ValueError/OSError on bad data
        raise _corrupt(plane, exc) from exc
    for y0 in range(0, height, step):
        rows = slice(y0, min(y0 + step, height))
        yield rows, data[rows]


def float_blocks(hdu: ImageLike, plane: str, shape: tuple[int, int],
                 out: np.ndarray | None = None, step: int | None = None, *,
                 whole: bool = False) -> Iterator[tuple[slice, np.ndarray]]:
    """Physical values as float32 blocks (BLANK → NaN); written into ``out`` when given."""
    scaling = Scaling.of(hdu)
    for rows, stored in row_blocks(hdu, plane, shape, step, whole=whole):
        block = np.empty(stored.shape, np.float32) if out is None else out[rows]
        if scaling.identity:
            block[...] = stored
        else:
            scratch = stored.astype(np.float64)
            scratch *= scaling.bscale
            scratch += scaling.bzero
            block[...] = scratch
        if scaling.blank is not None and stored.dtype.kind in "iu":
            block[stored == scaling.blank] = np.nan
        yield rows, block


def read_float(hdu: ImageLike, plane: str, shape: tuple[int, int]) -> np.ndarray:
    """The whole plane as float32 (BLANK and the file's own NaNs are NaN).

    A tile-compressed float32 plane (quantized or not) is decompressed into its own array,
    which is returned as it is when no scaling applies: no second full-size copy.
    """
    if isinstance(hdu, fits.CompImageHDU) and Scaling.of(hdu).identity \
            and int(hdu.header.get("BITPIX", 0)) == -32:
        _, data = next(row_blocks(hdu, plane, shape, shape[0], whole=True))
        return data.astype(np.float32, copy=False)
    out = np.empty(shape, np.float32)
    for _ in float_blocks(hdu, plane, shape, out, whole=True):
        pass
    return out


def read_integers(
    hdu: ImageLike, plane: str, shape: tuple[int, int], *, whole_floats: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """The plane's integer values, and where they are BLANK (None when nowhere).

    The values are int32 when every stored type and offset allows it (uint16 through
    BZERO = 32768, the layout of older afw masks, included), int64 otherwise. A scaled
    (BSCALE ≠ 1) or floating-point plane holds no integers: ``unsupported_bitpix``, unless
    ``whole_floats`` accepts a floating-point map whose values are all whole numbers (a
    bad-pixel map written as 0.0/1.0); its NaNs count as BLANK.
    """
    scaling = Scaling.of(hdu)
    bitpix = int(hdu.header.get("BITPIX", 0))
    if bitpix < 0 and not whole_floats:
        raise ExposureReadError(
            "unsupported_bitpix",
            f"{plane} has BITPIX {bitpix} (floating point); a mask holds integer bit planes",
        )
    if scaling.bscale != 1.0 or scaling.bzero != int(scaling.bzero):
        raise ExposureReadError(
            "unsupported_bitpix",
            f"{plane} is scaled by BSCALE = {scaling.bscale:g}, BZERO = {scaling.bzero:g}; a "
            "mask holds integer bit planes, so only an integer BZERO (such as 32768 for "
            "unsigned 16-bit) can be read",
        )
    bzero = int(scaling.bzero)
    narrow = bitpix in (8, 16) or (bitpix == 32 and bzero == 0)
    out = np.empty(shape, np.int32 if narrow else np.int64)
    blank: np.ndarray | None = None
    for rows, stored in row_blocks(hdu, plane, shape, whole=True):
        missing = None
        if stored.dtype.kind == "f":
            missing = ~np.isfinite(stored)
            if missing.any():
                stored = np.where(missing, 0, stored)
            if not np.array_equal(stored, np.round(stored)):
                raise ExposureReadError(
                    "unsupported_bitpix",
                    f"{plane} holds fractional values (BITPIX {bitpix}); a data-quality "
                    "map holds integer flags or codes",
                )
        elif scaling.blank is not None:
            missing = stored == scaling.blank
        if missing is not None and missing.any():
            if blank is None:
                blank = np.zeros(shape, bool)
            blank[rows] = missing
        block = out[rows]
        block[...] = stored
        if bzero:
            block += bzero
    return out, blank


def as_mask_bits(values: np.ndarray, plane: str) -> np.ndarray:
    """``values`` as an int32 mask, refusing values beyond its 31 bit planes."""
    if values.dtype == np.int32:
        return values
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if low < -(2**31) or high >= 2**MAX_PLANES:
        raise ExposureReadError(
            "unsupported_bitpix",
            f"{plane} values span {low}..{high}, beyond the {MAX_PLANES} bit planes an int32 "
            "mask holds",
        )
    return values.astype(np.int32)


def _corrupt(plane: str, exc: BaseException) -> ExposureReadError:
    return ExposureReadError(
        "corrupt",
        f"the pixels of {plane} cannot be decoded ({type(exc).__name__}: {exc}); the file "
        "is complete, so its data are corrupt or in a form astropy cannot read",
    )


@dataclass
class PixelCensus:
    """How many pixels are usable, counted over whole planes or block by block.

    One set of refusals for `read_exposure` (whole arrays) and the upload check (blocks):
    a file whose image has no finite pixel, whose variance or weight is nowhere positive, or
    whose finite pixels all lack a variance, cannot give a measurement.
    """

    finite: int = 0
    variance_positive: int = 0
    usable: int = 0

    def add(self, finite: np.ndarray, variance: np.ndarray | None) -> None:
        """Count a block: where its image is finite, and its variance (None: estimated)."""
        self.finite += int(np.count_nonzero(finite))
        if variance is None:
            self.variance_positive += finite.size
            self.usable += int(np.count_nonzero(finite))
            return
        good = np.isfinite(variance)
        good &= variance > 0
        self.variance_positive += int(np.count_nonzero(good))
        good &= finite
        self.usable += int(np.count_nonzero(good))

    def refuse(self, image: str, shape: tuple[int, int], variance: str, weight: bool) -> None:
        """Raise the reason nothing can be measured, if there is one.

        ``variance`` names where the variance came from ("VARIANCE plane", "weight map
        oow.fits[#1 N2]"); ``weight`` says it was a weight (inverse-variance) map.
        """
        if self.finite == 0:
            raise ExposureReadError(
                "all_nan", f"every pixel of {image} {shape} is NaN, infinite or BLANK; "
                "expected an image with data"
            )
        if self.variance_positive == 0:
            raise ExposureReadError(
                "bad_weight" if weight else "bad_variance",
                f"the {variance} is zero, negative or NaN everywhere: it gives no pixel an "
                + ("error (a weight of 0 means no data)" if weight
                   else "error; expected variances > 0 (counts²) where there are data"),
            )
        if self.usable == 0:
            raise ExposureReadError(
                "no_data", f"no pixel of {image} has both a finite value and a positive "
                f"variance from the {variance}: their valid regions do not overlap"
            )
