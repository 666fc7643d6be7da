"""base_PixelFlags: which mask planes touch a source's footprint, and its centre.

As meas_base's PixelFlags.cc: a centroid off the image sets ``flag_offimage`` with
``flag_edge`` and ``flag_edgeCenter``; the flags describe pixels, not a failure, so the
general flag stays for failures of the plugin itself.
"""

from __future__ import annotations

import numpy as np

from app.engine.measure.context import MeasurementContext
from app.engine.measure.registry import DERIVED_ORDER, Column, Plugin, register

# flag suffix → (mask planes, description); "Center" variants look at the 3×3 pixels
# around the centroid, the others at every pixel of the footprint
PLANE_FLAGS: dict[str, tuple[list[str], str]] = {
    "edge": (["EDGE", "NO_DATA"], "Source is in the unusable border or on NO_DATA pixels"),
    "interpolated": (["INTRP"], "Interpolated pixel in the footprint"),
    "saturated": (["SAT"], "Saturated pixel in the footprint"),
    "cr": (["CR"], "Cosmic ray in the footprint"),
    "bad": (["BAD"], "Bad pixel in the footprint"),
    "suspect": (["SUSPECT"], "Suspect pixel in the footprint"),
}
CENTER_FLAGS = ("interpolated", "saturated", "cr", "suspect", "bad", "edge")


@register
class PixelFlags(Plugin):
    name = "base_PixelFlags"
    order = DERIVED_ORDER

    def columns(self, ctx: MeasurementContext) -> list[Column]:
        n = self.name
        cols = [Column(f"{n}_flag_offimage", "bool", None, "The centroid is off the image.")]
        for suffix, (_, desc) in PLANE_FLAGS.items():
            cols.append(Column(f"{n}_flag_{suffix}", "bool", None, f"{desc}."))
        for suffix in CENTER_FLAGS:
            cols.append(Column(f"{n}_flag_{suffix}Center", "bool", None,
                               f"{PLANE_FLAGS[suffix][1]}, within 1 pixel of the centre."))
        return cols

    def measure(self, ctx: MeasurementContext, out: dict[str, np.ndarray]) -> None:
        if ctx.n_sources == 0:
            return
        ex = ctx.exposure
        h, w = ex.shape
        n = self.name
        off = ~ex.on_pixels(ctx.x, ctx.y)
        out[f"{n}_flag_offimage"][:] = off
        cx = np.round(np.nan_to_num(ctx.x)).astype(np.int64)
        cy = np.round(np.nan_to_num(ctx.y)).astype(np.int64)
        centre_bits = np.zeros(ctx.n_sources, dtype=np.int64)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yy, xx = cy + dy, cx + dx
                on = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
                centre_bits |= np.where(on, ex.mask[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)],
                                        ex.planes.bitmask("NO_DATA"))
        for suffix, (planes, _) in PLANE_FLAGS.items():
            bits = ex.planes.bitmask(planes)
            out[f"{n}_flag_{suffix}"][:] = ctx.mask_in_footprints(bits)
            if suffix in CENTER_FLAGS:
                out[f"{n}_flag_{suffix}Center"][:] = (centre_bits & bits) != 0
        out[f"{n}_flag_edge"] |= off
        out[f"{n}_flag_edgeCenter"] |= off
