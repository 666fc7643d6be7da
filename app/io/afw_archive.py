"""afw's archive of persistable objects in a FITS file: read it, and write one afw can read.

An LSST Exposure keeps what is not pixels (PSF, PhotoCalib, ApCorrMap, FilterLabel, SkyWcs,
...) in an *archive* (afw ``table/io``): the primary header's ``AR_HDU`` (1-based) points at an
``ARCHIVE_INDEX`` binary table, and ``ARCHIVE_ID_<NAME>`` (and the older ``<NAME>_ID``) keys give
each component's archive id. Every index row says which data catalog holds rows of an object
(``cat.archive``, counted from the index), which of that object's catalogs it is
(``cat.persistable``) and which rows (``row0``, ``nrows``). Each data catalog is a binary table
(``EXTTYPE = 'ARCHIVE_DATA'``, ``AR_CATN`` its number) shared by all objects whose tables have
the same schema. Flag fields of afw tables live as bits of one ``flags`` column, named by
``TFLAGn`` keys. This module reads such archives (``ArchiveReader``), decodes the kinds that
are not PSFs (PhotoCalib, ChebyshevBoundedField, ApCorrMap, FilterLabel), and writes them
(``ArchiveWriter``) with the layout of afw's ``OutputArchive``. PSFs are in
:mod:`app.io.afw_psf`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.io import fits

from app.engine.apcorr import ApCorr
from app.engine.exposure import PhotoCalib
from app.engine.fields import ChebyshevBoundedField

AFW_TABLE_VERSION = 3  # field names joined by "_" (version 0 joined them by ".")
CATN_COMMENT = "# of this catalog relative to the start of this archive"
# afw's ExposureInfo components read by their historic "<NAME>_ID" keys as well
LEGACY_COMPONENTS = ("PSF", "SKYWCS", "WCS", "COADD_INPUTS", "AP_CORR_MAP", "VALID_POLYGON",
                     "TRANSMISSION_CURVE", "DETECTOR", "PHOTOCALIB")
BAND_NAMES = {"u", "g", "r", "i", "z", "y", "SH", "PH", "VR", "white"}  # afw's _isBand


class ArchiveError(ValueError):
    """The archive, or an object in it, is not what afw writes."""


@dataclass(frozen=True)
class ArchivedObject:
    """One persistable: its class name, module, and its catalogs' rows in order."""

    id: int
    name: str
    module: str
    catalogs: list[fits.FITS_rec]
    headers: list[fits.Header]

    def one_row(self, catalog: int = 0) -> fits.FITS_record:
        """The single row afw's factories expect (``catalogs[i].size() == 1``)."""
        if len(self.catalogs) <= catalog or len(self.catalogs[catalog]) != 1:
            raise ArchiveError(f"archived {self.name} #{self.id} does not have one row in "
                               f"catalog {catalog}")
        return self.catalogs[catalog][0]


def value(rows: fits.FITS_rec | fits.FITS_record, header: fits.Header, name: str) -> Any:
    """Field ``name`` of afw table rows: a column, or a bit of the ``flags`` column.

    Files of afw table version 0 joined field names with "." where later ones use "_".
    """
    names = rows.array.names if isinstance(rows, fits.FITS_record) else rows.names
    for candidate in (name, name.replace("_", ".")):
        if candidate in names:
            return rows[candidate]
    for key, flag in header.items():
        if re.fullmatch(r"TFLAG\d+", key) and flag == name:
            bit = int(key[5:]) - 1
            bits = rows["flags"]
            return bool(bits[bit]) if isinstance(rows, fits.FITS_record) else bits[:, bit]
    raise ArchiveError(f"the archived table has no field {name!r}")


