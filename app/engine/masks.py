"""Mask planes: names to bit numbers, LSST's layout by default.

The DP0.2 tutorial reads DETECTED pixels as 32 (bit 5) and pixels both on the EDGE and
DETECTED as 48 (bits 4 and 5); the default layout below reproduces that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

DEFAULT_PLANES: dict[str, int] = {
    "BAD": 0,
    "SAT": 1,
    "INTRP": 2,
    "CR": 3,
    "EDGE": 4,
    "DETECTED": 5,
    "DETECTED_NEGATIVE": 6,
    "SUSPECT": 7,
    "NO_DATA": 8,
}

MAX_PLANES = 31  # the mask is int32; bit 31 is the sign bit
ANY_CHUNK = 1 << 20  # mask pixels tested at a time by MaskPlanes.any


class MaskPlanes:
    """A mapping of mask plane names to bit numbers, with helpers for bitmasks.

    Planes named in a file's ``MP_*`` header keys are kept; planes the engine needs but the
    file does not name are added on the first free bit, so reading never fails for want of
    a plane.
    """

    def __init__(self, planes: Mapping[str, int] | None = None) -> None:
        self._bits: dict[str, int] = dict(DEFAULT_PLANES if planes is None else planes)
        for name, bit in self._bits.items():
            if not 0 <= bit < MAX_PLANES:
                raise ValueError(f"mask plane {name!r} has bit {bit}, outside 0..{MAX_PLANES - 1}")
        if len(set(self._bits.values())) != len(self._bits):
            raise ValueError(f"two mask planes share a bit: {self._bits}")

    def __contains__(self, name: object) -> bool:
        return name in self._bits

    def __iter__(self):
        return iter(self._bits)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MaskPlanes) and self._bits == other._bits

    def __repr__(self) -> str:
        return f"MaskPlanes({self._bits})"

    def as_dict(self) -> dict[str, int]:
        """Plane name → bit number (the exponent, as LSST's getMaskPlaneDict gives it)."""
        return dict(self._bits)

    def bit(self, name: str) -> int:
        """Bit number of ``name``, adding the plane on the first free bit if it is missing."""
        if name not in self._bits:
            used = set(self._bits.values())
            free = next((b for b in range(MAX_PLANES) if b not in used), None)
            if free is None:
                raise ValueError(f"no free mask bit for plane {name!r}")
            self._bits[name] = free
        return self._bits[name]

    def bitmask(self, names: Iterable[str] | str) -> int:
        """The OR of the values of the named planes (e.g. DETECTED → 32)."""
        if isinstance(names, str):
            names = [names]
        value = 0
        for name in names:
            value |= 1 << self.bit(name)
        return value

    def any(self, mask: np.ndarray, names: Iterable[str] | str) -> np.ndarray:
        """Boolean array: True where any of the named planes is set.

        A large contiguous mask is tested a chunk at a time, so no full-size int32
        temporary is allocated (and its fresh pages touched) for the masked bits.
        """
        bits = np.int32(self.bitmask(names))
        if mask.size <= ANY_CHUNK or not mask.flags.c_contiguous:
            return (mask & bits) != 0
        out = np.empty(mask.shape, dtype=bool)
        src, dst = mask.reshape(-1), out.reshape(-1)
        for start in range(0, src.size, ANY_CHUNK):
            part = slice(start, start + ANY_CHUNK)
            np.not_equal(src[part] & bits, 0, out=dst[part])
        return out

    def names_set(self, value: int) -> list[str]:
        """Names of the planes set in one mask value."""
        return [name for name, bit in self._bits.items() if value & (1 << bit)]
