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
]


class ExposureReadError(ValueError):
    """An exposure file that cannot be read, with the reason as a stable code.

    Parameters
    ----------
    code
        One of ``not_fits``, ``no_image``, ``shape_mismatch``, ``unsupported_bitpix``,
        ``all_nan``, ``truncated``, ``bad_wcs``.
    message
        What is wrong and what was expected, for a person to act on.
    """

    def __init__(self, code: ExposureErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ExposureErrorCode = code
        self.message = message

    def __repr__(self) -> str:
        return f"ExposureReadError(code={self.code!r}, message={self.message!r})"
