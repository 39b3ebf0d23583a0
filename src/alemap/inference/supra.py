"""Recording supra-threshold voxels, shared by every path of the compiled engine."""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["keep_if_supra"]


@numba.njit(cache=True, nogil=True, inline="always")
def keep_if_supra(v, x, log_cut, cut_ale, supra, n_supra, label, values):
    """Record in-mask voxel v if ``x = log(1 - ALE)`` is above the threshold; the new count.

    Supra voxels get ``label = -1`` (unvisited by the flood fill) and
    ``values = ALE - threshold`` (their share of the cluster mass)."""
    if x < log_cut:
        supra[n_supra] = v
        label[v] = -1
        values[v] = -np.expm1(x) - cut_ale
        return n_supra + 1
    return n_supra
