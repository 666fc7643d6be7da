"""The tutorial's workflow through the web front end, in Debian's Chromium.

Upload a simulated calexp through the page, run detection with live progress, check the
overlay draws as many sources as the job's summary reports, click a source on the canvas and
in the table and read its record, run forced photometry on random blank-sky positions and see
the F/σ histogram. Screenshots of each step go to test-artifacts/browser/.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.commands.embedded import embedded_server
from app.engine.simulate import SimulationConfig, simulate_exposure
from app.io.fits_exposure import write_exposure

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

TID = "[data-testid='{}']".format


def simulated_calexp(seed: int = 11, mjd: float | None = None) -> bytes:
    """512×512, ~90 bright stars (enough for a PSF), a few galaxies and blends."""
    sim = simulate_exposure(SimulationConfig(
        width=512, height=512, n_stars=90, star_mag_range=(17.0, 21.0), n_galaxies=10,
        n_pairs=4, n_saturated=0, seed=seed))
    if mjd is not None:
        sim.exposure.info.mjd = mjd
    buffer = io.BytesIO()
    write_exposure(sim.exposure, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def calexp_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calexp") / "calexp-sim.fits"
    path.write_bytes(simulated_calexp())
    return path


def shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def isolated_source(api: httpx.Client, job_id: str) -> int:
    """A bright isolated source with no other source within 20 pixels (so a click is unique)."""
    rows = api.get(f"/v1/jobs/{job_id}/sources", params={"limit": 10000}).json()["sources"]
    xy = [(r["id"], r["base_SdssCentroid_x"], r["base_SdssCentroid_y"]) for r in rows]
    candidates = sorted(
        (r for r in rows if not r["parent"] and not r["deblend_nChild"]
         and r["base_SdssCentroid_x"] is not None and r["base_PsfFlux_instFlux"] is not None
         and 30 < r["base_SdssCentroid_x"] < 480 and 30 < r["base_SdssCentroid_y"] < 480),
        key=lambda r: -r["base_PsfFlux_instFlux"])
    for r in candidates:
        x, y = r["base_SdssCentroid_x"], r["base_SdssCentroid_y"]
        if all(i == r["id"] or ox is None or math.hypot(ox - x, oy - y) > 20
               for i, ox, oy in xy):
            return int(r["id"])
    raise AssertionError("no isolated source in the simulated field")


def test_errors_from_the_api_are_shown(page: Any, server_url: str, artifacts: Path) -> None:
    page.goto(server_url + "/")
    page.locator(TID("upload-file")).set_input_files(
        {"name": "not-a-fits.fits", "mimeType": "application/fits", "buffer": b"hello" * 100})
    page.locator(TID("upload-submit")).click()
    message = page.locator(TID("error-message"))
    message.first.wait_for(timeout=10_000)
    text = message.first.inner_text()
    assert "uploading not-a-fits.fits" in text and "HTTP 422" in text, text
    shot(page, artifacts, "00-upload-error")


def test_upload_detect_inspect_and_forced(
    page: Any, server_url: str, api: httpx.Client, calexp_file: Path, artifacts: Path
) -> None:
    page.goto(server_url + "/")
    shot(page, artifacts, "01-start")

    # 1. upload through the page; its metadata shows
    page.locator(TID("upload-file")).set_input_files(str(calexp_file))
    page.locator(TID("upload-submit")).click()
    meta = page.locator(TID("exposure-meta"))
    meta.wait_for(state="visible", timeout=20_000)
    assert "512×512" in meta.inner_text()
    assert page.locator(TID("exposure-row")).count() >= 1
    shot(page, artifacts, "02-uploaded")

    # 2. detection with the LSST config names, live progress until COMPLETED
    page.locator(TID("cfg-characterize.psfIterations")).fill("1")
    page.locator(TID("cfg-detection.thresholdValue")).fill("5")
    page.locator(TID("cfg-detection.thresholdType")).select_option("stdev")
    page.locator(TID("detect-submit")).click()
    page.locator(TID("job-status")).wait_for(state="visible", timeout=10_000)
    shot(page, artifacts, "03-running")
    page.wait_for_function(
        "document.querySelector(\"[data-testid='job-phase']\").textContent === 'COMPLETED'",
        timeout=90_000)
    page.wait_for_selector(f"{TID('viewer-count')}[data-n]", timeout=20_000)
    page.wait_for_function("window.skyphot.viewer.bitmap !== null", timeout=20_000)
    job_id = page.locator(TID("job-id")).inner_text()
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["phase"] == "COMPLETED", job
    n_sources = job["summary"]["n_sources"]
    assert n_sources > 50
    assert page.locator(TID("summary-sources")).inner_text() == str(n_sources)
    assert page.locator(TID("viewer-count")).get_attribute("data-n") == str(n_sources)
    assert page.locator(TID("summary-psf-fwhm")).inner_text().endswith("″")
    for fmt in ("json", "fits", "votable", "csv", "parquet"):
        href = page.locator(TID(f"download-{fmt}")).get_attribute("href")
        response = api.get(href)
        assert response.status_code == 200, (fmt, response.text[:300])
    page.locator(TID("viewer-canvas")).scroll_into_view_if_needed()
    shot(page, artifacts, "04-detected")

    # the image with the background added back, another stretch; wheel zoom and drag pan
    loaded = page.evaluate("window.skyphot.viewer.imagesLoaded")
    page.locator(TID("viewer-add-background")).check()
    page.wait_for_function(f"window.skyphot.viewer.imagesLoaded > {loaded}", timeout=20_000)
    page.locator(TID("viewer-stretch")).select_option("zscale")
    page.wait_for_function(f"window.skyphot.viewer.imagesLoaded > {loaded + 1}", timeout=20_000)
    box = page.locator(TID("viewer-canvas")).bounding_box()
    centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    zoom = page.evaluate("window.skyphot.viewer.view.k")
    page.mouse.move(*centre)
    page.mouse.wheel(0, -400)
    page.wait_for_function(f"window.skyphot.viewer.view.k > {zoom * 1.5}", timeout=5_000)
    page.mouse.down()
    page.mouse.move(centre[0] + 80, centre[1] + 40, steps=4)
    page.mouse.up()
    shot(page, artifacts, "04b-background-zscale-zoomed")
    page.locator(TID("viewer-plane")).select_option("mask")
    page.wait_for_function(f"window.skyphot.viewer.imagesLoaded > {loaded + 2}", timeout=20_000)
    shot(page, artifacts, "04c-mask-planes")
    page.locator(TID("viewer-plane")).select_option("image")
    page.locator(TID("viewer-add-background")).uncheck()
    page.locator(TID("viewer-stretch")).select_option("asinh")
    page.wait_for_function(f"window.skyphot.viewer.imagesLoaded > {loaded + 3}", timeout=20_000)
    page.locator(TID("viewer-fit")).click()
    page.wait_for_function(f"window.skyphot.viewer.view.k < {zoom * 1.01}", timeout=5_000)

    # 3. click a source on the canvas: its record, with its footprint
    sid = isolated_source(api, job_id)
    canvas = page.locator(TID("viewer-canvas"))
    box = canvas.bounding_box()
    pos = page.evaluate("id => window.skyphot.viewer.screenPosition(id)", sid)
    assert pos is not None and 0 < pos["x"] < box["width"] and 0 < pos["y"] < box["height"]
    page.mouse.click(box["x"] + pos["x"], box["y"] + pos["y"])
    record = page.locator(TID("source-record"))
    page.wait_for_selector(f"{TID('source-record')}[data-source-id='{sid}']", timeout=10_000)
    assert f"Source #{sid}" in record.locator(TID("record-title")).inner_text()
    assert "area (pixels)" in record.locator(TID("record-footprint")).inner_text()
    assert "base_PsfFlux_flux" in record.inner_text()
    record.locator(TID("record-psf")).wait_for(timeout=10_000)
    assert "FWHM" in record.locator(TID("record-psf")).inner_text()
    page.wait_for_function(
        "[...document.querySelectorAll(\"[data-testid='record-pixels'] img\")]"
        ".filter(i => i.complete && i.naturalWidth > 0).length === 2", timeout=10_000)
    shot(page, artifacts, "05-source-clicked")

    # ... and a deblended parent from the table: links to its children
    parent = api.get(f"/v1/jobs/{job_id}/sources",
                     params={"limit": 1, "parents_only": True, "deblend_nChild": 2}).json()
    parents = parent["sources"] or api.get(
        f"/v1/jobs/{job_id}/sources", params={"limit": 50}).json()["sources"]
    pid = next(r["id"] for r in parents if r["deblend_nChild"] > 0)
    row = page.locator(f"{TID('source-row')}[data-id='{pid}']")
    if row.count():
        row.click()
    else:  # not on the first page: click it on the canvas instead
        page.evaluate("id => window.skyphot.viewer.onPick(id)", pid)
    page.wait_for_selector(f"{TID('source-record')}[data-source-id='{pid}']", timeout=10_000)
    children = api.get(f"/v1/jobs/{job_id}/sources/{pid}").json()["children"]
    assert record.locator(TID("record-child")).count() == len(children) > 0
    record.locator(TID("record-child")).first.click()
    page.wait_for_selector(f"{TID('source-record')}[data-source-id='{children[0]}']",
                           timeout=10_000)
    assert record.locator(TID("record-parent")).inner_text() == f"#{pid}"
    shot(page, artifacts, "06-child-record")

    # 4. forced photometry on random blank-sky positions: the F/σ histogram
    page.locator(TID("forced-n")).fill("150")
    page.locator(TID("forced-run")).click()
    page.wait_for_selector(f"{TID('forced-histogram')}[data-n]", timeout=30_000)
    n_measured = int(page.locator(TID("forced-histogram")).get_attribute("data-n"))
    assert 100 <= n_measured <= 150
    assert page.locator(TID("forced-histogram")).is_visible()
    assert "mean F/σ" in page.locator(TID("forced-stats")).inner_text()
    page.locator(TID("forced-section")).scroll_into_view_if_needed()
    shot(page, artifacts, "07-forced-histogram")

    # 5. faint detections (S/N 5-30): forced vs detection flux
    page.locator(TID("faint-min-snr")).fill("5")
    page.locator(TID("faint-max-snr")).fill("30")
    page.locator(TID("faint-run")).click()
    page.wait_for_selector(f"{TID('forced-scatter')}[data-n]", timeout=30_000)
    assert int(page.locator(TID("forced-scatter")).get_attribute("data-n")) > 0
    assert page.locator(TID("forced-row")).count() > 0
    shot(page, artifacts, "08-forced-vs-detection")

    # 6. pasted RA/Dec with a tag column, then the light curve of the clicked source
    first = api.get(f"/v1/jobs/{job_id}/sources/{sid}").json()["source"]
    page.locator(TID("paste-positions")).fill(
        f"ra, dec, name\n{first['coord_ra']}, {first['coord_dec']}, clicked\n"
        "62.0, -37.0, centre\n")
    page.locator(TID("paste-run")).click()
    page.wait_for_selector(f"{TID('forced-histogram')}[data-kind='pasted positions']",
                           timeout=30_000)
    assert page.locator(TID("forced-row")).count() == 2
    assert "clicked" in page.locator(TID("forced-table-wrap")).inner_text()
    page.evaluate("id => window.skyphot.viewer.onPick(id)", sid)
    page.wait_for_selector(f"{TID('source-record')}[data-source-id='{sid}']", timeout=10_000)
    page.locator(TID("record-lightcurve")).click()
    page.wait_for_selector(f"{TID('lc-plot')}[data-n]", timeout=30_000)
    assert page.locator(TID("lc-plot")).get_attribute("data-n") == "1"
    shot(page, artifacts, "09-pasted-and-lightcurve")

    assert page.locator(TID("error-message")).count() == 0, \
        page.locator(TID("errors")).inner_text()
    assert not page.errors, page.errors


def test_pick_a_stored_exposure_and_open_its_detection(
    page: Any, server_url: str, api: httpx.Client, calexp_file: Path, artifacts: Path
) -> None:
    with calexp_file.open("rb") as f:
        exposure = api.post("/v1/exposures", files={"file": ("stored.fits", f)}).json()
    job = api.post("/v1/jobs", json={"kind": "detect", "exposure_id": exposure["id"], "config": {
        "characterize": {"psfIterations": 1}, "detection": {"thresholdValue": 10}}}).json()
    for _ in range(600):
        job = api.get(f"/v1/jobs/{job['id']}").json()
        if job["phase"] in ("COMPLETED", "ERROR", "ABORTED"):
            break
        page.wait_for_timeout(100)
    assert job["phase"] == "COMPLETED", job

    page.goto(server_url + "/")
    page.locator(f"{TID('exposure-row')}[data-id='{exposure['id']}']").click()
    assert exposure["id"] in page.locator(TID("exposure-meta")).inner_text()
    page.locator(TID("open-job")).first.click()
    page.wait_for_selector(f"{TID('viewer-count')}[data-n]", timeout=20_000)
    assert page.locator(TID("viewer-count")).get_attribute("data-n") == \
        str(job["summary"]["n_sources"])
    assert page.locator(TID("job-id")).inner_text() == job["id"]
    shot(page, artifacts, "10-stored-exposure-opened")

    # more random positions than one request measures (1000): the page runs a forced job
    page.locator(TID("forced-n")).fill("1200")
    page.locator(TID("forced-min-distance")).fill("5")
    page.locator(TID("forced-run")).click()
    page.wait_for_selector(f"{TID('forced-histogram')}[data-n]", timeout=60_000)
    forced_jobs = api.get("/v1/jobs", params={"kind": "forced",
                                              "exposure_id": exposure["id"]}).json()["jobs"]
    assert [j["phase"] for j in forced_jobs] == ["COMPLETED"]
    assert page.locator(TID("forced-status")).get_attribute("data-job-id") == forced_jobs[0]["id"]
    n_measured = int(page.locator(TID("forced-histogram")).get_attribute("data-n"))
    assert 1100 <= n_measured <= 1200
    assert "1200 random blank-sky positions measured" in \
        page.locator(TID("forced-status")).inner_text()
    shot(page, artifacts, "11-forced-job-histogram")
    assert page.locator(TID("error-message")).count() == 0, \
        page.locator(TID("errors")).inner_text()
    assert not page.errors, page.errors


def test_viewer_stays_responsive_with_5000_sources(
    page: Any, server_url: str, artifacts: Path
) -> None:
    """5000 sources drawn in one canvas layer: a frame and a pick take milliseconds."""
    page.goto(server_url + "/")
    timing = page.evaluate("""() => {
        document.querySelector("[data-testid=viewer-section]").hidden = false;
        const v = window.skyphot.viewer;
        v.resize();
        v.frame = { x0: 0, y0: 0, width: 4000, height: 4000, binning: 1 };
        const n = 5000;
        const s = { id: new Int32Array(n), x: new Float64Array(n), y: new Float64Array(n),
                    kind: new Uint8Array(n) };
        for (let i = 0; i < n; i++) {
          s.id[i] = i + 1; s.x[i] = Math.random() * 4000; s.y[i] = Math.random() * 4000;
          s.kind[i] = i % 3;
        }
        v.sources = s;
        v.fit();
        const t0 = performance.now();
        for (let i = 0; i < 10; i++) { v.zoomAt(300, 300, 1.1); v.render(); }
        const t1 = performance.now();
        for (let i = 0; i < 10; i++) v.nearest(300 + i, 300);
        const t2 = performance.now();
        return { frame: (t1 - t0) / 10, pick: (t2 - t1) / 10 };
    }""")
    page.locator(TID("viewer-canvas")).scroll_into_view_if_needed()
    shot(page, artifacts, "12-viewer-5000-sources")
    assert timing["frame"] < 100, timing  # ms per pan/zoom frame, software rendering
    assert timing["pick"] < 20, timing


def test_a_light_curve_above_the_limit_is_followed_as_a_job(
    page: Any, tmp_path: Path, artifacts: Path
) -> None:
    """Two exposures of the field, none with a detect job, on a server that measures one
    exposure per synchronous light curve: the page follows the job, which characterizes
    both, and plots both points."""
    with embedded_server(tmp_path / "server", lightcurve_max_exposures=1) as url, \
            httpx.Client(base_url=url, timeout=60) as api:
        ids = [api.post("/v1/exposures", files={"file": (f"visit{k}.fits", data)}).json()["id"]
               for k, data in enumerate((simulated_calexp(11, 60300.0),
                                         simulated_calexp(12, 60301.0)))]
        corners = [api.get(f"/v1/exposures/{i}").json()["corners"] for i in ids]
        ra = sum(c[0] for c in corners[0]) / 4
        dec = sum(c[1] for c in corners[0]) / 4
        page.goto(url + "/")
        page.locator(TID("lc-ra")).fill(str(ra))
        page.locator(TID("lc-dec")).fill(str(dec))
        page.locator(TID("lc-run")).click()
        page.wait_for_selector(f"{TID('lc-plot')}[data-n]", timeout=90_000)
        jobs = api.get("/v1/jobs", params={"kind": "forced"}).json()["jobs"]
        assert [j["phase"] for j in jobs] == ["COMPLETED"]
        assert page.locator(TID("lc-plot")).get_attribute("data-n") == "2"
        assert "2 exposures cover it" in page.locator(TID("lc-status")).inner_text()
        href = page.locator(TID("lc-download-csv")).get_attribute("href")
        assert f"v1/jobs/{jobs[0]['id']}/forced" in href
        shot(page, artifacts, "13-light-curve-job")
        assert page.locator(TID("error-message")).count() == 0, \
            page.locator(TID("errors")).inner_text()
        assert not page.errors, page.errors
