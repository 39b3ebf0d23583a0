"""Helpers for the project-file tests (tests/test_project_file.py, tests/test_designs.py).

Projects are written into a temporary folder beside a copy of the embedded
motor-learning table (``motor_learning.tsv``: 28 sequence-learning and 16
sensorimotor-adaptation experiments, one per study, tag ``paradigm``) or beside
a tiny hand-made table whose studies report several experiments.
"""

from __future__ import annotations

import shutil
import textwrap
from importlib import resources
from pathlib import Path

__all__ = ["DEMO_TSV", "SEVERAL_TSV", "write_project", "line_of"]

DEMO_TSV = Path(str(resources.files("alemap.resources.demo").joinpath("motor_learning.tsv")))

#: Study S1 reports two experiments (e1 with two foci, e2 with one); S2 one experiment.
SEVERAL_TSV = (
    "study\texperiment\tsubjects\tx\ty\tz\tspace\tparadigm\n"
    "S1\te1\t10\t-30\t-26\t60\tMNI\tsequence\n"
    "S1\te1\t10\t30\t-26\t60\tMNI\tsequence\n"
    "S1\te2\t14\t0\t-20\t40\tMNI\tsequence\n"
    "S2\te1\t12\t10\t10\t10\tMNI\tsequence\n"
)


def write_project(folder: Path, text: str, name: str = "project.yaml", table: str | None = "demo") -> Path:
    """Write a project file (dedented) into ``folder`` with its input table; return its path.

    ``table``: ``"demo"`` copies the motor-learning table as ``motor_learning.tsv``;
    ``"several"`` writes :data:`SEVERAL_TSV` as ``several.tsv``; ``None`` writes none.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if table == "demo":
        shutil.copyfile(DEMO_TSV, folder / "motor_learning.tsv")
    elif table == "several":
        (folder / "several.tsv").write_text(SEVERAL_TSV, encoding="utf-8")
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def line_of(path: Path, needle: str, occurrence: int = 1) -> int:
    """1-based number of the line of ``path`` holding the ``occurrence``-th ``needle``."""
    seen = 0
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} not in {path}")
