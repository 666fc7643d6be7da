"""``skyphot simulate``: write a simulated calexp (or a plain frame with its sky in) and its truth.

The options reach the parts of :class:`~app.engine.simulate.SimulationConfig` that make a field
hard: the PSF family, its size and ellipticity, the share of galaxies among bright objects,
crowding (``--stars``), the sky left in, and the file's encoding.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.engine.simulate import SimulationConfig, simulate_exposure
from app.io.catalogs import write_catalog
from app.io.fits_exposure import write_exposure
from app.io.fits_variants import write_calexp_variant, write_plain_image


def truth_path(output: str) -> Path:
    """``field.fits`` → ``field_truth.fits`` (also for ``.fits.gz`` and ``.fits.fz``)."""
    p = Path(output)
    name = p.name
    for ext in (".fits.gz", ".fits.fz", ".fits", ".fit"):
        if name.endswith(ext):
            return p.with_name(name[: -len(ext)] + "_truth.fits")
    return p.with_name(name + "_truth.fits")


def run(args: argparse.Namespace) -> int:
    try:
        config = SimulationConfig(
            width=args.width, height=args.height, n_stars=args.stars, n_galaxies=args.galaxies,
            n_pairs=args.pairs, seed=args.seed, psf_family=args.psf, fwhm_arcsec=args.fwhm,
            moffat_beta=args.beta, psf_ellipticity=args.ellipticity,
            bright_galaxy_fraction=args.galaxy_fraction,
            min_separation_px=args.min_separation, sky_in=args.sky_in,
            sky_gradient=args.sky_gradient)
        sim = simulate_exposure(config)
    except ValueError as exc:
        print(f"skyphot simulate: {exc}", file=sys.stderr)
        return 2
    if config.sky_in:
        write_plain_image(sim.exposure, args.output, gain=config.gain,
                          read_noise=config.read_noise, encoding=args.encoding,
                          saturation=config.saturation)
        kind = "plain image (sky in)"
    elif args.encoding == "float32":
        write_exposure(sim.exposure, args.output)
        kind = "calexp"
    else:
        write_calexp_variant(sim.exposure, args.output, args.encoding)
        kind = f"calexp ({args.encoding})"
    truth = truth_path(args.output)
    write_catalog(sim.truth, truth, "fits")
    print(f"{args.output}: {args.width}×{args.height} {kind}, {args.psf} PSF, "
          f"{len(sim.truth)} objects; truth in {truth}")
    return 0
