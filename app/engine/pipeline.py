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
from astropy.table import Column as TableColumn
from astropy.table import Table

from app.engine.apcorr import ApCorr, reference_name
from app.engine.characterize import CharacterizeResult, characterize, psf_star_flags
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
    characterization: CharacterizeResult | None = None
    summary: dict[str, float | int | str | None] = field(default_factory=dict)


def characterized(exposure: Exposure, config: CharacterizeConfig) -> Exposure:
    """A copy of ``exposure`` characterized (background, PSF, aperture corrections): the
    first step of `run_detect`, and all forced photometry needs."""
    return characterize_copy(exposure, config)[0]


def characterize_copy(exposure: Exposure, config: CharacterizeConfig
                      ) -> tuple[Exposure, CharacterizeResult]:
    """A characterized copy of ``exposure`` (earlier detections cleared from its mask), and
    what characterization found."""
    ex = exposure.copy(share_variance=True)  # characterization writes image and mask only
    ex.mask &= ~np.int32(ex.planes.bitmask(["DETECTED", "DETECTED_NEGATIVE"]))
    ex.info = replace(ex.info, provenance=dict(ex.info.provenance), notes=list(ex.info.notes))
    result = characterize(ex, config)
    ex.info.notes.extend(result.notes)
    return ex, result


PSF_FLAG_DOCS = {
    "calib_psf_candidate": "Chosen as a PSF star candidate in characterization.",
    "calib_psf_used": "Used to fit the PSF model (and the aperture corrections).",
    "calib_psf_reserved": "A PSF star held back from the fit, to check the model.",
}


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
    ex, char = characterize_copy(exposure, config.characterize)
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
    x, y = _centroids(catalog, ex.xy0)
    for name, values in psf_star_flags(x, y, char.stars).items():
        catalog[name] = TableColumn(values, description=PSF_FLAG_DOCS[name])
    catalog.meta.update(catalog_metadata(ex, char, config))
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
        "noise_scale": found.noise_scale,
        "psf_sigma_pixels": float(sigma),
        "psf_fwhm_pixels": float(fwhm),
        "psf_fwhm_arcsec": None if scale is None else float(fwhm * scale),
        "psf_source": char.psf_source,
        "psf_n_stars": char.n_psf_stars,
        "seconds": time.perf_counter() - started,
    }
    log.info("detect finished", extra=summary)
    return DetectResult(
        catalog=catalog,
        footprints={r.id: r.footprint for r in records},
        exposure=ex,
        detection=found,
        apcorr=apcorr,
        characterization=char,
        summary=summary,
    )


def _centroids(catalog: Table, xy0: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Array-frame centroids of a catalog: base_SdssCentroid, the peak where it failed."""
    out = []
    for axis, origin in zip("xy", xy0, strict=True):
        peak = np.asarray(catalog[f"peak_{axis}"], float)
        name = f"base_SdssCentroid_{axis}"
        values = np.asarray(catalog[name], float) if name in catalog.colnames else peak
        out.append(np.where(np.isfinite(values), values, peak) - origin)
    return out[0], out[1]


def catalog_metadata(exposure: Exposure, char: CharacterizeResult, config: DetectConfig
                     ) -> dict[str, str]:
    """What a catalog's numbers mean: the reference every corrected flux is tied to, and
    where the PSF and corrections came from (kept in the table's metadata)."""
    meta = {
        "apCorr_reference": reference_name(config.characterize.apCorr),
        "psf_source": char.psf_source,
    }
    meta.update({f"provenance_{k}": v for k, v in exposure.info.provenance.items()})
    if char.notes:
        meta["characterize_notes"] = " | ".join(char.notes)
    return meta
