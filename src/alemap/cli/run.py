"""``alemap run PROJECT.yaml -o OUTDIR``: every analysis of a project file.

Each analysis is written to ``OUTDIR/<name>/``; a rerun skips analyses that
are complete and resumes the rest.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from alemap.cli.ale import add_backend_option, add_max_memory_option, positive_int

__all__ = ["add_parser", "run", "project_preflight", "checked_jobs"]

#: Files that mark a finished project folder; removed before a (re)run, rewritten at its end.
PROJECT_MARKERS = ("project.json", "report.html")


def add_parser(sub) -> None:
    """Register the subcommand."""
    p = sub.add_parser("run", help="run every analysis of a project file", description=__doc__)
    p.add_argument("project", type=Path, metavar="PROJECT.yaml")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR")
    p.add_argument("--jobs", type=positive_int, default=None, help="CPU threads (default: all cores)")
    add_backend_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    add_max_memory_option(p)
    p.set_defaults(run=run)


def project_preflight(project, outdir: Path, jobs: int, max_memory: int | None, report: bool, quiet: bool) -> int:
    """Resource checks of a whole project before it runs; the number of jobs to use.

    Memory is estimated for an ALE of *all* the project's experiments (an upper
    bound of every group) on each mask the project uses; disk for every
    analysis's outputs. See :mod:`alemap._limits`.
    """
    from alemap._limits import check_writable, preflight
    from alemap.data.experiment_set import ExperimentSet
    from alemap.estimator import ALE
    from alemap.io import load_experiments
    from alemap.io.atomic import remove_stale_temps

    sets = [load_experiments(s["path"], space=s.get("space"), sheet=s.get("sheet")) for s in project.inputs]
    experiments = ExperimentSet.concat(sets) if len(sets) > 1 else sets[0]
    check_writable(outdir)
    remove_stale_temps(outdir, depth=2)
    mains = [a for a in project.analyses.values() if a["type"] in ("ale", "csale")]
    masks = {a["params"].get("mask") for a in mains} or {None}
    iterations = max((int(a["params"].get("iterations", 10000)) for a in mains), default=0)
    for mask in sorted(masks, key=str):
        grid = ALE(mask=None if mask is None else str((project.base / mask).resolve()))._grid()
        jobs = preflight(experiments, grid, jobs=jobs, iterations=iterations, outdir=outdir, max_memory=max_memory,
                         report=report, n_analyses=len(project.analyses), quiet=quiet)
    return jobs


def checked_jobs(project, args) -> int:
    """Checks before a project runs (backend, memory, disk; shared with ``alemap demo``); the jobs to use."""
    from alemap.inference.backends import resolve_backend

    resolve_backend(getattr(args, "backend", "auto"))  # a GPU asked for but not usable: fail before anything runs
    return project_preflight(project, Path(args.output), args.jobs or os.cpu_count() or 1,
                             getattr(args, "max_memory", None), not args.no_report, args.quiet)


def run(args) -> int:
    """Entry point of ``alemap run``."""
    from alemap.designs import load_project
    from alemap.designs.runner import run_project

    project = load_project(args.project)
    jobs = checked_jobs(project, args)
    for marker in PROJECT_MARKERS:
        (Path(args.output) / marker).unlink(missing_ok=True)
    run_project(project, args.output, jobs=jobs, quiet=args.quiet, backend=getattr(args, "backend", "auto"))
    if not args.quiet:
        print(f"alemap: project results in {args.output}", file=sys.stderr)
    if not args.no_report:
        from alemap.cli.report import write_report

        write_report(args.output, args.quiet)
    return 0