class ArchiveReader:
    """The archive of an afw FITS file, objects found by their archive ids."""

    def __init__(self, hdul: fits.HDUList, primary: fits.Header) -> None:
        ar_hdu = primary.get("AR_HDU")
        if not isinstance(ar_hdu, int) or not 1 <= ar_hdu <= len(hdul):
            raise ArchiveError(f"AR_HDU = {ar_hdu!r} does not point at an HDU of the file")
        self._hdul = hdul
        self._base = ar_hdu - 1
        index_hdu = hdul[self._base]
        if str(index_hdu.header.get("EXTTYPE", index_hdu.name)).strip() != "ARCHIVE_INDEX":
            raise ArchiveError(f"HDU {ar_hdu} (AR_HDU) is not an ARCHIVE_INDEX table")
        index = index_hdu.data
        try:
            self._index = {
                "id": np.asarray(index["id"], int),
                "cat.archive": np.asarray(index["cat.archive"], int),
                "cat.persistable": np.asarray(index["cat.persistable"], int),
                "row0": np.asarray(index["row0"], int),
                "nrows": np.asarray(index["nrows"], int),
                "name": [str(n).strip() for n in index["name"]],
                "module": [str(m).strip() for m in index["module"]],
            }
        except (KeyError, TypeError) as exc:
            raise ArchiveError(f"the ARCHIVE_INDEX table lacks a column: {exc}") from exc
        self.ids = component_ids(primary)

    @classmethod
    def of(cls, hdul: fits.HDUList, primary: fits.Header) -> ArchiveReader | None:
        """The file's archive, None when its header points at none."""
        return cls(hdul, primary) if "AR_HDU" in primary else None

    def name_of(self, archive_id: int) -> str:
        rows = np.flatnonzero(self._index["id"] == archive_id)
        if not len(rows):
            raise ArchiveError(f"archive id {archive_id} is not in the ARCHIVE_INDEX")
        return self._index["name"][rows[0]]

    def get(self, archive_id: int) -> ArchivedObject:
        """The object with this archive id, its catalogs in ``cat.persistable`` order."""
        rows = np.flatnonzero(self._index["id"] == archive_id)
        if not len(rows):
            raise ArchiveError(f"archive id {archive_id} is not in the ARCHIVE_INDEX")
        rows = rows[np.argsort(self._index["cat.persistable"][rows], kind="stable")]
        catalogs, headers = [], []
        for r in rows:
            number = int(self._index["cat.archive"][r])
            position = self._base + number
            if number < 1 or position >= len(self._hdul):
                raise ArchiveError(f"archive id {archive_id} points at catalog {number}, past "
                                   "the end of the file")
            hdu = self._hdul[position]
            if not isinstance(hdu, fits.BinTableHDU):
                raise ArchiveError(f"archive catalog {number} is not a binary table")
            row0, nrows = int(self._index["row0"][r]), int(self._index["nrows"][r])
            data = hdu.data
            if data is None or row0 < 0 or row0 + nrows > len(data):
                have = 0 if data is None else len(data)
                raise ArchiveError(f"archive id {archive_id} needs rows {row0}..{row0 + nrows} "
                                   f"of catalog {number}, which has {have}")
            catalogs.append(data[row0:row0 + nrows])
            headers.append(hdu.header)
        first = rows[0]
        return ArchivedObject(archive_id, self._index["name"][first], self._index["module"][first],
                              catalogs, headers)


def component_ids(primary: fits.Header) -> dict[str, int]:
    """ExposureInfo component → archive id: ``ARCHIVE_ID_<NAME>`` keys, then the historic
    ``<NAME>_ID`` ones (as afw's ExposureFitsReader reads them). An id of 0 is "none"."""
    ids: dict[str, int] = {}
    for key, val in primary.items():
        if key.startswith("ARCHIVE_ID_") and isinstance(val, int) and val > 0:
            ids[key[len("ARCHIVE_ID_"):]] = val
    for name in LEGACY_COMPONENTS:
        val = primary.get(f"{name}_ID")
        if name not in ids and isinstance(val, int) and val > 0:
            ids[name] = val
    return ids


# ---------------------------------------------------------------------------------------------
# Decoders of the kinds that are not PSFs


