"""Client positions as JSON rows → the columns the forced engine measures.

Each row holds one coordinate pair (``ra``/``dec`` in degrees, or ``x``/``y`` in pixels) and
any tag columns, which must come back unchanged and in input order, so each tag column gets
one type (bool, int, float or str) and missing or null entries are masked, never guessed.
Bad rows raise `PositionsError`, whose ``code`` names the problem for an API error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from functools import cache
from typing import Any

import numpy as np

from app.engine.columns import ColumnSet
from app.engine.config import APERTURE_PLUGIN, FORCED_PLUGINS, ForcedConfig
from app.engine.forced import COORDINATES, forced_columns

SKY = ("ra", "dec")
PIXEL = ("x", "y")


class PositionsError(ValueError):
    """Rows that cannot be measured as given; the message says which and why."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@cache
def measurement_names() -> frozenset[str]:
    """Every column any forced plugin adds: names a client's tag may not take."""
    return frozenset(c.name for c in forced_columns(ForcedConfig(plugins=FORCED_PLUGINS), True))


def refuse_reserved(names: Iterable[str], reserved: AbstractSet[str]) -> None:
    """`PositionsError` if a tag takes a name the output adds: one of ``reserved``, or an
    aperture flux column of any radius (a request chooses its radii)."""
    clash = sorted(n for n in set(names) if n in reserved or n.startswith(f"{APERTURE_PLUGIN}_"))
    if clash:
        raise PositionsError(
            f"column(s) {', '.join(map(repr, clash))} have the names of output columns; "
            "rename them", code="reserved_column")


def coordinate_names(rows: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """``("ra", "dec")`` or ``("x", "y")``, the same for every row; 422 otherwise."""
    kinds = set()
    for i, row in enumerate(rows):
        sky = SKY[0] in row or SKY[1] in row
        pixel = PIXEL[0] in row or PIXEL[1] in row
        if sky == pixel:
            raise PositionsError(
                f"position {i} must give either ra and dec (degrees) or x and y (pixels)"
                + (", not both" if sky else ""), code="mixed_coordinates")
        kinds.add(SKY if sky else PIXEL)
    if len(kinds) > 1:
        raise PositionsError(
            "positions mix ra/dec rows and x/y rows; give one kind per request",
            code="mixed_coordinates")
    return kinds.pop() if kinds else PIXEL


def positions_columns(rows: Sequence[Mapping[str, Any]], reserved: AbstractSet[str]) -> ColumnSet:
    """The rows as columns: the coordinates as given, then the tags in first-seen order.

    ``reserved`` are names the output adds (measurement columns): a tag may not take one.
    """
    a, b = coordinate_names(rows)
    # both coordinates, even where no row gives one of them: a missing one is a 422
    names = list(dict.fromkeys([*(k for row in rows for k in row), a, b]))
    refuse_reserved(names, reserved)
    columns = ColumnSet(len(rows))
    for name in names:
        values = [row.get(name) for row in rows]
        if name in (a, b):
            columns.add(name, _coordinates(name, values), COORDINATES[name])
        else:
            columns.add(name, _tag_values(name, values))
    return columns


def _coordinates(name: str, values: list[Any]) -> np.ndarray:
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise PositionsError(f"position {i}: {name} must be a number, got {v!r}",
                                 code="invalid_position")
    data = np.asarray(values, float)
    if name == "dec":
        check_declinations(data, "position {}")
    return data


def check_declinations(dec: np.ndarray, row: str) -> None:
    """`PositionsError` naming (``row`` formatted with its index) the first row whose dec
    is a number outside [-90, 90] degrees: a position nowhere on the sky is a mistake to
    report, not one off the image to flag (as a NaN or infinite one is, whichever
    coordinate holds it)."""
    beyond = np.abs(dec) > 90  # NaN is not, infinities are: told apart only if needed
    if beyond.any() and len(bad := np.flatnonzero(beyond & np.isfinite(dec))):
        raise PositionsError(f"{row.format(int(bad[0]))}: dec must be within [-90, 90] "
                             f"degrees, got {dec[bad[0]]:g}", code="invalid_position")


def _tag_values(name: str, values: list[Any]) -> np.ndarray:
    """One type per column: bool, int (int64), float (nulls are NaN) or str (nulls masked)."""
    present = [v for v in values if v is not None]
    types = {type(v) for v in present}
    if not types or (types <= {int, float} and float in types):
        return np.array([np.nan if v is None else v for v in values], float)
    if len(types) != 1 or types.pop() not in (bool, int, str):
        kinds = ", ".join(sorted({type(v).__name__ for v in present}))
        raise PositionsError(
            f"tag column {name!r} holds {kinds}; a tag column takes one type of string, "
            "number or boolean (null for missing)", code="invalid_tag")
    filler: Any = {bool: False, int: 0, str: ""}[type(present[0])]
    data = np.array([filler if v is None else v for v in values])
    if len(present) < len(values):
        return np.ma.MaskedArray(data, mask=[v is None for v in values])
    return data
