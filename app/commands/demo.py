"""``skyphot demo``: the tutorial "Source Detection and Measurement", end to end, over the API.

It simulates a calexp with a known PSF, uploads it to a server (one given by ``--url``, or
the embedded default started for the run), and does what the tutorial does with the LSST
pipelines: show the image with its background added back, report the PSF FWHM, detect at
4σ and 10σ, deblend, look at footprints and mask pixels, force-measure 32 faint (4 < S/N < 5)
detections and 32 random blank-sky positions, and compare the fluxes. Every figure is written
as a PNG in the output folder; the numbers the tutorial prints are printed and kept in
``summary.json``. Only the public API is used, so it doubles as an example client.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from astropy.io import fits
from astropy.table import Table

from app.commands import demo_figures
from app.commands.api_client import ApiError, SkyphotClient
from app.commands.embedded import embedded_server
from app.engine.simulate import SimulationConfig, simulate_exposure
from app.io.fits_exposure import write_exposure

THRESHOLDS = (4.0, 10.0)
FAINT_SNR = (4.0, 5.0)
CENTRAL_ARCMIN = 2.0  # the tutorial picks faint sources within 2′ of the centre
CUTOUT = 400  # pixels, as the tutorial's cutout
FULL_IMAGE_PX = 800  # long side of whole-image PNGs
EDGE_FLAG = "base_PixelFlags_flag_edge"

Echo = Callable[[str], None]


@dataclass(frozen=True)
class DemoOptions:
    """What to simulate and where to write; the figures' file names are fixed."""

    output: Path
    size: int = 2048
    seed: int = 7
    n_faint: int = 32
    n_random: int = 32


def simulated_calexp(options: DemoOptions, path: Path) -> float:
    """Write a crowded-enough simulated calexp to ``path``; return its true FWHM (arcsec)."""
    area = (options.size / 2048) ** 2
    config = SimulationConfig(width=options.size, height=options.size,
                              n_stars=int(1600 * area), n_galaxies=int(900 * area),
                              n_pairs=int(20 * area), seed=options.seed)
    write_exposure(simulate_exposure(config).exposure, path)
    return config.fwhm_arcsec