def decode_bounded_field(archive: ArchiveReader, archive_id: int) -> ChebyshevBoundedField:
    """afw's ChebyshevBoundedField: ``order_x``, ``bbox_{min,max}_{x,y}`` (inclusive, parent
    frame) and ``coefficients`` ((order_y + 1) × (order_x + 1), row-major: y then x)."""
    obj = archive.get(archive_id)
    if obj.name != "ChebyshevBoundedField":
        raise ArchiveError(f"a {obj.name} bounded field is not decoded (only "
                           "ChebyshevBoundedField)")
    row, header = obj.one_row(), obj.headers[0]
    nx = int(value(row, header, "order_x")) + 1
    coefficients = np.atleast_1d(np.asarray(value(row, header, "coefficients"), float))
    if nx < 1 or coefficients.size % nx:
        raise ArchiveError(f"ChebyshevBoundedField #{archive_id} has {coefficients.size} "
                           f"coefficients, not a multiple of order_x + 1 = {nx}")
    bbox = tuple(int(value(row, header, f"bbox_{end}_{axis}"))
                 for end, axis in (("min", "x"), ("min", "y"), ("max", "x"), ("max", "y")))
    return ChebyshevBoundedField(bbox, coefficients.reshape(-1, nx))  # type: ignore[arg-type]


def decode_photocalib(archive: ArchiveReader, archive_id: int) -> tuple[PhotoCalib, str | None]:
    """afw's PhotoCalib (``calibrationMean`` nJy per count) and a note when it varies over
    the image: skyphot's calibration is one number, so a varying one is reduced to its mean
    (afw's ``calibrationMean``)."""
    obj = archive.get(archive_id)
    row, header = obj.one_row(), obj.headers[0]
    try:
        version = int(value(row, header, "version"))
    except ArchiveError:
        version = 0
    if version < 1:
        raise ArchiveError("PhotoCalib version 0 was in maggies, not nJy; it is not decoded")
    mean = float(value(row, header, "calibrationMean"))
    err = float(value(row, header, "calibrationErr"))
    if not (mean > 0 and np.isfinite(mean)):
        raise ArchiveError(f"PhotoCalib calibrationMean = {mean} is not a positive number")
    try:
        constant = bool(value(row, header, "isConstant"))
    except ArchiveError:
        constant = True
    note = None if constant else (
        "the archived PhotoCalib varies over the image; its mean calibrationMean "
        f"{mean:.6g} nJy/count is used everywhere")
    return PhotoCalib(mean, err if np.isfinite(err) else 0.0), note


def decode_apcorr_map(archive: ArchiveReader, archive_id: int, xy0: tuple[int, int]
                      ) -> tuple[dict[str, ApCorr], list[str]]:
    """afw's ApCorrMap as skyphot's corrections keyed by flux stem, and notes on what was
    left out.

    Each ``<stem>_instFlux`` field becomes the correction's field, moved from afw's parent
    frame to the array frame (``-xy0``); its ``<stem>_instFluxErr`` field (LSST's
    MeasureApCorrTask stores a constant one) gives ``err``: its mean over the field's box
    when it is not constant.
    """
    obj = archive.get(archive_id)
    if len(obj.catalogs) != 1:
        raise ArchiveError("an ApCorrMap is one catalog of (name, field) rows")
    rows, header = obj.catalogs[0], obj.headers[0]
    names = [str(n).strip() for n in value(rows, header, "name")]
    ids = [int(i) for i in value(rows, header, "field")]
    fields: dict[str, ChebyshevBoundedField] = {}
    notes: list[str] = []
    for name, field_id in zip(names, ids, strict=True):
        try:
            fields[name] = decode_bounded_field(archive, field_id)
        except ArchiveError as exc:
            notes.append(f"archived aperture correction {name} not decoded: {exc}")
    out: dict[str, ApCorr] = {}
    for name in names:
        if not name.endswith("_instFlux") or name not in fields:
            continue
        stem = name[: -len("_instFlux")]
        err_field = fields.get(f"{stem}_instFluxErr")
        err = 0.0 if err_field is None else (
            float(err_field.coefficients[0, 0]) if err_field.coefficients.size == 1
            else err_field.mean())
        out[stem] = ApCorr(fields[name].relocated(-xy0[0], -xy0[1]), err, 0)
    return out, notes


