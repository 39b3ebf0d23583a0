"""``alemap demo -o OUTDIR``: the embedded demonstration data.

Default: the motor-learning project (``motor_learning.yaml``): the design of
Hardwick et al. (2013) - global ALE, serial-reaction-time/sequence learning,
sensorimotor adaptation, both contrasts, their conjunction - plus a
cerebellum-specific analysis (C-SALE), on studies selected from Neurosynth v7.

``--dataset finger``: one ALE of the 73 finger-movement experiments of
Eickhoff et al. (2009), which finds the motor network.
"""

from __future__ import annotations

import dataclasses
from importlib import resources

from alemap.cli.ale import add_ale_options, add_max_memory_option, run_analysis

__all__ = ["add_parser", "run", "demo_path", "project_path"]


def demo_path() -> str:
    """Path of the embedded finger-movement Sleuth file."""
    return str(resources.files("alemap.resources.demo").joinpath("EickhoffHBM09.txt"))


def project_path() -> str:
    """Path of the embedded motor-learning project file."""
    return str(resources.files("alemap.resources.demo").joinpath("motor_learning.yaml"))


def add_parser(sub) -> None:
    """Register the subcommand."""
    p = sub.add_parser("demo", help="run the embedded demonstration", description=__doc__)
    p.add_argument("--dataset", choices=("motor-learning", "finger"), default="motor-learning")
    add_ale_options(p)
    add_max_memory_option(p)
    p.set_defaults(run=run, iterations=None)


def _with_overrides(project, iterations, seed):
    analyses = {}
    for name, a in project.analyses.items():
        a = dict(a)
        if a["type"] in ("ale", "csale"):
            a["params"] = dict(a["params"], seed=seed, **({"iterations": iterations} if iterations else {}))
        elif a["type"] == "contrast":
            a["params"] = dict(a["params"], seed=seed)
        analyses[name] = a
    return dataclasses.replace(project, analyses=analyses, defaults=dict(project.defaults, seed=seed))


def run(args) -> int:
    """Entry point of ``alemap demo``."""
    if args.dataset == "finger":
        if args.iterations is None:
            args.iterations = 10000
        return run_analysis([demo_path()], args)
    from alemap.designs import load_project
    from alemap.designs.runner import run_project

    from alemap.cli.run import checked_jobs

    project = _with_overrides(load_project(project_path()), args.iterations, args.seed)
    jobs = checked_jobs(project, args)
    run_project(project, args.output, jobs=jobs, quiet=args.quiet, backend=getattr(args, "backend", "auto"))
    if not args.no_report:
        from alemap.cli.report import write_report

        write_report(args.output, args.quiet)
    return 0
