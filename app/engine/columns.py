"""Named columns of one length, with units and descriptions: a catalog before astropy.

An astropy Table costs tens of microseconds per column to build, more than measuring a few
positions does, so the forced engine and the synchronous request work on this plain
container and make a Table only for the file formats that need one. Columns are numpy
arrays; a column with missing entries (a client's tag left out in some rows) is a masked
array. Names keep the order they were added in. ``meta`` is the table's metadata (its
slot aliases among it), carried to the Table and the files made from it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np
from astropy.table import Column, MaskedColumn, Table


class ColumnInfo(NamedTuple):
    """What a column says of itself beyond its values: unit (astropy string), description.

    A named tuple, so that a table's infos hash at C speed: JSON answers look their column
    list up by them (`app.io.catalogs.json_document`)."""

    unit: str | None = None
    description: str | None = None


class ColumnSet:
    """Ordered named 1-d arrays of one length, each with a `ColumnInfo`."""

    def __init__(self, length: int = 0) -> None:
        self._length = length
        self._data: dict[str, np.ndarray] = {}
        self._info: dict[str, ColumnInfo] = {}
        self.meta: dict[str, Any] = {}

    @classmethod
    def from_arrays(cls, data: Mapping[str, np.ndarray],
                    info: Mapping[str, ColumnInfo] | None = None) -> ColumnSet:
        """The arrays of ``data`` in its order; ``info`` for those that have one."""
        arrays = {name: np.asanyarray(values) for name, values in data.items()}
        out = cls(len(next(iter(arrays.values()))) if arrays else 0)
        for name, values in arrays.items():
            out.add(name, values, (info or {}).get(name, ColumnInfo()))
        return out

    @classmethod
    def from_table(cls, table: Table) -> ColumnSet:
        """A Table's columns (masked ones stay masked), units and descriptions."""
        out = cls(len(table))
        for name, column in table.columns.items():
            values = (np.ma.MaskedArray(column.data.data, mask=np.ma.getmaskarray(column))
                      if isinstance(column, MaskedColumn) else np.asarray(column))
            unit = None if column.unit is None else column.unit.to_string()
            out.add(name, values, ColumnInfo(unit, column.description or None))
        out.meta = dict(table.meta)
        return out

    def add(self, name: str, values: np.ndarray, info: ColumnInfo | None = None) -> None:
        """Append (or replace, keeping its place) column ``name``."""
        values = np.asanyarray(values)
        if values.shape != (self._length,):
            raise ValueError(f"column {name!r} has shape {values.shape}, expected "
                             f"({self._length},)")
        self._data[name] = values
        self._info[name] = info or ColumnInfo()

    def __len__(self) -> int:
        return self._length

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def __getitem__(self, name: str) -> np.ndarray:
        return self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    @property
    def names(self) -> list[str]:
        return list(self._data)

    def info(self, name: str) -> ColumnInfo:
        return self._info[name]

    def copy(self) -> ColumnSet:
        """A new set of the same columns (the arrays shared), to add columns to."""
        out = ColumnSet(self._length)
        out._data, out._info = dict(self._data), dict(self._info)
        out.meta = dict(self.meta)
        return out

    def joined(self, other: ColumnSet, names: list[str], start: int) -> ColumnSet:
        """These columns, then columns ``names`` of ``other`` from its row ``start`` on, as
        many rows as this set has (views: nothing is copied)."""
        stop = start + self._length
        if stop > len(other):
            raise ValueError(f"rows {start}:{stop} of a set of {len(other)}")
        out = self.copy()
        for name in names:
            out._data[name] = other._data[name][start:stop]
            out._info[name] = other._info[name]
        return out

    def take(self, rows: np.ndarray) -> ColumnSet:
        """The given rows (indices or a boolean mask), every column."""
        rows = np.asarray(rows)
        length = int(rows.sum()) if rows.dtype == bool else len(rows)
        out = ColumnSet(length)
        for name, values in self._data.items():
            out.add(name, values[rows], self._info[name])
        out.meta = dict(self.meta)
        return out

    def concat(self, other: ColumnSet) -> ColumnSet:
        """These rows, then ``other``'s; a column one side lacks is masked on that side.
        The metadata is both sides', this side's where they differ."""
        out = ColumnSet(len(self) + len(other))
        out.meta = {**other.meta, **self.meta}
        for name in dict.fromkeys([*self.names, *other.names]):
            parts = [part._data.get(name) for part in (self, other)]
            kinds = [p for p in parts if p is not None]
            dtype = np.result_type(*kinds)
            pieces = [np.ma.masked_all(len(part), dtype) if values is None
                      else np.ma.asarray(values).astype(dtype, copy=False)
                      for part, values in zip((self, other), parts, strict=True)]
            joined = np.ma.concatenate(pieces)
            if not np.ma.getmaskarray(joined).any():
                joined = np.asarray(joined.data)
            info = self._info.get(name) or other._info[name]
            out.add(name, joined, info)
        return out

    def to_table(self) -> Table:
        """An astropy Table of these columns, units and descriptions set."""
        columns = []
        for name, values in self._data.items():
            info = self._info[name]
            if isinstance(values, np.ma.MaskedArray):
                column: Column = MaskedColumn(values.data, name=name, mask=values.mask,
                                              unit=info.unit, description=info.description,
                                              copy=False)
            else:
                column = Column(values, name=name, unit=info.unit,
                                description=info.description, copy=False)
            columns.append(column)
        return Table(columns, copy=False, meta=dict(self.meta))
