"""The ``skyphot`` command: serve, worker, migrate, detect, forced, simulate, demo.

Each subcommand imports what it needs when it runs, so ``skyphot detect`` never loads the
web stack and ``skyphot serve`` never needs an environment at import time.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from app.commands.reading import add_read_arguments

Handler = Callable[[argparse.Namespace], int]


def _serve(args: argparse.Namespace) -> int:
    from app.api.server import serve

    serve(host=args.host, port=args.port, processes=args.processes)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from app.jobs.worker import run_worker

    run_worker(threads=args.threads)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from app.db.migrate import upgrade

    upgrade()
    return 0


def _detect(args: argparse.Namespace) -> int:
    from app.commands.detect import run

    return run(args)


def _forced(args: argparse.Namespace) -> int:
    from app.commands.forced import run

    return run(args)


def _simulate(args: argparse.Namespace) -> int:
    from app.commands.simulate import run

    return run(args)


def _demo(args: argparse.Namespace) -> int:
    from app.commands.demo import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skyphot", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve the API and web front end")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--processes", type=int,
                   help="processes answering requests (default SKYPHOT_API_PROCESSES, or one "
                   "per core)")
    p.set_defaults(handler=_serve)

    p = sub.add_parser("worker", help="run a job worker for the distributed setup")
    p.add_argument("--threads", type=int, default=1, help="jobs run at once by this worker")
    p.set_defaults(handler=_worker)

    p = sub.add_parser("migrate", help="apply database migrations")
    p.set_defaults(handler=_migrate)

    p = sub.add_parser("detect", help="detect, deblend and measure sources on an exposure")
    p.add_argument("input", help="calexp or FITS image (.fits, .fits.fz, .fits.gz)")
    p.add_argument("--output", "-o", required=True,
                   help="catalog file (.fits .vot .csv .parquet .json)")
    p.add_argument("--footprints", help="write the heavy footprints to this FITS file")
    p.add_argument("--mask-output",
                   help="write the exposure with its DETECTED mask to this FITS file")
    p.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="config override with LSST names, e.g. detection.thresholdValue=4",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_read_arguments(p)
    p.set_defaults(handler=_detect)

    p = sub.add_parser("forced", help="forced photometry at the positions of a table")
    p.add_argument("exposure", help="calexp or FITS image (.fits, .fits.fz, .fits.gz)")
    p.add_argument("--positions", required=True,
                   help="table (.csv .fits .vot .parquet) with ra/dec or x/y; other columns "
                   "are passed through")
    p.add_argument("--output", "-o", required=True, help="output table; format by extension")
    p.add_argument("--plugins", nargs="+", help="forced plugins (default: LSST's four)")
    p.add_argument("--aperture-radii", nargs="+", type=float, metavar="R",
                   help="base_CircularApertureFlux radii in pixels (with that plugin)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="characterization setting with LSST names, for an exposure without a PSF, "
        "e.g. psfSpatialOrder=1 or background.binSize=256",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_read_arguments(p)
    p.set_defaults(handler=_forced)

    p = sub.add_parser("simulate", help="write a simulated calexp (or a plain frame with its "
                                        "sky in) and its truth table")
    p.add_argument("output", help="FITS path; the truth goes beside it as *_truth.fits")
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--height", type=int, default=2048)
    p.add_argument("--stars", type=int, default=400)
    p.add_argument("--galaxies", type=int, default=200)
    p.add_argument("--pairs", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--psf", choices=("kolmogorov", "moffat", "aberrated"), default="kolmogorov",
                   help="PSF family: Kolmogorov seeing, Moffat, or optics × atmosphere "
                   "(aberrations changing the PSF's shape across the field)")
    p.add_argument("--fwhm", type=float, default=0.75,
                   help="PSF FWHM at the centre, arcsec (0.2″ pixels; default 0.75)")
    p.add_argument("--beta", type=float, default=3.5, help="Moffat β (with --psf moffat)")
    p.add_argument("--ellipticity", type=float, default=0.0,
                   help="PSF ellipticity (a²−b²)/(a²+b²) (moffat, aberrated)")
    p.add_argument("--galaxy-fraction", type=float,
                   help="galaxies' share of the objects brighter than a star of S/N 50 "
                   "(sets the number of galaxies; --galaxies is then ignored)")
    p.add_argument("--min-separation", type=float, default=0.0,
                   help="keep random sources this many pixels from all others")
    p.add_argument("--sky-in", action="store_true",
                   help="leave the sky in and write a plain single-HDU image (GAIN, RDNOISE; "
                   "no mask, variance or background), as a frame before processing")
    p.add_argument("--sky-gradient", type=float, default=20.0,
                   help="amplitude (counts) of the sky's tilt and curvature (sky level 1000)")
    p.add_argument("--encoding", choices=("float32", "int16", "rice"), default="float32",
                   help="pixels as float32, int16 scaled by BSCALE/BZERO, or RICE_1 "
                   "tile-compressed")
    p.set_defaults(handler=_simulate)

    p = sub.add_parser("demo", help="run the tutorial's workflow over the API and write its "
                                    "figures")
    p.add_argument("--url", help="a running skyphot server (default: start the embedded one "
                                 "with its data in a temporary folder)")
    p.add_argument("--output", "-o", default="skyphot-demo", help="folder for the PNG figures "
                                                                  "and summary.json")
    p.add_argument("--size", type=int, default=2048, help="side of the simulated calexp, px")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
