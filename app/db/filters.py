"""What a client may ask of a job's result rows (detections or forced measurements), and the
SQL conditions both result tables share: S/N range, pixel box, cone."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_


@dataclass(frozen=True)
class Cone:
    """A circle on the sky, degrees."""

    ra: float
    dec: float
    radius: float


@dataclass(frozen=True)
class PixelBox:
    """Inclusive pixel ranges on the centroid; None leaves a side open."""

    x_min: float | None = None
    x_max: float | None = None
    y_min: float | None = None
    y_max: float | None = None


DETECT_ONLY = ("parents_only", "children_only", "deblend_nchild")
FORCED_ONLY = ("position_kind", "exposure_id")


@dataclass(frozen=True)
class SourceFilter:
    """What a client may ask of a job's rows; every condition is ANDed.

    The deblending options apply to detect jobs, ``position_kind`` and ``exposure_id`` to
    forced jobs (`DETECT_ONLY`, `FORCED_ONLY`); the rest to both.
    """

    parents_only: bool = False
    children_only: bool = False
    deblend_nchild: int | None = None
    min_psf_snr: float | None = None
    max_psf_snr: float | None = None
    box: PixelBox | None = None
    cone: Cone | None = None
    flags_set: Sequence[str] = field(default_factory=tuple)
    flags_unset: Sequence[str] = field(default_factory=tuple)
    position_kind: str | None = None
    exposure_id: str | None = None

    def given(self, names: Sequence[str]) -> list[str]:
        """Which of these options the client set."""
        return [n for n in names if getattr(self, n) not in (None, False)]


def unit_vector(ra: float, dec: float) -> tuple[float, float, float]:
    """Cartesian unit vector of a sky position in degrees."""
    a, d = math.radians(ra), math.radians(dec)
    return math.cos(d) * math.cos(a), math.cos(d) * math.sin(a), math.sin(d)


def snr_between(flux: Any, err: Any, low: float | None, high: float | None
                ) -> list[ColumnElement[bool]]:
    """Exclusive S/N bounds (4 < S/N < 5, as the tutorial picks faint detections), written
    as products so a scan needs no division."""
    out: list[ColumnElement[bool]] = []
    if low is not None or high is not None:
        out.append(err > 0)
    if low is not None:
        out.append(flux > low * err)
    if high is not None:
        out.append(flux < high * err)
    return out


def in_box(x: Any, y: Any, box: PixelBox | None) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if box is None:
        return out
    for column, low, high in ((x, box.x_min, box.x_max), (y, box.y_min, box.y_max)):
        if low is not None:
            out.append(column >= low)
        if high is not None:
            out.append(column <= high)
    return out


def in_cone(cx: Any, cy: Any, cz: Any, dec: Any, cone: Cone) -> ColumnElement[bool]:
    """Exact test on the unit vectors, behind a Dec band an index on Dec can use."""
    ux, uy, uz = unit_vector(cone.ra, cone.dec)
    exact = cx * ux + cy * uy + cz * uz >= math.cos(math.radians(cone.radius))
    band = and_(dec >= cone.dec - cone.radius, dec <= cone.dec + cone.radius)
    return and_(band, exact)
