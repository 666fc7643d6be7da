"""Positions as an uploaded table (CSV, FITS, VOTable or Parquet) for a forced job.

At submission the API checks the table without loading it whole: `inspect_positions` reads
the column names, the row count and only the two coordinate columns, so an unreadable file,
missing or non-numeric coordinates, or a tag named like an output column is refused with a
message the client can act on. The job's child reads it whole with `read_positions`: the
coordinates become float columns with units, every other column is a tag passed through
unchanged, in the file's order.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from astropy.io import fits
from astropy.io.votable import parse_single_table

from app.engine.columns import ColumnSet
from app.engine.forced import COORDINATES
from app.io.catalogs import SUFFIXES, CatalogFormat, read_catalog
from app.io.positions import PIXEL, SKY, PositionsError, check_declinations, refuse_reserved

FILE_FORMATS: dict[CatalogFormat, str] = {
    "csv": ".csv", "fits": ".fits", "votable": ".vot", "parquet": ".parquet"}
"""Formats a positions table may come in, and the extension it is stored under."""


@dataclass(frozen=True)
class PositionsFileInfo:
    """What the submission learnt of an uploaded positions table."""

    format: CatalogFormat
    rows: int
    columns: list[str]
    coordinates: tuple[str, str]
    sky_box: dict[str, float] | None
    """The positions' RA/Dec bounds (`sky_box`) when they are sky coordinates."""


def sniff_format(path: str | os.PathLike[str], filename: str | None) -> CatalogFormat:
    """The table's format from its first bytes (FITS, Parquet, VOTable), else CSV text.

    The content decides, not the name; the name's extension only picks between text
    formats the content cannot tell apart.
    """
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"SIMPLE  ="):
        return "fits"
    if head.startswith(b"PAR1"):
        return "parquet"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<"):
        return "votable"
    suffix = Path(filename or "").suffix.lower()
    if SUFFIXES.get(suffix) in ("fits", "parquet", "votable"):
        raise PositionsError(
            f"{filename} does not hold a {SUFFIXES[suffix]} table (its content says "
            "otherwise); send CSV, FITS, VOTable or Parquet", code="unreadable_table")
    return "csv"


def sky_box(ra: np.ndarray, dec: np.ndarray) -> dict[str, float]:
    """``ra_min/ra_max/dec_min/dec_max`` of sky positions, degrees: the RA interval is the
    circle less its widest empty gap, so ``ra_min > ra_max`` when it wraps through 0°."""
    ra = np.sort(np.mod(np.asarray(ra, float), 360.0))
    gaps = np.diff(np.append(ra, ra[0] + 360.0))
    widest = int(np.argmax(gaps))
    return {"ra_min": float(ra[(widest + 1) % len(ra)]), "ra_max": float(ra[widest]),
            "dec_min": float(np.min(dec)), "dec_max": float(np.max(dec))}


def coordinate_pair(columns: Sequence[str]) -> tuple[str, str]:
    """``("ra", "dec")`` or ``("x", "y")`` among a table's column names; 422 otherwise."""
    names = set(columns)
    sky = set(SKY) <= names
    pixel = set(PIXEL) <= names
    if sky and pixel:
        raise PositionsError(
            "the table has both ra/dec and x/y columns; keep one pair (rename the other)",
            code="mixed_coordinates")
    if sky or pixel:
        return SKY if sky else PIXEL
    hints = []
    for pair in (SKY, PIXEL):
        have = [c for c in pair if c in names]
        if len(have) == 1:
            missing = next(c for c in pair if c not in names)
            hints.append(f"{have[0]!r} needs {missing!r} beside it")
    near = [c for c in columns if c.lower() in (*SKY, *PIXEL) and c != c.lower()]
    if near:
        hints.append(f"rename {', '.join(map(repr, near))} in lower case")
    hint = "".join(f"; {h}" for h in hints)
    raise PositionsError(
        "positions need columns ra and dec (degrees, ICRS) or x and y (pixels); the table has "
        f"{', '.join(map(repr, columns)) or 'no columns'}{hint}", code="missing_coordinates")


