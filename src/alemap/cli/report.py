"""``alemap report OUTDIR``: (re)write ``OUTDIR/report.html`` for a run or a project."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["add_parser", "run", "write_report"]


def add_parser(sub) -> None:
    """Register the subcommand."""
    p = sub.add_parser("report", help="write the HTML report of an output folder", description=__doc__)
    p.add_argument("outdir", type=Path, metavar="OUTDIR")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=run)


def write_report(outdir: Path, quiet: bool) -> Path:
    """Build the report and say where it is."""
    from alemap.reporting.report import build_report

    path = build_report(outdir)
    if not quiet:
        print(f"alemap: report in {path}", file=sys.stderr)
    return path


def run(args) -> int:
    """Entry point of ``alemap report``."""
    write_report(args.outdir, args.quiet)
    return 0
