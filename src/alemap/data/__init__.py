"""Data layer: experiments and their foci, independent of any grid or statistic.

Layer 1 of alemap (data -> space -> kernels -> statistics -> inference ->
corrections -> reporting/io -> cli). Imports nothing from the layers above.
"""

from alemap.data.experiment_set import ExperimentSet, FocusOrigin

__all__ = ["ExperimentSet", "FocusOrigin"]
