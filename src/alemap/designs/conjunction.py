"""Conjunctions: the minimum statistic (Nichols et al. 2005).

Nichols T, Brett M, Andersson J, Wager T, Poline JB (2005). Valid conjunction
inference with the minimum statistic. NeuroImage 25:653-660.

A voxel is in the conjunction when it is significant in every input analysis;
its value is the smallest of the inputs' thresholded z values (by default the
cluster-level FWE maps ``z_cfwe``; ``map: z_vfwe`` selects voxel-level FWE).
"""

from __future__ import annotations

import numpy as np

from alemap.reporting.cluster_table import map_clusters

__all__ = ["conjunction"]


def conjunction(z_maps: list[np.ndarray], grid, connectivity: int = 6, min_volume_mm3: float = 0.0):
    """(z_conjunction, cluster table) of thresholded in-mask z maps."""
    stack = np.vstack([np.asarray(z, dtype=np.float64) for z in z_maps])
    z = np.where(np.all(stack > 0, axis=0), stack.min(axis=0), 0.0)
    labels, table = map_clusters(z, grid, connectivity, min_volume_mm3)
    return np.where(labels > 0, z, 0.0), table
