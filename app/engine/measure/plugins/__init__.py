"""The measurement plugins; importing this package registers them all."""

from app.engine.measure.plugins import centroid, derived, flux, pixelflags, shape

__all__ = ["centroid", "derived", "flux", "pixelflags", "shape"]
