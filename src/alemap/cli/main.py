"""``alemap`` command: dispatches to the subcommands."""

from __future__ import annotations

import argparse
import errno
import os
import sys
import warnings

from alemap._version import __version__
from alemap.exceptions import AlemapError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from alemap.cli import ale, batch, demo, report, run

    parser = argparse.ArgumentParser(
        prog="alemap", description="Fast, seeded activation likelihood estimation (ALE) meta-analysis."
    )
    parser.add_argument("--version", action="version", version=f"alemap {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (ale, run, report, demo, batch):
        module.add_parser(sub)
    return parser


_OS_HINTS = {
    errno.EACCES: "check the permissions, or choose another output folder with -o",
    errno.EPERM: "check the permissions, or choose another output folder with -o",
    errno.EROFS: "the file system is read-only; choose another output folder with -o",
    errno.ENOSPC: "the disk is full; free some space and rerun the same command (it resumes)",
    errno.EDQUOT: "the disk quota is exceeded; free some space and rerun the same command (it resumes)",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "this is a folder; give a file",
    errno.ENOENT: "check the path",
    errno.EEXIST: "a file is in the way",
    errno.ENAMETOOLONG: "use a shorter path",
}


def _os_message(exc: OSError) -> str:
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    what = exc.strerror or str(exc)
    hint = _OS_HINTS.get(exc.errno, "")
    return f"{where + ': ' if where else ''}{what}{'; ' + hint if hint else ''}."


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings printed by the command line: one ``alemap: warning: ...`` line for alemap's own."""
    if issubclass(category, UserWarning):
        return f"alemap: warning: {message}\n"
    return _ORIGINAL_FORMAT(message, category, filename, lineno, line)


_ORIGINAL_FORMAT = warnings.formatwarning


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    0: done; 2: a clear error (bad input, parameter, file system or resource
    limit) printed as ``alemap: error: ...``; 1: an unexpected internal error,
    printed in one line (``ALEMAP_DEBUG=1`` shows the traceback); 130: interrupted.
    """
    args = _parser().parse_args(argv)
    previous_format, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        return int(args.run(args) or 0)
    except AlemapError as exc:
        print(f"alemap: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover - interactive
        print("alemap: interrupted; rerun the same command to resume.", file=sys.stderr)
        return 130
    except OSError as exc:
        if os.environ.get("ALEMAP_DEBUG"):
            raise
        print(f"alemap: error: {_os_message(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        if os.environ.get("ALEMAP_DEBUG"):
            raise
        print("alemap: error: out of memory. Rerun with fewer --jobs, or with --max-memory set to the memory this "
              "machine can give; an interrupted Monte Carlo null resumes from its checkpoint.", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: one clear line instead of a traceback
        if os.environ.get("ALEMAP_DEBUG"):
            raise
        print(f"alemap: internal error: {type(exc).__name__}: {exc}. This is a bug in alemap; please report it "
              "with the command line (ALEMAP_DEBUG=1 shows the traceback).", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = previous_format


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
