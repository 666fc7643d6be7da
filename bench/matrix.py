"""Run the detect pipeline on every case of the test matrix and print issue 19's numbers.

What it does
------------
For each case of ``app.engine.matrix.CASES`` (Kolmogorov, Moffat β 2.5 and 4.5, aberrated
optics × atmosphere, FWHM 1.5 and 8 px, galaxies 20/50/90 % of the bright objects, a crowded
field, sky left in with a gradient read as a plain image, int16 + BSCALE and RICE_1 files read
from disk): simulate it, read it back through its kind of file with ``read_exposure``, run
``run_detect`` with the default ``DetectConfig``, and score the catalog against the truth with
``app.engine.metrics``: star completeness per true PSF S/N bin and purity, the PSF flux of
isolated bright stars against truth × EE₁₂, faint stars' χ, blank-sky forced F/σ at 2000
positions, centroid scatter against the Cramér–Rao bound, pairs deblended. Each line prints
the value, the sample size, the target and PASS / FAIL (n/a when the sample is too small).
A case the engine cannot run prints its error and the bench goes on. Per case: the time to
simulate, read and detect, and the galaxies' share of the bright single-peak detections.

Run (a few minutes; ``--cases`` to choose)::

    PYTHONPATH=. .venv/bin/python bench/matrix.py [--cases kolmogorov crowded ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from app.engine.matrix import CASES, CaseRun, run_case
from app.io.fits_variants import case_loader


def report(run: CaseRun) -> list[str]:
    case = run.case
    seconds = "  ".join(f"{k} {v:.1f} s" for k, v in run.seconds.items())
    seconds += f"  (CPU {run.cpu_seconds:.1f} s)"
    lines = [f"== {case.name}: {case.description}", f"   {len(run.sim.truth)} objects; "
             f"{seconds}"]
    if run.error is not None:
        lines.append(f"   ERROR {run.error}")
        return lines
    if run.galaxy_fraction is not None:
        frac, n = run.galaxy_fraction
        lines.append(f"   galaxies among bright (S/N ≥ 50) single-peak detections: "
                     f"{frac:.0%} of {n}")
    for m in run.metrics:
        lines.append(f"   {m.name:38s} {m.value:9.4f}  n={m.n:5d}  target {m.target:<13s} "
                     f"{m.verdict()}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--cpu-limit", type=float, default=300.0,
                        help="CPU seconds a case's detect run may take before it is stopped "
                        "and reported as an error (default 300)")
    args = parser.parse_args()
    cases = [c for c in CASES if not args.cases or c.name in args.cases]
    unknown = set(args.cases or ()) - {c.name for c in CASES}
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; known: {[c.name for c in CASES]}")
    started = time.perf_counter()
    totals = {"PASS": 0, "FAIL": 0, "n/a": 0, "ERROR": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            run = run_case(case, case_loader(tmp), args.cpu_limit)
            print("\n".join(report(run)), flush=True)
            if run.error is not None:
                totals["ERROR"] += 1
            for m in run.metrics:
                totals[m.verdict()] += 1
    print(f"== {len(cases)} cases in {time.perf_counter() - started:.0f} s: "
          + ", ".join(f"{v} {k}" for k, v in totals.items()))


if __name__ == "__main__":
    main()
