"""Whether numba's on-disk cache holds the compiled CPU engine, and a note when it does not.

The engine's functions are compiled for the machine on first use and cached
next to the package (or in numba's per-user cache where that is read-only).
The first run after installing therefore spends about 35 seconds compiling
(one core of the 2-core sandbox; docs/dev-notes/session-8.md) before its first
iteration, with nothing else to show; :class:`alemap.ALE` says so beforehand
unless quiet.
"""

from __future__ import annotations

import os
import sys

__all__ = ["engine_compiled", "note_if_compiling"]

_noted = False


def _index_path() -> str | None:
    """numba's cache index of the engine's entry point, or None where it cannot be found
    (numba internals: ``Dispatcher._cache._cache_file._index_path``; JIT disabled)."""
    try:
        from alemap.inference.cpu import run_batch_kernel

        return str(run_batch_kernel._cache._cache_file._index_path)
    except Exception:  # another numba version, or NUMBA_DISABLE_JIT: no note rather than a false one
        return None


def engine_compiled() -> bool:
    """False when numba's cache has no entry for the engine, i.e. the next run compiles it."""
    index = _index_path()
    return index is None or os.path.exists(index)


def note_if_compiling() -> None:
    """Print a one-line note on standard error before the first compilation (once per process)."""
    global _noted
    if not _noted and not engine_compiled():
        _noted = True
        print("alemap: compiling the engine for this machine first (the first run after installing; "
              "about a minute, then cached)", file=sys.stderr)