def decode_filter_label(archive: ArchiveReader, archive_id: int) -> tuple[str | None, str | None]:
    """afw's FilterLabel: (band, physical filter), each None when not set."""
    obj = archive.get(archive_id)
    row, header = obj.one_row(), obj.headers[0]
    out = []
    for name in ("band", "physical"):
        exists = bool(value(row, header, f"{name}_exists"))
        text = str(value(row, header, name)).strip()
        out.append(text if exists and text else None)
    return out[0], out[1]


def is_band_name(name: str) -> bool:
    """afw's test of whether a filter name is a band: ugrizy and a few others, or a narrow-
    (``N921``) or intermediate-band (``I945``) name."""
    return (name in BAND_NAMES or re.fullmatch(r"N\d+", name) is not None
            or re.fullmatch(r"I\d{2,}", name) is not None)


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class Field:
    """One field of an afw table schema: FITS form ("J", "D", "E", "64A", "9D", ...) or
    "Flag"; ``array`` marks afw Array fields (TCCLS 'Array'), even of length 1."""

    name: str
    form: str
    doc: str
    unit: str = ""
    array: bool = False


@dataclass
class _Catalog:
    schema: tuple[Field, ...]
    number: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # AR_NAME values, in order
    extname: str | None = None
    extver: int = 1


INDEX_SCHEMA = (
    Field("id", "J", "Archive ID of the persistable object that owns the records pointed at by "
          "this entry"),
    Field("cat.archive", "J", "index of the catalog this entry points to, from the perspective "
          "of the archive"),
    Field("cat.persistable", "J", "index of the catalog this entry points to, from the "
          "perspective of the Persistable"),
    Field("row0", "J", "first row used by the persistable object in this catalog"),
    Field("nrows", "J", "number of rows used by the persistable object in this catalog"),
    Field("name", "64A", "unique name for the persistable object's class"),
    Field("module", "64A", "Python module that should be imported to register the object's "
          "factory"),
)


class ArchiveWriter:
    """Collects persistables as afw's OutputArchive does: ids from 1 in the order objects
    are put, one catalog per distinct schema (so objects of one kind share rows of one
    table), an index row per saved catalog."""

    def __init__(self) -> None:
        self._next_id = 1
        self._index: list[dict[str, Any]] = []
        self._catalogs: list[_Catalog] = []

    def new_id(self) -> int:
        """The id of the next object put (afw assigns it before the object writes itself,
        so objects it contains get later ids and their index rows come first)."""
        archive_id = self._next_id
        self._next_id += 1
        return archive_id

    def save(self, archive_id: int, name: str, module: str, schema: tuple[Field, ...],
             rows: list[dict[str, Any]], persistable_catalog: int = 0) -> None:
        """Append ``rows`` of object ``archive_id`` to the catalog of this schema."""
        catalog = next((c for c in self._catalogs if c.schema == schema), None)
        if catalog is None:
            catalog = _Catalog(schema, len(self._catalogs) + 1)
            self._catalogs.append(catalog)
        if catalog.extname is None:
            catalog.extver = 1 + sum(c.extname == name for c in self._catalogs)
        if name not in catalog.names:
            catalog.names.append(name)
        catalog.extname = name
        self._index.append({"id": archive_id, "cat.archive": catalog.number,
                            "cat.persistable": persistable_catalog, "row0": len(catalog.rows),
                            "nrows": len(rows), "name": name, "module": module})
        catalog.rows.extend(rows)

    def hdus(self) -> list[fits.BinTableHDU]:
        """ARCHIVE_INDEX and the data catalogs, to follow each other in the file."""
        index = _table(INDEX_SCHEMA, self._index)
        index.header["EXTTYPE"] = "ARCHIVE_INDEX"
        index.header["EXTNAME"] = "ARCHIVE_INDEX"
        index.header.append(header_card("AR_CATN", 0, CATN_COMMENT))
        index.header.append(header_card("AR_NCAT", len(self._catalogs) + 1,
                                        "# of catalogs in this archive, including the index"))
        index.header.append(header_card("AFW_TABLE_VERSION", AFW_TABLE_VERSION))
        out = [index]
        for catalog in self._catalogs:
            hdu = _table(catalog.schema, catalog.rows)
            hdu.header["EXTTYPE"] = "ARCHIVE_DATA"
            hdu.header.append(header_card("AR_CATN", catalog.number, CATN_COMMENT))
            if catalog.extver > 1:
                hdu.header["EXTVER"] = catalog.extver
            for name in catalog.names:
                hdu.header.append(("AR_NAME", name, "Class name for objects stored here"))
            hdu.header["EXTNAME"] = catalog.extname
            hdu.header.append(header_card("AFW_TABLE_VERSION", AFW_TABLE_VERSION))
            out.append(hdu)
        return out


