"""alemap: fast, seeded Activation Likelihood Estimation (ALE).

Public API: :class:`alemap.ALE` (estimator), :func:`alemap.load_experiments`
(any supported input file), :class:`alemap.ExperimentSet`.
"""

from alemap._version import __version__

__all__ = ["__version__", "ALE", "ALEResult", "ExperimentSet", "load_experiments"]


def __getattr__(name):  # lazy public surface: importing alemap stays cheap
    if name == "ALE":
        from alemap.estimator import ALE

        return ALE
    if name == "ALEResult":
        from alemap.result import ALEResult

        return ALEResult
    if name == "ExperimentSet":
        from alemap.data import ExperimentSet

        return ExperimentSet
    if name == "load_experiments":
        from alemap.io import load_experiments

        return load_experiments
    raise AttributeError(f"module 'alemap' has no attribute {name!r}")
