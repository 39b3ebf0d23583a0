"""``alemap demo -o OUTDIR``: the embedded finger-movement data set (Eickhoff et al. 2009).

73 experiments of finger movement vs rest; the expected result is the motor
network (M1, SMA, premotor cortex, cerebellum, basal ganglia and thalamus).
"""

from __future__ import annotations

from importlib import resources

from alemap.cli.ale import add_ale_options, run_analysis

__all__ = ["add_parser", "run", "demo_path"]


def demo_path() -> str:
    """Path of the embedded demo file."""
    return str(resources.files("alemap.resources.demo").joinpath("EickhoffHBM09.txt"))


def add_parser(sub) -> None:
    """Register the subcommand."""
    p = sub.add_parser("demo", help="run ALE on the embedded finger-movement data", description=__doc__)
    add_ale_options(p)
    p.set_defaults(run=run)


def run(args) -> int:
    """Entry point of ``alemap demo``."""
    return run_analysis([demo_path()], args)