def _table(schema: tuple[Field, ...], rows: list[dict[str, Any]]) -> fits.BinTableHDU:
    """An afw table as FITS: Flag fields as bits of a leading ``flags`` column (``TFLAGn``),
    every other field a column with its ``TDOCn``, ``TUNITn`` and ``TCCLSn``."""
    flags = [f for f in schema if f.form == "Flag"]
    plain = [f for f in schema if f.form != "Flag"]
    columns = []
    if flags:
        bits = np.array([[bool(r[f.name]) for f in flags] for r in rows], bool).reshape(
            len(rows), len(flags))
        columns.append(fits.Column("flags", f"{len(flags)}X", array=bits))
    for f in plain:
        data = [r[f.name] for r in rows]
        if f.form.endswith("A"):
            array = np.array(data)
        else:  # one value per row for a scalar or an Array of length 1
            array = np.array(data, dtype=_dtype(f.form)).reshape(len(rows), -1)
            if array.shape[1] == 1:
                array = array[:, 0]
        columns.append(fits.Column(f.name, f.form if f.form[0].isdigit() else f"1{f.form}",
                                   unit=f.unit or None, array=array))
    hdu = fits.BinTableHDU.from_columns(columns)
    header = hdu.header
    offset = 1 if flags else 0
    if flags:
        header.comments["TTYPE1"] = "bits for all Flag fields; see also TFLAGn"
        header.append(header_card("FLAGCOL", 1, "Column number for the bitflags."))
        for n, f in enumerate(flags, start=1):
            header[f"TFLAG{n}"] = f.name
            header[f"TFDOC{n}"] = f.doc
    for n, f in enumerate(plain, start=1 + offset):
        header[f"TDOC{n}"] = f.doc
        header.append(header_card(
            f"TCCLS{n}", "Array" if f.array else "String" if f.form.endswith("A") else "Scalar",
            "Field template used by lsst.afw.table"))
    return hdu


def header_card(key: str, value: Any, comment: str = "") -> fits.Card:
    """A card, as HIERARCH when the key is longer than 8 characters or has spaces, its
    comment cut to fit the 80 columns (as afw's writer cuts them)."""
    if len(key) > 8 or " " in key:
        key = f"HIERARCH {key}"
    card = fits.Card(key, value)
    room = 80 - len(card.image.rstrip()) - 3
    if comment and room > 0 and not (isinstance(value, str) and len(card.image) > 80):
        card = fits.Card(key, value, comment[:room])
    return card


def _dtype(form: str) -> str:
    return {"J": ">i4", "K": ">i8", "D": ">f8", "E": ">f4"}[form.lstrip("0123456789")]


