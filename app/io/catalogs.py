"""Catalog writers and readers: FITS, VOTable, CSV (ECSV), Parquet and JSON.

Every format keeps each column's unit; all but plain-JSON consumers also get the column
descriptions (JSON carries them in its ``columns`` list). Tables are astropy Tables whose
columns carry ``.unit`` and ``.description``, as the engine's catalogs do.

- FITS: binary table, units in ``TUNITn``, descriptions in ``TDOCn`` (as afw writes them)
  and, as far as they fit, as the ``TTYPEn`` comments,
  booleans as ``L``.
- VOTable: units and descriptions in the FIELD elements, the ``ALIAS`` metadata (the slot
  aliases, as afw's FITS cards) as ``<INFO name="ALIAS">`` elements. Null floats read
  back as NaN.
- CSV: ECSV with a ``,`` delimiter: units, descriptions and types in the ``#`` header, so
  astropy restores them and any CSV reader that skips ``#`` lines reads the values.
- Parquet: astropy's layout (the ECSV-style header in the schema metadata
  ``table_meta_yaml``), read back here with pyarrow alone.
- JSON: ``{"columns": [{"name", "unit", "description", "datatype"}], "rows": [{...}]}``
  with NaN and infinities as ``null``.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import orjson
import pyarrow.parquet as pq
from astropy.io import fits
from astropy.io.votable import from_table as votable_from_table
from astropy.io.votable import parse as parse_votable
from astropy.io.votable.tree import Info
from astropy.table import Column, MaskedColumn, Table
from astropy.table.meta import get_header_from_yaml
from astropy.units import Unit

from app.engine.columns import ColumnInfo, ColumnSet

CatalogFormat = Literal["fits", "votable", "csv", "parquet", "json"]
Target = str | os.PathLike[str] | BinaryIO

FORMATS: dict[str, tuple[str, str]] = {
    "fits": ("application/fits", ".fits"),
    "votable": ("application/x-votable+xml", ".vot"),
    "csv": ("text/csv", ".csv"),
    "parquet": ("application/vnd.apache.parquet", ".parquet"),
    "json": ("application/json", ".json"),
}
"""Format name → (media type, file extension)."""

SUFFIXES: dict[str, CatalogFormat] = {
    ".fits": "fits", ".fit": "fits", ".fts": "fits",
    ".vot": "votable", ".votable": "votable", ".xml": "votable",
    ".csv": "csv", ".ecsv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
    ".json": "json",
}

# JSON "datatype" by numpy kind and size: the VOTable names, which clients already know.
JSON_DATATYPES = {
    ("b", 1): "boolean",
    ("i", 1): "short", ("i", 2): "short", ("i", 4): "int", ("i", 8): "long",
    ("u", 1): "unsignedByte", ("u", 2): "int", ("u", 4): "long", ("u", 8): "long",
    ("f", 4): "float", ("f", 8): "double",
}
NUMPY_FROM_JSON = {
    "boolean": np.bool_, "short": np.int16, "int": np.int32, "long": np.int64,
    "unsignedByte": np.uint8, "float": np.float32, "double": np.float64, "char": np.str_,
}


def _check_format(format: str) -> CatalogFormat:
    if format not in FORMATS:
        raise ValueError(f"unknown catalog format {format!r}; expected one of {list(FORMATS)}")
    return format  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Writing


def catalog_bytes(table: Table | ColumnSet, format: CatalogFormat) -> bytes:
    """Serialize ``table`` in ``format`` (see `FORMATS`) to bytes.

    Parameters
    ----------
    table
        Columns with units and descriptions: a Table, or the engine's `ColumnSet`, which
        JSON is written from directly (a Table is made only for the other formats).
    format
        One of ``fits``, ``votable``, ``csv``, ``parquet``, ``json``.

    Returns
    -------
    bytes
        The file content, ready for an HTTP body with the media type in `FORMATS`.
    """
    if _check_format(format) == "json":
        return json_document(table)
    buffer = io.BytesIO()
    write_catalog(table, buffer, format)
    return buffer.getvalue()


def write_catalog(table: Table | ColumnSet, target: Target, format: CatalogFormat) -> None:
    """Write ``table`` to a path (overwritten) or a binary file object in ``format``.

    Parameters
    ----------
    table
        Columns with units and descriptions (a Table or a `ColumnSet`).
    target
        Path or writable binary file.
    format
        One of ``fits``, ``votable``, ``csv``, ``parquet``, ``json``.
    """
    writer = _WRITERS[_check_format(format)]
    if isinstance(table, ColumnSet) and format != "json":
        table = table.to_table()
    if isinstance(target, str | os.PathLike):
        with open(target, "wb") as f:
            writer(table, f)
    else:
        writer(table, target)


# FITS headers are ASCII: the symbols the catalogs' descriptions use, spelled out
ASCII_SPELLING = str.maketrans({
    "σ": "sigma", "Σ": "sum ", "²": "^2", "³": "^3", "×": "x", "·": "*", "−": "-", "–": "-",
    "≥": ">=", "≤": "<=", "≈": "~", "→": "->", "″": " arcsec", "′": " arcmin", "…": "...",
    "⁻": "^-", "¹": "1", "√": "sqrt", "α": "alpha", "δ": "delta", "χ": "chi", "µ": "u",
    "°": " deg", "’": "'", "“": '"', "”": '"',
})


def fits_text(text: str) -> str:
    """``text`` in printable ASCII, symbols spelled out (anything else becomes '?')."""
    spelled = text.translate(ASCII_SPELLING)
    return spelled.encode("ascii", "replace").decode("ascii")


def _write_fits(table: Table, f: BinaryIO) -> None:
    meta = dict(table.meta)
    plain = table.copy(copy_data=False)
    plain.meta.clear()
    hdu = fits.table_to_hdu(plain)
    for key, value in meta.items():
        # names longer than a FITS keyword (slot_CalibFlux) as explicit HIERARCH cards, which
        # astropy writes without complaint and reads back under the same name
        card_key = key if len(key) <= 8 and key.isupper() else f"HIERARCH {key}"
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:  # a list is one card per item, as afw writes its ALIAS entries
            if not isinstance(item, str | int | float | bool):
                item = str(item)
            hdu.header.append((card_key, fits_text(item) if isinstance(item, str) else item))
    for i, column in enumerate(table.columns.values(), start=1):
        if column.description:
            # the full text as afw writes it (TDOCn, CONTINUE cards if long); the TTYPEn
            # comment gets what fits on its card
            text = fits_text(column.description)
            hdu.header[f"TDOC{i}"] = text
            value = f"{'TTYPE' + str(i):8}= '{column.name:8}'"
            room = 80 - max(len(value), 30) - 3  # fixed format: comment after col 30, " / "
            hdu.header.comments[f"TTYPE{i}"] = text[: max(room, 0)]
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(f)


ALIAS_KEY = "ALIAS"
"""Metadata key of a catalog's aliases, ``"alias:target"`` strings (afw's FITS cards)."""


def _write_votable(table: Table, f: BinaryIO) -> None:
    votable = votable_from_table(table)
    entries = table.meta.get(ALIAS_KEY, [])
    for entry in [entries] if isinstance(entries, str) else entries:
        info = Info(name=ALIAS_KEY, value=str(entry))
        info.ID = None  # several INFO share the name; an XML ID must be unique
        votable.get_first_table().infos.append(info)
    votable.to_xml(f)


def _write_csv(table: Table, f: BinaryIO) -> None:
    text = io.StringIO()
    table.write(text, format="ascii.ecsv", delimiter=",")
    f.write(text.getvalue().encode("utf-8"))


def _write_parquet(table: Table, f: BinaryIO) -> None:
    # astropy's writer (the one that records units and descriptions) only takes a path.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "catalog.parquet"
        table.write(path, format="parquet")
        f.write(path.read_bytes())


def _write_json(table: Table | ColumnSet, f: BinaryIO) -> None:
    f.write(json_document(table))


def json_document(table: Table | ColumnSet) -> bytes:
    """``{"columns": [{name, unit, description, datatype}], "rows": [{…}]}`` as UTF-8.

    The column list depends only on the columns, not the rows, so it is encoded once per
    kind of table; the rows go through orjson, which writes NaN and infinities as null:
    a small synchronous answer costs about its rows.
    """
    columns = _column_set(table)
    names = tuple(columns.names)
    header = _json_header(names, tuple(map(columns.info, names)),
                          tuple(columns[name].dtype for name in names))
    rows = orjson.dumps(_rows(columns, finite_only=False))
    return b'{"columns":' + header + b',"rows":' + rows + b"}"


@lru_cache(maxsize=256)
def _json_header(names: tuple[str, ...], infos: tuple[ColumnInfo, ...],
                 dtypes: tuple[np.dtype, ...]) -> bytes:
    return orjson.dumps([
        {"name": name, "unit": None if info.unit is None else Unit(info.unit).to_string(),
         "description": info.description or None, "datatype": _json_datatype(name, dtype)}
        for name, info, dtype in zip(names, infos, dtypes, strict=True)])


def _column_set(table: Table | ColumnSet) -> ColumnSet:
    return table if isinstance(table, ColumnSet) else ColumnSet.from_table(table)


def json_rows(table: Table | ColumnSet) -> list[dict[str, Any]]:
    """The rows as JSON objects: NaN, infinities and masked entries are None."""
    return _rows(_column_set(table), finite_only=True)


def _rows(columns: ColumnSet, finite_only: bool) -> list[dict[str, Any]]:
    names = columns.names
    values = [json_values(columns[name], finite_only) for name in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]


def _json_datatype(name: str, dtype: np.dtype) -> str:
    kind = dtype.kind
    if kind in "US":
        return "char"
    try:
        return JSON_DATATYPES[(kind, dtype.itemsize)]
    except KeyError:
        raise ValueError(
            f"column {name!r} has type {dtype}, which JSON output does not "
            "support; expected booleans, integers, floats or strings"
        ) from None


def json_values(column: np.ndarray, finite_only: bool = True) -> list[Any]:
    """Python values for one column: masked entries become None, and so do NaN and
    infinities unless ``finite_only`` is false (for an encoder that writes them as null)."""
    if not finite_only and type(column) is np.ndarray and column.dtype.kind != "S":
        return column.tolist()  # the usual case, at a fraction of the cost of the checks
    data = np.asarray(column)
    if data.dtype.kind == "S":
        data = np.char.decode(data, "utf-8")
    missing = np.ma.getmaskarray(column) if isinstance(column, np.ma.MaskedArray) else None
    if finite_only and data.dtype.kind == "f":
        invalid = ~np.isfinite(data)
        missing = invalid if missing is None else missing | invalid
    if missing is None or not missing.any():
        return data.tolist()  # numpy scalars → Python bool/int/float/str
    values = np.empty(data.shape, dtype=object)
    values[...] = data.tolist()
    values[missing] = None
    return values.tolist()


_WRITERS = {
    "fits": _write_fits,
    "votable": _write_votable,
    "csv": _write_csv,
    "parquet": _write_parquet,
    "json": _write_json,
}


# ---------------------------------------------------------------------------------------------
# Reading


def read_catalog(source: Target, format: CatalogFormat | None = None) -> Table:
    """Read a catalog written by `write_catalog`, units and descriptions kept.

    Parameters
    ----------
    source
        Path or readable binary file.
    format
        One of ``fits``, ``votable``, ``csv``, ``parquet``, ``json``; guessed from the
        path's extension (``.fits``, ``.vot``/``.xml``, ``.csv``/``.ecsv``, ``.parquet``,
        ``.json``, optionally followed by ``.gz`` for FITS) when omitted.

    Returns
    -------
    astropy.table.Table
        Floats with NaN for nulls; other columns with nulls come back masked.
    """
    if format is None:
        format = guess_format(source)
    reader = _READERS[_check_format(format)]
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            return reader(f)
    return reader(source)


def guess_format(source: Target) -> CatalogFormat:
    """The catalog format a path's extension names."""
    if not isinstance(source, str | os.PathLike):
        raise ValueError("format is required to read a catalog from a file object")
    suffixes = [s.lower() for s in Path(source).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    if suffixes and suffixes[-1] in SUFFIXES:
        return SUFFIXES[suffixes[-1]]
    raise ValueError(
        f"cannot tell the catalog format of {os.fspath(source)!r} from its extension; "
        f"expected one of {sorted(SUFFIXES)} or an explicit format"
    )


def _read_fits(f: BinaryIO) -> Table:
    hdul = fits.open(f, memmap=False)
    try:
        return _fits_table(_binary_table(hdul))
    finally:
        hdul.close(closed=False)  # the caller owns ``f``


def read_fits_rows(path: str | os.PathLike[str], rows: np.ndarray,
                   columns: list[str] | None = None) -> Table:
    """Some rows (indices, in the order given) and columns of a FITS table file.

    The file is memory-mapped, so only those rows are read: a page of a 10⁶-row table
    costs a page.
    """
    with fits.open(path, memmap=True) as hdul:
        hdu = _binary_table(hdul)
        subset = fits.BinTableHDU(hdu.data[np.asarray(rows, dtype=np.int64)], hdu.header)
        table = _fits_table(subset)
    return table if columns is None else table[columns]


def _binary_table(hdul: fits.HDUList) -> fits.BinTableHDU:
    hdu = next((h for h in hdul if isinstance(h, fits.BinTableHDU)), None)
    if hdu is None:
        raise ValueError("the FITS file holds no binary table")
    return hdu


def _fits_table(hdu: fits.BinTableHDU) -> Table:
    """The HDU as a Table, with the descriptions `_write_fits` stored."""
    table = Table.read(hdu, character_as_bytes=False, mask_invalid=False)
    for i, column in enumerate(table.columns.values(), start=1):
        column.description = (hdu.header.get(f"TDOC{i}")
                              or hdu.header.comments[f"TTYPE{i}"] or None)
    return table


def _read_votable(f: BinaryIO) -> Table:
    votable = parse_votable(f).get_first_table()
    table = _unmask_floats(votable.to_table())
    aliases = [info.value for info in votable.infos if info.name == ALIAS_KEY]
    if aliases:
        table.meta[ALIAS_KEY] = aliases
    return table


def _read_csv(f: BinaryIO) -> Table:
    """ECSV as written here, or any plain comma-separated file with a header line."""
    text = f.read().decode("utf-8")
    if text.lstrip().startswith("# %ECSV"):
        return Table.read(text, format="ascii.ecsv")
    return Table.read(text, format="ascii.csv")


def _read_parquet(f: BinaryIO) -> Table:
    """Read astropy's Parquet layout with pyarrow alone (astropy's reader needs pandas)."""
    arrow = pq.read_table(f)
    table = Table()
    for name in arrow.column_names:
        data = arrow[name].to_numpy()
        if data.dtype == object and len(data):
            first = data[0]
            data = np.stack(data) if isinstance(first, np.ndarray) else data.astype(str)
        table[name] = data
    metadata = arrow.schema.metadata or {}
    yaml = metadata.get(b"table_meta_yaml")
    if yaml is not None:
        header = get_header_from_yaml(yaml.decode("utf-8").split("\n"))
        for spec in header["datatype"]:
            if spec["name"] in table.colnames:
                column = table[spec["name"]]
                column.unit = spec.get("unit")
                column.description = spec.get("description")
        table.meta.update(header.get("meta", {}))
    return table


def _read_json(f: BinaryIO) -> Table:
    document = json.loads(f.read())
    table = Table()
    for spec in document["columns"]:
        name = spec["name"]
        values = [row.get(name) for row in document["rows"]]
        dtype = NUMPY_FROM_JSON.get(spec.get("datatype"), None)
        missing = np.array([v is None for v in values], dtype=bool)
        if dtype in (np.float32, np.float64):
            data = np.array([np.nan if v is None else v for v in values], dtype=dtype)
            column: Column = Column(data, name=name)
        elif missing.any():
            filler = "" if dtype is np.str_ else 0
            data = np.array([filler if v is None else v for v in values], dtype=dtype)
            column = MaskedColumn(data, name=name, mask=missing)
        else:
            column = Column(np.array(values, dtype=dtype), name=name)
        column.unit = spec.get("unit")
        column.description = spec.get("description")
        table.add_column(column)
    return table


def _unmask_floats(table: Table) -> Table:
    """Replace masked float columns by plain ones with NaN, as the other formats give."""
    for name in table.colnames:
        column = table[name]
        if isinstance(column, MaskedColumn) and column.dtype.kind == "f":
            table[name] = Column(
                column.filled(np.nan), name=name, unit=column.unit,
                description=column.description, meta=column.meta,
            )
    return table


_READERS = {
    "fits": _read_fits,
    "votable": _read_votable,
    "csv": _read_csv,
    "parquet": _read_parquet,
    "json": _read_json,
}
