"""``skyphot forced``: forced photometry at the positions of a table, on a local exposure."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.commands.progress import progress_bar
from app.commands.reading import read_options
from app.engine.characterize import CharacterizeError, characterize
from app.engine.config import CharacterizeConfig, apply_overrides
from app.engine.forced import run_forced
from app.io.catalogs import guess_format, read_catalog, write_catalog
from app.io.errors import ExposureReadError
from app.io.fits_exposure import read_exposure
from app.jobs.forced_options import forced_config


def run(args: argparse.Namespace) -> int:
    try:
        config = forced_config(args.plugins, args.aperture_radii)
        characterize_config = apply_overrides(CharacterizeConfig(), args.set)
        fmt = guess_format(args.output)
        exposure = read_exposure(args.exposure, read_options(args))
        positions = read_catalog(args.positions)
    except (ValueError, ExposureReadError, OSError) as e:
        print(f"skyphot forced: {e}", file=sys.stderr)
        return 2
    if exposure.psf is None:
        try:
            characterize(exposure, characterize_config)
        except CharacterizeError as e:
            print(f"skyphot forced: the exposure has no PSF and none could be measured: {e}",
                  file=sys.stderr)
            return 2
    try:
        with progress_bar("forced", args.quiet) as progress:
            table = run_forced(exposure, positions, config, progress).to_table()
    except ValueError as e:
        print(f"skyphot forced: {e}", file=sys.stderr)
        return 2
    write_catalog(table, args.output, fmt)
    measured = int((~table["base_PsfFlux_flag"]).sum()) if "base_PsfFlux_flag" in table.colnames \
        else len(table)
    print(f"{Path(args.exposure).name}: {len(table)} positions, {measured} measured "
          f"→ {args.output}")
    return 0
