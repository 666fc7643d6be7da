"""``skyphot simulate``: write a simulated calexp and its truth table."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.engine.simulate import SimulationConfig, simulate_exposure
from app.io.catalogs import write_catalog
from app.io.fits_exposure import write_exposure


def truth_path(output: str) -> Path:
    """``field.fits`` → ``field_truth.fits`` (also for ``.fits.gz``)."""
    p = Path(output)
    name = p.name
    for ext in (".fits.gz", ".fits", ".fit"):
        if name.endswith(ext):
            return p.with_name(name[: -len(ext)] + "_truth.fits")
    return p.with_name(name + "_truth.fits")


def run(args: argparse.Namespace) -> int:
    config = SimulationConfig(width=args.width, height=args.height, n_stars=args.stars,
                              n_galaxies=args.galaxies, n_pairs=args.pairs, seed=args.seed)
    sim = simulate_exposure(config)
    write_exposure(sim.exposure, args.output)
    truth = truth_path(args.output)
    write_catalog(sim.truth, truth, "fits")
    print(f"{args.output}: {args.width}×{args.height} calexp, {len(sim.truth)} objects; "
          f"truth in {truth}")
    return 0
