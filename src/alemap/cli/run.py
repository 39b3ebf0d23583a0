"""``alemap run PROJECT.yaml -o OUTDIR``: every analysis of a project file.

Each analysis is written to ``OUTDIR/<name>/``; a rerun skips analyses that
are complete and resumes the rest.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    """Register the subcommand."""
    p = sub.add_parser("run", help="run every analysis of a project file", description=__doc__)
    p.add_argument("project", type=Path, metavar="PROJECT.yaml")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR")
    p.add_argument("--jobs", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.set_defaults(run=run)


def run(args) -> int:
    """Entry point of ``alemap run``."""
    from alemap.designs import load_project
    from alemap.designs.runner import run_project

    project = load_project(args.project)
    run_project(project, args.output, jobs=args.jobs or os.cpu_count() or 1, quiet=args.quiet)
    if not args.quiet:
        print(f"alemap: project results in {args.output}", file=sys.stderr)
    if not args.no_report:
        from alemap.cli.report import write_report

        write_report(args.output, args.quiet)
    return 0
