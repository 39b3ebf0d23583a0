"""Designs layer: whole meta-analyses from one project file.

Groups of experiments, main effects, contrasts (Eickhoff et al. 2011),
conjunctions (Nichols et al. 2005), pooling of experiments that share
subjects (Turkeltaub et al. 2012), and the runner that executes a project with
resume. Sits above :mod:`alemap.estimator`; only the CLI sits above it.
"""

from alemap.designs.project import Project, ProjectError, load_project

__all__ = ["Project", "ProjectError", "load_project"]
