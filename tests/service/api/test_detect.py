"""A detect job end to end on a small simulated calexp: sources, filters, formats, footprints.

Runs the real engine in the job's child process (nothing is faked), on both back ends.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from fastapi.testclient import TestClient

from app.io.catalogs import read_catalog
from service.conftest import assert_error, runtime_of, wait_for_job


def all_sources(client: TestClient, job_id: str, **params: object) -> Iterator[dict]:
    """Every page of the JSON listing, following the cursor."""
    query = {**params, "limit": 25}
    while True:
        response = client.get(f"/v1/jobs/{job_id}/sources", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        yield from page["sources"]
        if page["next_cursor"] is None:
            return
        query["cursor"] = page["next_cursor"]


def test_detect_job_stores_its_catalog(client: TestClient, job: dict) -> None:
    summary = job["summary"]
    assert summary["n_sources"] > 20 and summary["n_children"] > 0
    assert summary["psf_fwhm_pixels"] > 0
    # where the PSF and its aperture corrections came from, for the user
    assert summary["psf_source"] == "measured" and summary["psf_n_stars"] >= 5
    assert summary["provenance"]["psf"].startswith("measured from")
    assert "base_CircularApertureFlux_12_0" in summary["provenance"]["ap_corr"]
    sources = list(all_sources(client, job["id"]))
    assert len(sources) == summary["n_sources"]
    assert len({s["id"] for s in sources}) == len(sources)
    assert {"coord_ra", "base_PsfFlux_flux", "deblend_nChild"} <= set(sources[0])

    parents = list(all_sources(client, job["id"], parents_only="true"))
    children = list(all_sources(client, job["id"], children_only="true"))
    assert len(parents) + len(children) == len(sources)
    assert all(s["parent"] == 0 for s in parents) and all(s["parent"] for s in children)
    blended = list(all_sources(client, job["id"], deblend_nChild=2))
    assert blended and all(s["deblend_nChild"] == 2 for s in blended)

    bright = list(all_sources(client, job["id"], min_psf_snr=50))
    assert bright and all(
        s["base_PsfFlux_instFlux"] >= 50 * s["base_PsfFlux_instFluxErr"] for s in bright
    )
    box = list(all_sources(client, job["id"], x_min=0, x_max=200, y_min=0, y_max=200))
    assert box and all(
        s["base_SdssCentroid_x"] <= 200 and s["base_SdssCentroid_y"] <= 200 for s in box
    )
    centre = sources[0]
    cone = list(
        all_sources(
            client, job["id"], ra=centre["coord_ra"], dec=centre["coord_dec"], radius=2 / 3600
        )
    )
    assert centre["id"] in {s["id"] for s in cone}
    assert all(
        np.hypot(
            (s["coord_ra"] - centre["coord_ra"]) * np.cos(np.radians(centre["coord_dec"])),
            s["coord_dec"] - centre["coord_dec"],
        )
        <= 2 / 3600 + 1e-9
        for s in cone
    )
    narrow = client.get(
        f"/v1/jobs/{job['id']}/sources", params={"columns": "coord_ra,coord_dec", "limit": 3}
    ).json()["sources"]
    assert all(set(s) == {"id", "coord_ra", "coord_dec"} for s in narrow)
    error = assert_error(
        client.get(f"/v1/jobs/{job['id']}/sources", params={"columns": "nope"}), 422
    )
    assert "'nope'" in error["message"]


@pytest.mark.parametrize("flag", ["base_PixelFlags_flag_edge", "deblend_skipped",
                                  "base_SdssCentroid_flag"])
def test_flag_filters_partition_the_catalog(client: TestClient, job: dict, flag: str) -> None:
    every = list(all_sources(client, job["id"]))
    set_ = list(all_sources(client, job["id"], flag=flag))
    unset = list(all_sources(client, job["id"], noflag=flag))
    assert [s["id"] for s in set_] == [s["id"] for s in every if s[flag]]
    assert [s["id"] for s in unset] == [s["id"] for s in every if not s[flag]]
    if flag != "deblend_skipped":  # rare: the field has few blends too large to deblend
        assert set_ and unset


def test_an_unknown_flag_is_a_422(client: TestClient, job: dict) -> None:
    for param in ("flag", "noflag"):
        error = assert_error(client.get(f"/v1/jobs/{job['id']}/sources",
                                        params={param: "nonexistent_flag"}), 422, "unknown_flag")
        assert "'nonexistent_flag'" in error["message"] and "deblend_skipped" in error["message"]


@pytest.mark.parametrize("format", ["fits", "votable", "csv", "parquet"])
def test_sources_as_catalog_files(client: TestClient, job: dict, format: str) -> None:
    response = client.get(
        f"/v1/jobs/{job['id']}/sources", params={"format": format, "parents_only": "true"}
    )
    assert response.status_code == 200, response.text
    table = read_catalog(io.BytesIO(response.content), format)
    parents = list(all_sources(client, job["id"], parents_only="true"))
    assert sorted(np.asarray(table["id"]).tolist()) == [s["id"] for s in parents]
    assert (np.asarray(table["parent"]) == 0).all()
    assert str(table["coord_ra"].unit) == "deg"


def test_accept_header_chooses_the_format(client: TestClient, job: dict) -> None:
    response = client.get(f"/v1/jobs/{job['id']}/sources", headers={"Accept": "application/fits"})
    assert response.headers["content-type"] == "application/fits"
    assert isinstance(Table.read(io.BytesIO(response.content), format="fits"), Table)


def test_source_footprint_mask_and_catalog(client: TestClient, job: dict) -> None:
    child = next(all_sources(client, job["id"], children_only="true"))
    detail = client.get(f"/v1/jobs/{job['id']}/sources/{child['id']}").json()
    assert detail["parent"] == child["parent"]
    footprint = detail["footprint"]
    assert footprint["heavy"] and footprint["area"] > 0
    x0, y0, x1, y1 = footprint["bbox"]
    assert all(y0 <= y <= y1 and x0 <= a <= b <= x1 for y, a, b in footprint["spans"])
    assert sum(b - a + 1 for _, a, b in footprint["spans"]) == footprint["area"]
    parent = client.get(f"/v1/jobs/{job['id']}/sources/{child['parent']}").json()
    assert child["id"] in parent["children"] and parent["parent"] is None

    cutout = client.get(f"/v1/jobs/{job['id']}/sources/{child['id']}/footprint?format=fits")
    with fits.open(io.BytesIO(cutout.content)) as hdus:
        assert hdus["IMAGE"].data.shape == (y1 - y0 + 1, x1 - x0 + 1)
        assert {"MASK", "VARIANCE"} <= {h.name for h in hdus}

    mask = client.get(f"/v1/jobs/{job['id']}/mask", params={"format": "fits"})
    with fits.open(io.BytesIO(mask.content)) as hdus:
        detected = (hdus["MASK"].data & 32) != 0
        assert hdus["MASK"].header["MP_DETECTED"] == 5
    assert detected.any() and not detected.all()

    catalog = client.get(f"/v1/jobs/{job['id']}/catalog")
    assert catalog.headers["content-type"] == "application/fits"
    assert (
        len(Table.read(io.BytesIO(catalog.content), format="fits")) == job["summary"]["n_sources"]
    )
    as_csv = client.get(f"/v1/jobs/{job['id']}/catalog", params={"format": "csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert_error(client.get(f"/v1/jobs/{job['id']}/sources/999999"), 404, "source_not_found")


def test_rerunning_detect_does_not_duplicate_sources(client: TestClient, job: dict) -> None:
    from sqlalchemy import update

    from app.db.models import JobPhase, JobRecord
    from service.jobs.helpers import result_counts

    runtime = runtime_of(client)
    with runtime.sessions.begin() as session:
        session.execute(
            update(JobRecord).where(JobRecord.id == job["id"]).values(phase=JobPhase.QUEUED)
        )
    client.app.state.queue.send(job["id"])  # type: ignore[attr-defined]
    again = wait_for_job(client, job["id"], timeout=120)
    assert again["phase"] == "COMPLETED" and again["attempt"] == 2
    assert result_counts(runtime, job["id"]) == (job["summary"]["n_sources"], 4)  # 4 artifacts


def test_slot_aliases_name_columns_and_flags(client: TestClient, job: dict) -> None:
    aliases = job["summary"]["aliases"]
    assert aliases["slot_Centroid"] == "base_SdssCentroid"
    assert aliases["slot_CalibFlux"] == "base_CircularApertureFlux_12_0"
    assert aliases["base_PsfFlux_flag_badCentroid"] == "base_SdssCentroid_flag"
    every = list(all_sources(client, job["id"]))
    # an alias comes back under its own name, with the values of the column it stands for
    page = client.get(f"/v1/jobs/{job['id']}/sources", params={
        "columns": "slot_PsfFlux_instFlux,slot_Centroid_x,base_PsfFlux_instFlux",
        "limit": 1000}).json()["sources"]
    assert [s["id"] for s in page] == [s["id"] for s in every]
    for row, full in zip(page, every, strict=True):
        assert set(row) == {"id", "slot_PsfFlux_instFlux", "slot_Centroid_x",
                            "base_PsfFlux_instFlux"}
        assert row["slot_PsfFlux_instFlux"] == full["base_PsfFlux_instFlux"]
        assert row["slot_Centroid_x"] == full["base_SdssCentroid_x"]
    # flags by alias select the same rows as by name
    flagged = [s["id"] for s in all_sources(client, job["id"], flag="slot_Centroid_flag")]
    assert flagged == [s["id"] for s in every if s["base_SdssCentroid_flag"]]
    clean = [s["id"] for s in all_sources(client, job["id"],
                                          noflag="base_PsfFlux_flag_badCentroid")]
    assert clean == [s["id"] for s in every if not s["base_SdssCentroid_flag"]]
    # files carry the aliases (afw's ALIAS cards) and the columns asked for by alias
    for format in ("fits", "votable", "parquet"):
        response = client.get(f"/v1/jobs/{job['id']}/sources", params={
            "format": format, "columns": "slot_CalibFlux_instFlux"})
        table = read_catalog(io.BytesIO(response.content), format)
        assert table.colnames == ["id", "slot_CalibFlux_instFlux"], format
        assert "slot_CalibFlux:base_CircularApertureFlux_12_0" in table.meta["ALIAS"], format
        by_id = {s["id"]: s["base_CircularApertureFlux_12_0_instFlux"] for s in every}
        np.testing.assert_allclose(np.asarray(table["slot_CalibFlux_instFlux"]),
                                   [by_id[i] for i in np.asarray(table["id"])])
    error = assert_error(client.get(f"/v1/jobs/{job['id']}/sources",
                                    params={"columns": "slot_Nothing_x"}), 422, "unknown_column")
    assert "'slot_Nothing_x'" in error["message"] and "slot_PsfFlux" in error["message"]
