"""``skyphot detect``: the pipeline on a local FITS file, with a progress bar."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.commands.progress import progress_bar
from app.commands.reading import read_options
from app.engine.config import DetectConfig, apply_overrides
from app.engine.pipeline import run_detect
from app.io.catalogs import guess_format, write_catalog
from app.io.errors import ExposureReadError
from app.io.fits_exposure import read_exposure, write_exposure
from app.io.footprints import write_footprints


def run(args: argparse.Namespace) -> int:
    try:
        config = apply_overrides(DetectConfig(), args.set)
        fmt = guess_format(args.output)
        exposure = read_exposure(args.input, read_options(args))
    except (ValueError, ExposureReadError) as e:
        print(f"skyphot detect: {e}", file=sys.stderr)
        return 2
    try:
        with progress_bar("detect", args.quiet) as progress:
            result = run_detect(exposure, config, progress)
    except ValueError as e:  # the engine's refusals of an image it cannot use, with advice
        print(f"skyphot detect: {Path(args.input).name} cannot be measured: {e}",
              file=sys.stderr)
        return 2
    write_catalog(result.catalog, args.output, fmt)
    if args.footprints:
        write_footprints(result.footprints, args.footprints, result.exposure.xy0)
    if args.mask_output:
        write_exposure(result.exposure, args.mask_output)
    s = result.summary
    fwhm = s["psf_fwhm_arcsec"]
    fwhm_text = f'{s["psf_fwhm_pixels"]:.2f} px' + (f" ({fwhm:.3f}″)" if fwhm else "")
    print(f'{Path(args.input).name}: {s["n_sources"]} sources ({s["n_parents"]} parents, '
          f'{s["n_children"]} children), PSF FWHM {fwhm_text}, {s["seconds"]:.1f} s '
          f"→ {args.output}")
    info = result.exposure.info
    for part, source in info.provenance.items():
        print(f"  {part}: {source}")
    for note in info.notes:
        print(f"  note: {note}")
    return 0
