"""The ``detect`` job: characterize, detect, deblend and measure one exposure.

The child reads the exposure from storage, runs `app.engine.pipeline.run_detect`, and writes
the full catalog (FITS), the heavy footprints and the mask after detection as artifacts; the
catalog rows come back to the worker, which stores them in ``sources`` in the transaction
that completes the job.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from sqlalchemy.orm import Session

from app.db.base import jsonable
from app.db.filters import unit_vector
from app.db.models import JobRecord
from app.db.sources import SourceRepository
from app.engine.config import DetectConfig
from app.engine.measure.slots import from_meta, resolve
from app.jobs.errors import unusable_input
from app.jobs.kinds import Artifact, JobContext, JobKind, JobOutput, Progress, register_kind
from app.storage import footprints as footprint_store
from app.storage.blobs import open_store

CORE_COLUMNS = {
    "id": "id",
    "parent": "parent",
    "deblend_nChild": "deblend_nchild",
    "slot_Centroid_x": "x",
    "slot_Centroid_y": "y",
    "coord_ra": "coord_ra",
    "coord_dec": "coord_dec",
    "slot_PsfFlux_instFlux": "psf_inst_flux",
    "slot_PsfFlux_instFluxErr": "psf_inst_flux_err",
    "slot_PsfFlux_flux": "psf_flux",
    "slot_PsfFlux_fluxErr": "psf_flux_err",
    "base_CircularApertureFlux_12_0_instFlux": "ap12_inst_flux",
    "base_CircularApertureFlux_12_0_instFluxErr": "ap12_inst_flux_err",
    "slot_Shape_xx": "shape_xx",
    "slot_Shape_yy": "shape_yy",
    "slot_Shape_xy": "shape_xy",
}
"""Catalog column (a slot alias resolved through the catalog's aliases: the S/N filter is
the PSF-flux slot's) → typed ``sources`` column."""

MASK_MEDIA_TYPE = "application/fits"


def is_flag_column(name: str) -> bool:
    """LSST flag naming: ``..._flag`` or ``..._flag_reason``."""
    return name.endswith("_flag") or "_flag_" in name


def catalog_flags(table: Table) -> list[str]:
    """The flags of a detection catalog: every boolean column, LSST's ``…_flag…`` ones and
    the deblender's (``deblend_skipped`` and kin) alike."""
    return [name for name in table.colnames if table[name].dtype == bool]


def source_rows(table: Table) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """``sources`` rows and the (id, flag) pairs of set flags, from a catalog table."""
    columns = {name: table[name].tolist() for name in table.colnames}
    aliases = from_meta(table.meta)
    core = {resolve(name, aliases): target for name, target in CORE_COLUMNS.items()}
    flag_names = catalog_flags(table)
    rows: list[dict[str, Any]] = []
    flags: list[tuple[int, str]] = []
    for i in range(len(table)):
        full = {name: jsonable(values[i]) for name, values in columns.items()}
        row: dict[str, Any] = {target: full.get(name) for name, target in core.items()}
        row["parent"] = row["parent"] or 0
        row["deblend_nchild"] = row["deblend_nchild"] or 0
        if row["coord_ra"] is not None and row["coord_dec"] is not None:
            row["coord_cx"], row["coord_cy"], row["coord_cz"] = unit_vector(
                row["coord_ra"], row["coord_dec"]
            )
        row["row"] = full
        rows.append(row)
        flags += [(row["id"], name) for name in flag_names if full[name]]
    return rows, flags


def column_descriptions(table: Table) -> list[dict[str, Any]]:
    """Name, unit, type and description of each catalog column, for the job summary."""
    return [
        {
            "name": name,
            "unit": None if table[name].unit is None else str(table[name].unit),
            "datatype": table[name].dtype.str,
            "description": table[name].description or None,
        }
        for name in table.colnames
    ]


def mask_fits(mask: np.ndarray, planes: dict[str, int], wcs_header: fits.Header | None) -> bytes:
    """The mask after detection as FITS (primary + MASK), with ``MP_*`` keys like a calexp."""
    header = fits.Header() if wcs_header is None else wcs_header.copy()
    for name, bit in planes.items():
        header[f"HIERARCH MP_{name}"] = bit
    hdus = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(mask, header=header, name="MASK")])
    buffer = io.BytesIO()
    hdus.writeto(buffer)
    return buffer.getvalue()


def calexp_fits(exposure: Any, write: Callable[[Any, io.BytesIO], None]) -> bytes:
    """The exposure after detection, as a calexp with its PSF, aperture corrections,
    background and DETECTED mask: what forced photometry and image products start from."""
    buffer = io.BytesIO()
    write(exposure, buffer)
    return buffer.getvalue()


def compute(context: JobContext, progress: Progress) -> JobOutput:
    """Run in the child process: the whole detection of one exposure.

    The engine and readers are imported here, so the API process never loads them.
    """
    from app.engine.pipeline import run_detect
    from app.io.catalogs import FORMATS, catalog_bytes
    from app.io.fits_exposure import read_exposure, write_exposure

    store = open_store(context.storage_url)
    config = DetectConfig.model_validate(context.parameters)
    assert context.exposure_key is not None
    progress(0.0, "reading exposure")
    try:
        exposure = read_exposure(store.path(context.exposure_key))
        result = run_detect(exposure, config, lambda f, step: progress(0.02 + 0.9 * f, step))
    except ValueError as error:
        raise unusable_input(error) from error
    progress(0.92, "writing results")
    after = result.exposure
    wcs_header = None if after.wcs is None else after.wcs.to_header(relax=True)
    files = [
        ("catalog", catalog_bytes(result.catalog, "fits"), FORMATS["fits"][0], "catalog.fits"),
        (
            "footprints",
            footprint_store.footprints_archive(result.footprints),
            footprint_store.MEDIA_TYPE,
            "footprints.npz",
        ),
        (
            "mask",
            mask_fits(after.mask, after.planes.as_dict(), wcs_header),
            MASK_MEDIA_TYPE,
            "mask.fits",
        ),
        ("calexp", calexp_fits(after, write_exposure), MASK_MEDIA_TYPE, "calexp.fits"),
    ]
    artifacts = []
    for name, data, media_type, filename in files:
        key = f"{context.artifact_prefix}/{filename}"
        artifacts.append(Artifact(name, key, media_type, store.put_bytes(key, data)))
    rows, flags = source_rows(result.catalog)
    summary = jsonable(dict(result.summary))
    summary["columns"] = column_descriptions(result.catalog)
    summary["flags"] = catalog_flags(result.catalog)
    summary["aliases"] = from_meta(result.catalog.meta)
    summary["mask_planes"] = after.planes.as_dict()
    summary["provenance"] = dict(after.info.provenance)  # where the PSF, corrections... came from
    summary["notes"] = list(after.info.notes)
    progress(1.0, "storing sources")
    return JobOutput(summary=summary, artifacts=artifacts, sources=rows, flags=flags)


def finalize(session: Session, job: JobRecord, output: JobOutput) -> None:
    """Replace the job's sources and artifacts with this attempt's."""
    SourceRepository(session, job.owner).replace(
        job.id,
        output.sources,
        output.flags,
        [(a.name, a.key, a.media_type, a.size) for a in output.artifacts],
    )


DETECT = register_kind(
    JobKind(name="detect", parameters=DetectConfig, compute=compute, finalize=finalize)
)
