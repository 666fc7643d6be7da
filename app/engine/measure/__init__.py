"""Single-frame measurement: LSST-named plugins run over every source of a catalog.

Importing this package registers the plugins (``app.engine.measure.plugins``).
"""

from app.engine.measure import plugins  # noqa: F401  (registers the plugins)
from app.engine.measure.registry import REGISTRY, Column, Plugin, register

__all__ = ["REGISTRY", "Column", "Plugin", "register"]