def inspect_positions(path: str | os.PathLike[str], format: CatalogFormat,
                      reserved: AbstractSet[str]) -> PositionsFileInfo:
    """Column names, row count and coordinates of the table, its tags checked against
    ``reserved`` (the names the output adds); `PositionsError` when it cannot be measured."""
    try:
        columns, rows, values = _INSPECTORS[format](Path(path))
    except PositionsError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError, pa.ArrowException,
            ElementTree.ParseError) as error:
        raise PositionsError(f"the {format} table cannot be read: {error}",
                             code="unreadable_table") from error
    pair = coordinate_pair(columns)
    refuse_reserved(columns, reserved)
    if rows == 0:
        raise PositionsError("the table has no rows", code="no_positions")
    va, vb = (_numbers(name, values[name], format) for name in pair)
    if pair == SKY:
        check_declinations(vb, "row {} (0-based)")
    return PositionsFileInfo(format, rows, list(columns), pair,
                             sky_box(va, vb) if pair == SKY else None)


def read_positions(path: str | os.PathLike[str], format: CatalogFormat) -> ColumnSet:
    """The whole table: coordinates as float columns with units, the rest as given."""
    try:
        table = read_catalog(path, format)
    except (OSError, ValueError) as error:
        raise PositionsError(f"the {format} table cannot be read: {error}",
                             code="unreadable_table") from error
    columns = ColumnSet.from_table(table)
    for name in coordinate_pair(table.colnames):
        columns.add(name, _numbers(name, table[name], format), COORDINATES[name])
    return columns


def _numbers(name: str, column: object, format: str) -> np.ndarray:
    """A coordinate column as floats; every entry a number."""
    data = np.ma.asarray(column)
    if data.dtype.kind not in "iuf":
        raise PositionsError(f"column {name!r} of the {format} table holds {data.dtype} "
                             "values; coordinates must be numbers", code="invalid_position")
    values = np.ma.filled(data.astype(float), np.nan)
    missing = np.nonzero(np.isnan(values))[0]
    if len(missing):
        raise PositionsError(f"column {name!r} is empty in row {int(missing[0])} (0-based); "
                             "every position needs both coordinates", code="invalid_position")
    return values


Inspection = tuple[list[str], int, dict[str, object]]
"""Column names, row count, and the coordinate columns' values by name."""


def _fits(path: Path) -> Inspection:
    with fits.open(path, memmap=True) as hdul:
        hdu = next((h for h in hdul if isinstance(h, fits.BinTableHDU)), None)
        if hdu is None:
            raise PositionsError("the FITS file holds no binary table", code="unreadable_table")
        names = list(hdu.columns.names)
        pair = coordinate_pair(names)
        return names, int(hdu.header["NAXIS2"]), {n: np.array(hdu.data[n]) for n in pair}


def _parquet(path: Path) -> Inspection:
    parquet = pq.ParquetFile(path)
    names = list(parquet.schema_arrow.names)
    pair = coordinate_pair(names)
    table = parquet.read(columns=list(pair))
    return names, parquet.metadata.num_rows, {n: _arrow_values(table[n]) for n in pair}


def _csv(path: Path) -> Inspection:
    """Plain CSV with a header line, or ECSV (its ``#`` header lines skipped)."""
    comments = 0
    header = ""
    with path.open("r", encoding="utf-8", newline="") as f:
        for line in f:
            if not line.startswith("#"):
                header = line
                break
            comments += 1
    names = [n.strip() for n in next(csv.reader([header]), [])] if header.strip() else []
    pair = coordinate_pair(names)
    table = pacsv.read_csv(
        path, read_options=pacsv.ReadOptions(skip_rows=comments),
        convert_options=pacsv.ConvertOptions(
            include_columns=list(pair), column_types={n: pa.float64() for n in pair}))
    return names, table.num_rows, {n: _arrow_values(table[n]) for n in pair}


def _votable(path: Path) -> Inspection:
    """FIELD names from the head of the XML, then only the coordinate columns parsed."""
    names = []
    for _, element in ElementTree.iterparse(path, events=("start",)):
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "FIELD":
            names.append(element.get("name") or element.get("ID") or "")
        elif tag == "DATA":
            break
    pair = coordinate_pair(names)
    table = parse_single_table(path, columns=list(pair)).to_table()
    return names, len(table), {n: table[n] for n in pair}


def _arrow_values(column: pa.ChunkedArray) -> object:
    """Numbers as a numpy array, nulls masked; other types as they are, for the check."""
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        data = column.cast(pa.float64()).fill_null(np.nan).to_numpy()
        return np.ma.masked_invalid(data)
    return column.to_numpy(zero_copy_only=False)


_INSPECTORS = {"fits": _fits, "parquet": _parquet, "csv": _csv, "votable": _votable}