class Demo:
    """One run of the workflow against ``client``; each step writes its figures."""

    def __init__(self, client: SkyphotClient, options: DemoOptions, echo: Echo = print) -> None:
        self.client = client
        self.options = options
        self.echo = echo
        self.figures: list[Path] = []
        self.summary: dict[str, Any] = {}

    def run(self, calexp: Path) -> dict[str, Any]:
        exposure = self.client.upload(calexp)
        exposure_id = exposure["id"]
        height, width = exposure["shape"]
        self.echo(f"uploaded {calexp.name}: exposure {exposure_id}, {width}×{height} px, "
                  f"band {exposure['band']}")
        self.summary["exposure_id"] = exposure_id
        jobs = {t: self.detect(exposure_id, t) for t in THRESHOLDS}
        main = jobs[THRESHOLDS[0]]
        centre = (width / 2.0, height / 2.0)
        self.images(exposure_id, main["id"])
        self.psf(exposure_id, main["id"], centre)
        self.detections(jobs, centre)
        self.deblending(main["id"])
        self.footprint(main["id"], exposure_id, centre)
        self.forced(exposure_id, main, centre)
        self.summary["figures"] = [p.name for p in self.figures]
        (self.options.output / "summary.json").write_text(json.dumps(self.summary, indent=2))
        return self.summary

    # -- steps ---------------------------------------------------------------------------

    def detect(self, exposure_id: str, threshold: float) -> dict[str, Any]:
        """Characterize, detect, deblend and measure at ``threshold`` × stdev."""
        config = {"characterize": {"psfIterations": 1},
                  "detection": {"thresholdValue": threshold, "thresholdType": "stdev"}}
        job = self.client.submit("detect", exposure_id, config)
        last = [""]

        def report(fraction: float, step: str) -> None:
            if step != last[0]:
                self.echo(f"  detect {threshold:g}σ: {100 * fraction:3.0f}% {step}")
                last[0] = step

        job = self.client.wait(job["id"], report)
        s = job["summary"]
        self.echo(f"thresholdValue {threshold:g}: {s['n_peaks']} positive peaks, "
                  f"{s['n_sources']} sources ({s['n_parents']} deblended parents, "
                  f"{s['n_children']} children) in {job['duration_seconds']:.1f} s")
        self.summary.setdefault("detections", {})[f"{threshold:g}"] = {
            k: s[k] for k in ("n_peaks", "n_sources", "n_parents", "n_children", "threshold")}
        return job

    def images(self, exposure_id: str, job_id: str) -> None:
        """The calexp, its subtracted background, and the two added (tutorial figure 1)."""
        path = f"/v1/exposures/{exposure_id}/image"
        common = {"job_id": job_id, "max_size": FULL_IMAGE_PX}
        self.save("01_calexp.png", self.client.content(path, {**common, "stretch": "zscale"}))
        self.save("02_background.png", self.client.content(
            path, {**common, "plane": "background", "stretch": "minmax", "cmap": "viridis"}))
        self.save("03_calexp_with_background.png", self.client.content(
            path, {**common, "add_background": "true", "stretch": "zscale"}))

    def psf(self, exposure_id: str, job_id: str, centre: tuple[float, float]) -> None:
        """The PSF FWHM at the centre, as the tutorial prints it, and the PSF's image."""
        point = {"x": centre[0], "y": centre[1], "job_id": job_id}
        psf = self.client.json("GET", f"/v1/exposures/{exposure_id}/psf", params=point)
        self.echo(f"PSF FWHM = {psf['fwhm_arcsec']:.2f} arcsec at ({centre[0]:.0f}, "
                  f"{centre[1]:.0f}) ({psf['fwhm_pixels']:.2f} px)")
        self.summary["psf"] = psf
        self.save("04_psf.png", self.client.content(
            f"/v1/exposures/{exposure_id}/psf", {**point, "format": "png"}))

    def detections(self, jobs: dict[float, dict[str, Any]],
                   centre: tuple[float, float]) -> None:
        """A 400×400 cutout with each threshold's sources drawn (tutorial figure 2)."""
        box = cutout_box(centre, CUTOUT)
        for threshold, job in jobs.items():
            self.save(f"05_sources_{threshold:g}sigma.png", self.client.content(
                f"/v1/jobs/{job['id']}/overlay.png", {**box, "stretch": "zscale"}))

    def deblending(self, job_id: str) -> None:
        """The parent with the most children, its children and their footprints."""
        parents = self.client.table(f"/v1/jobs/{job_id}/sources",
                                    {"parents_only": "true", "columns": "id,deblend_nChild"})
        if not len(parents) or parents["deblend_nChild"].max() == 0:
            self.echo("no deblended parent")
            return
        parent_id = int(parents["id"][np.argmax(parents["deblend_nChild"])])
        detail = self.client.json("GET", f"/v1/jobs/{job_id}/sources/{parent_id}")
        x0, y0, x1, y1 = detail["footprint"]["bbox"]
        pad = 10
        box = {"x0": x0 - pad, "y0": y0 - pad, "width": x1 - x0 + 1 + 2 * pad,
               "height": y1 - y0 + 1 + 2 * pad}
        self.echo(f"parent {parent_id}: {len(detail['children'])} children "
                  f"{detail['children']}, footprint {detail['footprint']['area']} px")
        self.summary["deblended_parent"] = {"id": parent_id, "children": detail["children"]}
        self.save("06_parent_and_children.png", self.client.content(
            f"/v1/jobs/{job_id}/overlay.png",
            {**box, "footprints": "fill", "stretch": "asinh", "max_size": 512}))

    def footprint(self, job_id: str, exposure_id: str, centre: tuple[float, float]) -> None:
        """A heavy footprint's pixels and mask values (tutorial figures 3, 4), mask planes."""
        page = self.client.json("GET", f"/v1/jobs/{job_id}/sources",
                                params={"flag": EDGE_FLAG, "limit": 1})
        if not page["sources"]:
            page = self.client.json("GET", f"/v1/jobs/{job_id}/sources", params={"limit": 1})
        source_id = int(page["sources"][0]["id"])
        data = self.client.content(f"/v1/jobs/{job_id}/sources/{source_id}/footprint",
                                   {"format": "fits"})
        with fits.open(io.BytesIO(data)) as hdus:
            image, mask = hdus["IMAGE"].data, hdus["MASK"].data
        values = sorted(int(v) for v in np.unique(mask[mask != 0]))
        self.echo(f"source {source_id}: heavy footprint {int((mask != 0).sum())} px, "
                  f"mask values {values}")
        self.summary["footprint"] = {"source_id": source_id, "mask_values": values}
        self.figures.append(demo_figures.heavy_footprint(
            image, mask, source_id, self.options.output / "07_heavy_footprint.png"))
        self.save("08_mask_planes.png", self.client.content(
            f"/v1/exposures/{exposure_id}/image",
            {**cutout_box(centre, CUTOUT), "plane": "mask", "mask_over_image": "true",
             "job_id": job_id}))

    def forced(self, exposure_id: str, job: dict[str, Any], centre: tuple[float, float]) -> None:
        """Forced photometry at faint detections and random blank sky (tutorial section 5)."""
        job_id = job["id"]
        faint = self.faint_detections(job_id, exposure_id, centre)
        positions = [{"ra": float(r["coord_ra"]), "dec": float(r["coord_dec"]),
                      "source_id": int(r["id"]), "type_flag": 0} for r in faint]
        body = {"exposure_id": exposure_id, "job_id": job_id, "positions": positions,
                "random": {"n": self.options.n_random, "min_distance_px": 40,
                           "seed": self.options.seed},
                "match": True}
        table = self.client.table("/v1/forced", body=body)
        kind = np.asarray(table["position_kind"]).astype(str)
        at_faint, at_random = table[kind == "input"], table[kind == "random"]
        flux = "base_PsfFlux_instFlux"
        forced_flux = np.asarray(at_faint[flux], dtype=float)
        detection_flux = np.asarray(faint[flux], dtype=float)
        ratio = float(np.nanmedian(forced_flux / detection_flux)) if len(faint) else None
        pulls = (np.asarray(at_random[flux], dtype=float)
                 / np.asarray(at_random[flux + "Err"], dtype=float))
        self.echo(f"forced photometry: {len(at_faint)} faint detections (median forced / "
                  f"detection flux {ratio:.3f}), {len(at_random)} random blank positions "
                  f"(F/σ mean {np.nanmean(pulls):+.2f}, std {np.nanstd(pulls):.2f})")
        self.summary["forced"] = {
            "n_faint": len(at_faint), "median_forced_over_detection": ratio,
            "n_random": len(at_random), "random_snr_mean": float(np.nanmean(pulls)),
            "random_snr_std": float(np.nanstd(pulls))}
        if len(at_faint):
            self.figures.append(demo_figures.forced_vs_detection(
                detection_flux, forced_flux, np.asarray(at_faint[flux + "Err"], dtype=float),
                self.options.output / "09_forced_vs_detection.png"))
        marks = [{"ra": float(r["coord_ra"]), "dec": float(r["coord_dec"])} for r in table]
        self.save("10_forced_positions.png", self.client.content(
            f"/v1/jobs/{job_id}/overlay.png", {"stretch": "zscale", "max_size": FULL_IMAGE_PX},
            body={"positions": marks, "label": "forced"}))
        self.figures.append(demo_figures.flux_histograms(
            np.asarray(at_random[flux], dtype=float), forced_flux,
            self.options.output / "11_forced_flux_histograms.png"))
        snr = self.client.table(f"/v1/jobs/{job_id}/sources",
                                {"columns": "base_PsfFlux_instFlux,base_PsfFlux_instFluxErr"})
        self.figures.append(demo_figures.snr_histogram(
            np.asarray(snr[flux] / snr[flux + "Err"], dtype=float), THRESHOLDS[0],
            self.options.output / "12_snr_histogram.png"))

    def faint_detections(self, job_id: str, exposure_id: str,
                         centre: tuple[float, float]) -> Table:
        """Up to ``n_faint`` detections with 4 < S/N < 5 within 2′ of the centre.

        The pixel scale is the PSF step's FWHM in arcsec over its FWHM in pixels.
        """
        psf = self.summary["psf"]
        half = CENTRAL_ARCMIN * 60.0 * psf["fwhm_pixels"] / psf["fwhm_arcsec"]
        faint = self.client.table(f"/v1/jobs/{job_id}/sources", {
            "min_psf_snr": FAINT_SNR[0], "max_psf_snr": FAINT_SNR[1],
            "x_min": centre[0] - half, "x_max": centre[0] + half,
            "y_min": centre[1] - half, "y_max": centre[1] + half,
            "columns": "id,coord_ra,coord_dec,base_PsfFlux_instFlux,base_PsfFlux_instFluxErr"})
        self.echo(f"{len(faint)} detections with {FAINT_SNR[0]:g} < S/N < {FAINT_SNR[1]:g} "
                  f"within {CENTRAL_ARCMIN:g}′ of the centre; forcing "
                  f"{min(len(faint), self.options.n_faint)}")
        return faint[: self.options.n_faint]

    def save(self, name: str, content: bytes) -> None:
        path = self.options.output / name
        path.write_bytes(content)
        self.figures.append(path)


