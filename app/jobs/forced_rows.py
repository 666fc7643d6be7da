"""The typed rows of a forced result table, as ``forced_sources`` stores them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from astropy.table import Table

from app.db.forced_sources import MAX_FLAGS, ForcedRows
from app.engine.forced_request import POSITION_KIND
from app.io.catalogs import json_values
from app.jobs.detect import is_flag_column

CLIENT_ID = "id"
"""The client's tag that names a position; stored typed as ``client_id``."""


def flag_names(table: Table) -> list[str]:
    """The boolean flag columns that get a bit of ``forced_sources.flags``, in table order:
    those named as LSST flags, since a client's tag may be boolean too (a detection
    catalog, which has no tags, takes every boolean column: `catalog_flags`)."""
    names = [n for n in table.colnames if is_flag_column(n) and table[n].dtype == bool]
    return names[:MAX_FLAGS]


def forced_rows(result: Table, tags: Sequence[str], positions: np.ndarray,
                exposure_ids: np.ndarray) -> ForcedRows:
    """The rows of ``result``: its core columns typed, ``tags`` (the client's columns) as
    JSON values, the client's ``id`` tag as ``client_id``.

    ``positions`` is each row's input row, ``exposure_ids`` the exposure it was measured on.
    """
    n = len(result)

    def floats(*names: str) -> np.ndarray:
        for name in names:
            if name in result.colnames:
                return np.asarray(result[name], dtype=float)
        return np.full(n, np.nan)

    ra, dec = floats("coord_ra", "ra"), floats("coord_dec", "dec")
    flux, err = floats("base_PsfFlux_instFlux"), floats("base_PsfFlux_instFluxErr")
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(err > 0, flux / err, np.nan)
    rad_ra, rad_dec = np.radians(ra), np.radians(dec)
    flags = np.zeros(n, dtype=np.int64)
    for bit, name in enumerate(flag_names(result)):
        flags |= np.asarray(result[name], dtype=np.int64) << bit
    kind = (np.asarray(result[POSITION_KIND], dtype=object) if POSITION_KIND in result.colnames
            else np.full(n, "input", dtype=object))
    client_id = np.full(n, None, dtype=object)
    if CLIENT_ID in tags:
        given = json_values(result[CLIENT_ID])
        client_id[:] = [None if v is None else str(v)[:255] for v in given]
    core = {
        "position": np.asarray(positions, dtype=np.int64),
        "exposure_id": np.asarray(exposure_ids, dtype=object),
        "position_kind": kind,
        "client_id": client_id,
        "coord_ra": ra, "coord_dec": dec,
        "coord_cx": np.cos(rad_dec) * np.cos(rad_ra),
        "coord_cy": np.cos(rad_dec) * np.sin(rad_ra),
        "coord_cz": np.sin(rad_dec),
        "x": floats("base_TransformedCentroid_x", "x"),
        "y": floats("base_TransformedCentroid_y", "y"),
        "psf_inst_flux": flux, "psf_inst_flux_err": err,
        "psf_flux": floats("base_PsfFlux_flux"), "psf_flux_err": floats("base_PsfFlux_fluxErr"),
        "psf_snr": snr,
        "flags": flags,
    }
    return ForcedRows(core, {name: json_values(result[name]) for name in tags
                             if name != CLIENT_ID})
