"""The detect pipeline: characterize → detect → deblend → measure, as the tutorial runs it.

``run_detect`` is what the CLI's ``skyphot detect`` and the service's detect jobs call. It
works on a copy of the exposure and returns everything a caller may store or show.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from astropy.table import Table

from app.engine.apcorr import ApCorr
from app.engine.characterize import characterize
from app.engine.config import CharacterizeConfig, DetectConfig
from app.engine.deblend import deblend
from app.engine.detection import DetectionResult, detect
from app.engine.exposure import Exposure
from app.engine.footprints import Footprint
from app.engine.measure.task import measure_sources
from app.engine.psf import psf_fwhm

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]

# share of the total run time each step takes, for progress reporting
STEPS = {"characterize": (0.0, 0.25), "detect": (0.25, 0.15), "deblend": (0.40, 0.10),
         "measure": (0.50, 0.50)}


@dataclass
class DetectResult:
    """Catalog, footprints and the exposure after detection."""

    catalog: Table
    footprints: dict[int, Footprint]
    exposure: Exposure
    detection: DetectionResult
    apcorr: dict[str, ApCorr]
    summary: dict[str, float | int | None] = field(default_factory=dict)


def characterized(exposure: Exposure, config: CharacterizeConfig) -> Exposure:
    """A copy of ``exposure`` with its PSF and aperture corrections measured (the
    exposure's own PSF kept when ``doMeasurePsf`` is off), earlier detections cleared from
    the mask: the first step of `run_detect`, and all forced photometry needs."""
    ex = exposure.copy(share_variance=True)  # characterization writes image and mask only
    ex.mask &= ~np.int32(ex.planes.bitmask(["DETECTED", "DETECTED_NEGATIVE"]))
    if config.doMeasurePsf or ex.psf is None:
        characterize(ex, config)
        # a new ExposureInfo: the copy shares the caller's
        ex.info = replace(ex.info, provenance={**ex.info.provenance, "psf": "measured",
                                               "ap_corr": "measured"})
    return ex


def run_detect(exposure: Exposure, config: DetectConfig | None = None,
               progress: Progress | None = None) -> DetectResult:
    """Characterize, detect, deblend and measure ``exposure`` (left unchanged)."""
    config = config or DetectConfig()
    started = time.perf_counter()

    def report(step: str, fraction: float = 0.0) -> None:
        if progress is not None:
            start, span = STEPS[step]
            progress(start + span * fraction, step)

    report("characterize")
    ex = characterized(exposure, config.characterize)
    assert ex.psf is not None
    cx, cy = ex.width / 2, ex.height / 2
    sigma = ex.psf.sigma(cx, cy)

    report("detect")
    found = detect(ex, sigma, config.detection)
    report("deblend")
    footprints = found.positive if found.positive is not None else found.negative
    assert footprints is not None
    records = deblend(footprints, ex, config.deblend, do_deblend=config.doDeblend)
    report("measure")
    catalog, apcorr = measure_sources(
        ex, records, config.measurement,
        progress=lambda f, step: report("measure", f),
    )
    ex.ap_corr = apcorr
    if progress is not None:
        progress(1.0, "done")
    scale = ex.pixel_scale_arcsec()
    fwhm = psf_fwhm(ex.psf, cx, cy)
    summary = {
        "n_sources": len(catalog),
        "n_parents": int((catalog["deblend_nChild"] > 0).sum()) if len(catalog) else 0,
        "n_children": int((catalog["parent"] > 0).sum()) if len(catalog) else 0,
        "n_footprints": len(footprints),
        "n_peaks": found.num_pos_peaks,
        "threshold": found.threshold,
        "psf_sigma_pixels": float(sigma),
        "psf_fwhm_pixels": float(fwhm),
        "psf_fwhm_arcsec": None if scale is None else float(fwhm * scale),
        "seconds": time.perf_counter() - started,
    }
    log.info("detect finished", extra=summary)
    return DetectResult(
        catalog=catalog,
        footprints={r.id: r.footprint for r in records},
        exposure=ex,
        detection=found,
        apcorr=apcorr,
        summary=summary,
    )
