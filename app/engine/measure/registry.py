"""The plugin registry: LSST names, columns with units and descriptions, flags, order.

A plugin measures all sources of a catalog at once (vectorized over sources, not over
pixels). It declares its columns; its general failure flag is ``<name>_flag``. If a plugin
raises, every row gets that flag set and the catalog goes on, as meas_base's
``callMeasure`` does for one record. A plugin that measures at the slot centroid (or with
the slot shape) gets its general flag set where that slot's flag is, as meas_base's
SafeCentroidExtractor and SafeShapeExtractor set it (``<name>_flag_badCentroid`` and
``_flag_badShape`` are the aliases of the slot's flag).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from app.engine.measure.context import MeasurementContext

log = logging.getLogger(__name__)

# meas_base's execution orders: centroids first, then shapes, fluxes, then what uses them
CENTROID_ORDER = 0.0
SHAPE_ORDER = 1.0
FLUX_ORDER = 2.0
APCORR_ORDER = 3.0
DERIVED_ORDER = 4.0


@dataclass(frozen=True)
class Column:
    """One output column: name, numpy dtype, unit (astropy string) and description."""

    name: str
    dtype: str
    unit: str | None
    description: str


class Plugin:
    """Base class: subclasses set ``name`` and ``order`` and implement the two methods."""

    name: ClassVar[str]
    order: ClassVar[float]
    uses_centroid: ClassVar[bool] = False  # measures at the slot centroid
    uses_shape: ClassVar[bool] = False  # measures with the slot shape

    def columns(self, ctx: MeasurementContext) -> list[Column]:
        """The columns this plugin writes (its ``_flag`` column is added for it)."""
        raise NotImplementedError

    def measure(self, ctx: MeasurementContext, out: dict[str, np.ndarray]) -> None:
        """Fill this plugin's columns of ``out`` for every source of ``ctx``."""
        raise NotImplementedError

    def flag_column(self) -> Column:
        return Column(f"{self.name}_flag", "bool", None, f"General failure flag of {self.name}.")

    def results(self, ctx: MeasurementContext) -> list[str]:
        """The name prefixes of this plugin's results, which slots may name."""
        return [self.name]

    def failure_flags(self, ctx: MeasurementContext) -> list[str]:
        """The general failure flags a bad slot centroid or shape sets (one per result)."""
        return [f"{self.name}_flag"]


REGISTRY: dict[str, type[Plugin]] = {}


def register(cls: type[Plugin]) -> type[Plugin]:
    """Class decorator: make a plugin available under its LSST name."""
    if cls.name in REGISTRY:
        raise ValueError(f"plugin {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls


def resolve(names: list[str]) -> list[Plugin]:
    """Instantiate the named plugins in execution order; unknown names are an error."""
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        known = ", ".join(sorted(REGISTRY))
        raise ValueError(f"unknown measurement plugin(s) {unknown}; known plugins: {known}")
    plugins = [REGISTRY[n]() for n in dict.fromkeys(names)]
    return sorted(plugins, key=lambda p: p.order)


def run_plugins(
    plugins: list[Plugin],
    ctx: MeasurementContext,
    out: dict[str, np.ndarray],
    columns: dict[str, Column],
    progress: Callable[[float, str], None] | None = None,
) -> None:
    """Allocate every plugin's columns in ``out`` and run the plugins in order."""
    n = ctx.n_sources
    for k, plugin in enumerate(plugins):
        cols = plugin.columns(ctx) + [plugin.flag_column()]
        for col in cols:
            columns[col.name] = col
            if col.name not in out:
                fill = np.nan if np.dtype(col.dtype).kind == "f" else 0
                out[col.name] = np.full(n, fill, dtype=col.dtype)
        try:
            plugin.measure(ctx, out)
        except Exception:  # a plugin failure is the plugin's flag, never a lost catalog
            log.exception("measurement plugin failed", extra={"plugin": plugin.name})
            out[f"{plugin.name}_flag"][:] = True
        for uses, slot_flag in ((plugin.uses_centroid, ctx.centroid_flag),
                                (plugin.uses_shape, ctx.shape_flag)):
            if uses and slot_flag is not None:
                for flag in plugin.failure_flags(ctx):
                    out[flag] |= slot_flag
        if progress is not None:
            progress((k + 1) / len(plugins), plugin.name)
