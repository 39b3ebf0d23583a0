"""Progress reporting that stays quiet when nobody is watching.

A bar is shown only when standard error is a terminal and the caller did not
ask for quiet; otherwise progress goes nowhere (logs stay clean in CI, in
batch jobs and in files).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

__all__ = ["progress_bar"]


@contextmanager
def progress_bar(total: int, desc: str, quiet: bool = False) -> Iterator[Callable[[int], None]]:
    """Yield a function ``advance(n)``; draws a tqdm bar on a terminal."""
    if quiet or not sys.stderr.isatty():
        yield lambda n: None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit="it", leave=False, dynamic_ncols=True) as bar:
        yield bar.update