def bounded_field_schema(n_coefficients: int) -> tuple[Field, ...]:
    return (
        Field("order_x", "J", "maximum Chebyshev function order in x"),
        Field("bbox_min_x", "J", "bounding box (minimum)", "pixel"),
        Field("bbox_min_y", "J", "bounding box (minimum)", "pixel"),
        Field("bbox_max_x", "J", "bounding box (maximum)", "pixel"),
        Field("bbox_max_y", "J", "bounding box (maximum)", "pixel"),
        Field("coefficients", f"{n_coefficients}D",
              "Chebyshev function coefficients, ordered by y then x", array=True),
    )


PHOTOCALIB_SCHEMA = (
    Field("calibrationMean", "D", "mean calibration on this PhotoCalib's domain", "count"),
    Field("calibrationErr", "D", "1-sigma error on calibrationMean", "count"),
    Field("isConstant", "Flag", "Is this spatially-constant?"),
    Field("field", "J", "archive ID of the BoundedField object"),
    Field("version", "J", "version of this PhotoCalib"),
)
APCORR_SCHEMA = (
    Field("name", "64A", "name of the aperture correction"),
    Field("field", "J", "archive ID of the BoundedField object"),
)
FILTER_SCHEMA = (
    Field("band_exists", "Flag", "Existence flag for band"),
    Field("band", "32A", "Name of the band."),
    Field("physical_exists", "Flag", "Existence flag for physical"),
    Field("physical", "32A", "Name of the physical filter."),
)


def put_bounded_field(writer: ArchiveWriter, bf: ChebyshevBoundedField) -> int:
    archive_id = writer.new_id()
    x0, y0, x1, y1 = bf.bbox
    writer.save(archive_id, "ChebyshevBoundedField", "lsst.afw.math",
                bounded_field_schema(bf.coefficients.size),
                [{"order_x": bf.order_x, "bbox_min_x": x0, "bbox_min_y": y0, "bbox_max_x": x1,
                  "bbox_max_y": y1, "coefficients": np.ravel(bf.coefficients)}])
    return archive_id


def put_photocalib(writer: ArchiveWriter, calib: PhotoCalib) -> int:
    """A spatially constant PhotoCalib, its field a constant over an empty box, as afw's
    ``PhotoCalib(mean, err)`` persists itself."""
    archive_id = writer.new_id()
    field_id = put_bounded_field(
        writer, ChebyshevBoundedField.constant((0, 0, -1, -1), calib.njy_per_count))
    writer.save(archive_id, "PhotoCalib", "", PHOTOCALIB_SCHEMA,
                [{"calibrationMean": calib.njy_per_count, "calibrationErr": calib.njy_per_count_err,
                  "isConstant": True, "field": field_id, "version": 1}])
    return archive_id


def put_apcorr_map(writer: ArchiveWriter, ap_corr: dict[str, ApCorr], xy0: tuple[int, int]
                   ) -> int:
    """An ApCorrMap of ``<stem>_instFlux`` fields (moved to the parent frame) and constant
    ``<stem>_instFluxErr`` fields of ``err``, in name order as afw's std::map holds them."""
    archive_id = writer.new_id()
    entries = {}
    for stem, corr in ap_corr.items():
        parent = corr.field.relocated(xy0[0], xy0[1])
        entries[f"{stem}_instFlux"] = parent
        entries[f"{stem}_instFluxErr"] = ChebyshevBoundedField.constant(parent.bbox, corr.err)
    rows = [{"name": name, "field": put_bounded_field(writer, entries[name])}
            for name in sorted(entries)]
    writer.save(archive_id, "ApCorrMap", "lsst.afw.image", APCORR_SCHEMA, rows)
    return archive_id


def put_filter_label(writer: ArchiveWriter, band: str | None, physical: str | None) -> int:
    archive_id = writer.new_id()
    writer.save(archive_id, "FilterLabel", "lsst.afw.image", FILTER_SCHEMA,
                [{"band_exists": band is not None, "band": band or "",
                  "physical_exists": physical is not None, "physical": physical or ""}])
    return archive_id
