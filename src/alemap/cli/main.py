"""``alemap`` command: dispatches to the subcommands."""

from __future__ import annotations

import argparse
import sys

from alemap._version import __version__
from alemap.exceptions import AlemapError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from alemap.cli import ale, demo, report, run

    parser = argparse.ArgumentParser(
        prog="alemap", description="Fast, seeded activation likelihood estimation (ALE) meta-analysis."
    )
    parser.add_argument("--version", action="version", version=f"alemap {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (ale, run, report, demo):
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except AlemapError as exc:
        print(f"alemap: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover - interactive
        print("alemap: interrupted; rerun the same command to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
