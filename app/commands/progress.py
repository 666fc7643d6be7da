"""A progress bar on stderr that an engine progress callback can drive."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def progress_bar(desc: str, quiet: bool) -> Iterator[Callable[[float, str], None]]:
    """Yield ``progress(fraction, step)``; the bar closes when the block ends."""
    bar = tqdm(total=100, desc=desc, unit="%", file=sys.stderr, disable=quiet,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def progress(fraction: float, step: str) -> None:
        bar.n = int(round(100 * fraction))
        bar.set_postfix_str(step)
        bar.refresh()

    try:
        yield progress
    finally:
        bar.close()
