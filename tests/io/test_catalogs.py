"""Catalog writers/readers: every format round-trips values, units and descriptions."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from app.io.catalogs import FORMATS, catalog_bytes, read_catalog, write_catalog

DESCRIPTIONS = {
    "id": "unique source id",
    "coord_ra": "right ascension (ICRS)",
    "base_PsfFlux_instFlux": "PSF flux",
    "flag": "measurement failed",
    "band": "band of the measurement",
}


def make_table() -> Table:
    table = Table()
    table["id"] = np.array([1, 2**40, -3], dtype=np.int64)
    table["coord_ra"] = np.array([150.1, 150.2, 150.3]) * u.deg
    table["base_PsfFlux_instFlux"] = np.array([12.5, np.nan, -np.inf]) * u.nJy
    table["flag"] = np.array([True, False, True])
    table["band"] = ["g", "r", "long name"]
    for name, description in DESCRIPTIONS.items():
        table[name].description = description
    return table


def assert_round_trip(got: Table, want: Table, infinities: bool = True) -> None:
    assert got.colnames == want.colnames
    np.testing.assert_array_equal(got["id"], want["id"])
    assert got["id"].dtype.kind == "i"
    np.testing.assert_array_equal(got["coord_ra"], want["coord_ra"])
    flux = np.asarray(got["base_PsfFlux_instFlux"], dtype=float)
    assert flux[0] == 12.5 and np.isnan(flux[1])
    assert flux[2] == -np.inf if infinities else np.isnan(flux[2])
    assert got["flag"].dtype == bool and list(got["flag"]) == [True, False, True]
    assert [str(v) for v in got["band"]] == ["g", "r", "long name"]
    assert got["coord_ra"].unit == u.deg
    assert got["base_PsfFlux_instFlux"].unit == u.nJy
    assert got["id"].unit is None
    for name, description in DESCRIPTIONS.items():
        assert got[name].description == description, name


@pytest.mark.parametrize("format", sorted(FORMATS))
def test_round_trip_bytes(format: str) -> None:
    buffer = io.BytesIO(catalog_bytes(make_table(), format))  # type: ignore[arg-type]
    got = read_catalog(buffer, format)  # type: ignore[arg-type]
    assert_round_trip(got, make_table(), infinities=format != "json")
    assert not buffer.closed  # the caller's file stays theirs


@pytest.mark.parametrize("format", sorted(FORMATS))
def test_round_trip_path_guesses_format(tmp_path: Path, format: str) -> None:
    path = tmp_path / f"catalog{FORMATS[format][1]}"
    write_catalog(make_table(), path, format)  # type: ignore[arg-type]
    # JSON turns every non-finite float into null, so -inf reads back as NaN.
    assert_round_trip(read_catalog(path), make_table(), infinities=format != "json")


def test_json_shape() -> None:
    document = json.loads(catalog_bytes(make_table(), "json"))
    columns = {c["name"]: c for c in document["columns"]}
    assert columns["coord_ra"] == {"name": "coord_ra", "unit": "deg",
                                   "description": "right ascension (ICRS)",
                                   "datatype": "double"}
    assert columns["id"]["unit"] is None and columns["id"]["datatype"] == "long"
    assert columns["flag"]["datatype"] == "boolean"
    assert columns["band"]["datatype"] == "char"
    assert document["rows"][0] == {"id": 1, "coord_ra": 150.1, "base_PsfFlux_instFlux": 12.5,
                                   "flag": True, "band": "g"}
    assert document["rows"][1]["base_PsfFlux_instFlux"] is None
    assert document["rows"][2]["base_PsfFlux_instFlux"] is None
    assert document["rows"][1]["id"] == 2**40 and document["rows"][1]["flag"] is False


def test_json_masked_values_are_null() -> None:
    table = Table(masked=True)
    table["n"] = np.ma.array([1, 2], mask=[False, True], dtype=np.int32)
    document = json.loads(catalog_bytes(table, "json"))
    assert [row["n"] for row in document["rows"]] == [1, None]
    back = read_catalog(io.BytesIO(catalog_bytes(table, "json")), "json")
    assert back["n"][0] == 1 and back["n"].mask.tolist() == [False, True]


def test_fits_header_carries_units_and_descriptions() -> None:
    with fits.open(io.BytesIO(catalog_bytes(make_table(), "fits"))) as hdul:
        header = hdul[1].header
        names = [header[f"TTYPE{i}"] for i in range(1, 6)]
        i = names.index("coord_ra") + 1
        assert header[f"TUNIT{i}"] == "deg"
        assert header.comments[f"TTYPE{i}"] == "right ascension (ICRS)"
        assert header[f"TFORM{names.index('flag') + 1}"] == "L"


def test_csv_is_plain_csv_after_comment_lines() -> None:
    text = catalog_bytes(make_table(), "csv").decode()
    assert text.startswith("# %ECSV")
    rows = list(csv.reader(line for line in text.splitlines() if not line.startswith("#")))
    assert rows[0] == ["id", "coord_ra", "base_PsfFlux_instFlux", "flag", "band"]
    assert rows[3][4] == "long name"


def test_media_types() -> None:
    assert FORMATS["json"] == ("application/json", ".json")
    assert FORMATS["fits"][0] == "application/fits"
    assert FORMATS["votable"][0] == "application/x-votable+xml"


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown catalog format"):
        catalog_bytes(make_table(), "xlsx")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="extension"):
        read_catalog("catalog.txt")


@pytest.mark.parametrize("format", ["fits", "votable", "csv", "parquet"])
def test_slot_aliases_travel_with_the_catalog(format: str) -> None:
    """afw's ALIAS entries, one card each in FITS, INFO elements in a VOTable."""
    table = make_table()
    aliases = ["slot_PsfFlux:base_PsfFlux", "slot_Centroid:base_SdssCentroid"]
    table.meta["ALIAS"] = aliases
    got = read_catalog(io.BytesIO(catalog_bytes(table, format)), format)  # type: ignore[arg-type]
    assert list(got.meta["ALIAS"]) == aliases
    assert_round_trip(got, make_table())
    if format == "fits":
        with fits.open(io.BytesIO(catalog_bytes(table, "fits"))) as hdul:
            assert [v for k, v in hdul[1].header.items() if k == "ALIAS"] == aliases
