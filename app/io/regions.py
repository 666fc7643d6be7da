"""DS9 region files: circles on the sky (ICRS, or FK5 J2000) or on the image's pixel grid, with
colours and tags.

DS9's ``image`` coordinates are 1-based with integer values at pixel centres, so array
coordinates (0-based) get +1 here, and only here. Each group of circles carries a tag (DS9
can select, hide or colour regions by tag) and optionally a text label per circle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

HEADER = (
    "# Region file format: DS9 version 4.1\n"
    'global color=green dashlist=8 3 width=1 font="helvetica 10 normal roman" select=1 '
    "highlite=1 dash=0 fixed=0 edit=1 move=1 delete=1 include=1 source=1\n"
)


@dataclass(frozen=True)
class SkyCircles:
    """Circles at RA, Dec (degrees, in the file's sky system) with a radius in arcseconds."""

    tag: str
    color: str
    ra: np.ndarray
    dec: np.ndarray
    radius_arcsec: float
    text: Sequence[str] | None = None


@dataclass(frozen=True)
class PixelCircles:
    """Circles at array coordinates x, y (0-based) with a radius in pixels (image)."""

    tag: str
    color: str
    x: np.ndarray
    y: np.ndarray
    radius_pix: float
    text: Sequence[str] | None = None


def _lines(group: SkyCircles | PixelCircles) -> list[str]:
    if isinstance(group, SkyCircles):
        a, b, radius = np.asarray(group.ra), np.asarray(group.dec), f'{group.radius_arcsec:.3f}"'
        position = "{:.7f},{:.7f}"
    else:
        a, b = np.asarray(group.x) + 1.0, np.asarray(group.y) + 1.0
        radius, position = f"{group.radius_pix:.3f}", "{:.3f},{:.3f}"
    texts = group.text if group.text is not None else [None] * len(a)
    out = []
    for u, v, text in zip(a.tolist(), b.tolist(), texts, strict=True):
        if not (np.isfinite(u) and np.isfinite(v)):
            continue  # no position, no region
        label = "" if text is None else f" text={{{text}}}"
        out.append(f"circle({position.format(u, v)},{radius}) # color={group.color}"
                   f" tag={{{group.tag}}}{label}")
    return out


def ds9_regions(groups: Sequence[SkyCircles | PixelCircles], sky: str = "icrs") -> str:
    """A DS9 region file holding every group, sky groups under ``sky`` (the system their
    RA, Dec are in: DS9's ``icrs`` or ``fk5``), pixel ones under ``image``."""
    parts = [HEADER]
    for system, kind in ((sky, SkyCircles), ("image", PixelCircles)):
        lines = [line for g in groups if isinstance(g, kind) for line in _lines(g)]
        if lines:
            parts.append(system + "\n" + "\n".join(lines) + "\n")
    return "".join(parts)