def cutout_box(centre: tuple[float, float], size: int) -> dict[str, int]:
    """A ``size``-pixel square pixel box centred on ``centre``, as query parameters."""
    return {"x0": int(centre[0]) - size // 2, "y0": int(centre[1]) - size // 2,
            "width": size, "height": size}


def run(args: argparse.Namespace) -> int:
    options = DemoOptions(output=Path(args.output), size=args.size, seed=args.seed)
    options.output.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="skyphot-demo-")))
        url = args.url
        if url is None:
            url = stack.enter_context(embedded_server(scratch / "server"))
            print(f"started the embedded server at {url} (data in a temporary folder)")
        calexp = scratch / "demo_calexp.fits"
        true_fwhm = simulated_calexp(options, calexp)
        print(f"simulated a {options.size}×{options.size} calexp (seed {options.seed}, "
              f"true PSF FWHM {true_fwhm:.2f} arcsec at the centre)")
        client = stack.enter_context(SkyphotClient(url))
        try:
            summary = Demo(client, options).run(calexp)
        except ApiError as error:
            print(f"skyphot demo: the server refused a step: {error}", file=sys.stderr)
            return 1
        except httpx.TransportError as error:
            print(f"skyphot demo: cannot reach the server at {url}: {error}", file=sys.stderr)
            return 1
    print(f"{len(summary['figures'])} figures in {options.output}/: "
          f"{', '.join(summary['figures'])}")
    return 0
