"""The command-line options that say how to read an exposure, shared by detect and forced.

The reader is imported when the options are used, not when the parser is built, so
``skyphot serve`` does not load astropy for them.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.io.read_options import PlaneRef, ReadOptions

COMPANION_HELP = "FILE, FILE[HDU] or [HDU] of the image's own file"


def add_read_arguments(parser: argparse.ArgumentParser) -> None:
    """``--hdu``, the companion planes and the mask map, in a group of their own."""
    group = parser.add_argument_group(
        "reading the exposure",
        "A plain image can come with its variance, weight (inverse variance; 0 = no data) "
        "and data-quality maps, as files or HDUs (cfitsio's FILE[HDU]); HDUs by EXTNAME or "
        "index (0 = primary).")
    group.add_argument("--hdu", help="the image HDU (default: LSST's IMAGE, else the first "
                                     "2-d image), e.g. N2, SCI,1 or 1")
    planes = group.add_mutually_exclusive_group()
    planes.add_argument("--variance", metavar="FILE", help=f"variance map: {COMPANION_HELP}")
    planes.add_argument("--weight", metavar="FILE",
                        help=f"inverse-variance map: {COMPANION_HELP}")
    group.add_argument("--mask", metavar="FILE",
                       help=f"data-quality map, nonzero = BAD unless mapped: {COMPANION_HELP}")
    mapping = group.add_mutually_exclusive_group()
    mapping.add_argument("--mask-bits", metavar="MAP",
                         help="bit values of --mask to planes, e.g. 1=BAD,2=SAT,4=INTRP,16=CR; "
                              "other bits set BAD")
    mapping.add_argument("--mask-codes", metavar="MAP",
                         help="values (codes, not bits) of --mask to planes, e.g. "
                              "1=BAD,3=SAT,5=CR, or 'decam' for the DECam Community "
                              "Pipeline's ood codes; other codes set BAD")
    group.add_argument("--background", metavar="FILE",
                       help="the full-resolution background that was subtracted (a FITS "
                            "image of the same shape)")


def read_options(args: argparse.Namespace) -> ReadOptions:
    """The `ReadOptions` the arguments give; OptionError (a ValueError) for a bad one."""
    from app.io.read_options import MaskMap, PlaneRef, ReadOptions, parse_hdu

    mask_map = None
    if args.mask_bits:
        mask_map = MaskMap.parse("bits", args.mask_bits)
    elif args.mask_codes:
        mask_map = MaskMap.parse("codes", args.mask_codes)

    def ref(text: str | None) -> PlaneRef | None:
        return None if text is None else PlaneRef.parse(text)

    return ReadOptions(
        hdu=parse_hdu(args.hdu), variance=ref(args.variance), weight=ref(args.weight),
        mask=ref(args.mask), mask_map=mask_map, background=ref(args.background),
    )
