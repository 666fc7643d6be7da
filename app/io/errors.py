"""Typed errors for unreadable input files.

The service maps these to a 4xx response, so each carries a stable machine-readable ``code``
and a message that says what is wrong and what was expected.
"""

from __future__ import annotations

from typing import Literal

ExposureErrorCode = Literal[
    "not_fits",
    "no_image",
    "shape_mismatch",
    "unsupported_bitpix",
    "all_nan",
    "truncated",
    "bad_wcs",
    "bad_psf",
    "corrupt",
    "too_large",
    "too_small",
    "bad_hdu",
    "bad_option",
    "bad_variance",
    "bad_weight",
    "no_data",
]


class ExposureReadError(ValueError):
    """An exposure file that cannot be read, with the reason as a stable code.

    Parameters
    ----------
    code
        One of `ExposureErrorCode`: the file is not FITS (``not_fits``), cut short
        (``truncated``) or has undecodable data (``corrupt``); it has no usable image
        (``no_image``, ``too_small``, ``all_nan``, ``no_data``), planes that do not fit
        (``shape_mismatch``, ``unsupported_bitpix``, ``bad_variance``, ``bad_weight``), a
        bad WCS or PSF (``bad_wcs``, ``bad_psf``); the HDU or option asked for is wrong
        (``bad_hdu``, ``bad_option``); or it needs more memory than allowed (``too_large``).
    message
        What is wrong and what was expected, for a person to act on.
    """

    def __init__(self, code: ExposureErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ExposureErrorCode = code
        self.message = message

    def __repr__(self) -> str:
        return f"ExposureReadError(code={self.code!r}, message={self.message!r})"
