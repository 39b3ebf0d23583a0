"""Cluster-level FWE correction (Eickhoff et al. 2012; recommended by Eickhoff et al. 2016).

Voxels with ALE above the cluster-forming threshold (from the analytic null at
the cluster-forming p, 0.001 by default) are grouped into clusters by face
(6), edge (18) or vertex (26) connectivity. A cluster's corrected p is the
fraction of Monte Carlo iterations whose largest cluster is at least as large
(size: voxel count; mass: sum of ALE minus threshold, Bullmore et al. 1999),
floored at 1/n. Clusters with corrected p < alpha are significant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from alemap.corrections.voxel import null_to_p

__all__ = ["CONNECTIVITIES", "ClusterInference", "label_clusters", "cluster_inference"]

CONNECTIVITIES = (6, 18, 26)


def label_clusters(supra: np.ndarray, connectivity: int = 6) -> tuple[np.ndarray, int]:
    """Label connected components of a boolean volume."""
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be one of {CONNECTIVITIES}, got {connectivity!r}.")
    rank = CONNECTIVITIES.index(connectivity) + 1
    labels, n = ndimage.label(supra, structure=ndimage.generate_binary_structure(3, rank))
    return labels, int(n)


@dataclass(frozen=True)
class ClusterInference:
    """Observed clusters and their FWE-corrected p-values.

    ``labels`` is a volume of cluster numbers 1..n ordered by decreasing size
    (0 elsewhere); ``size``, ``mass``, ``p_size`` and ``p_mass`` are indexed by
    cluster number - 1.
    """

    labels: np.ndarray
    size: np.ndarray
    mass: np.ndarray
    p_size: np.ndarray
    p_mass: np.ndarray


def cluster_inference(
    ale_volume: np.ndarray,
    cut_ale: float,
    null_size: np.ndarray,
    null_mass: np.ndarray,
    connectivity: int = 6,
) -> ClusterInference:
    """Label the clusters of ``ale_volume > cut_ale`` and test them against the null maxima."""
    labels, n = label_clusters(ale_volume > cut_ale, connectivity)
    if n == 0:
        empty = np.zeros(0)
        return ClusterInference(labels, empty.astype(np.int64), empty, empty, empty)
    idx = labels.ravel()
    size = np.bincount(idx, minlength=n + 1)[1:]
    excess = np.where(idx > 0, ale_volume.ravel() - cut_ale, 0.0)
    mass = np.bincount(idx, weights=excess, minlength=n + 1)[1:]
    order = np.lexsort((-mass, -size))  # largest first; ties by mass
    relabel = np.zeros(n + 1, dtype=np.int32)
    relabel[order + 1] = np.arange(1, n + 1)
    labels = relabel[labels]
    size, mass = size[order], mass[order]
    return ClusterInference(
        labels=labels,
        size=size,
        mass=mass,
        p_size=null_to_p(size, null_size),
        p_mass=null_to_p(mass, null_mass),
    )
