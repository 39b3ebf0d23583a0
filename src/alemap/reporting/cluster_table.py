"""The table of significant clusters.

One row per cluster that survives cluster-level FWE: its number (as in
``clusters.nii.gz``), size in voxels and mm3, the peak (MNI mm, ALE, z), both
corrected p-values (size and mass) and the ALE-weighted centre of mass in MNI
mm (GingerALE reports a weighted centre).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from alemap.space.grid import Grid

__all__ = ["COLUMNS", "cluster_table"]

COLUMNS = [
    "cluster", "voxels", "volume_mm3", "peak_x", "peak_y", "peak_z", "peak_ale", "peak_stat_z",
    "p_fwe_size", "p_fwe_mass", "mass", "com_x", "com_y", "com_z",
]


def cluster_table(ci, significant: np.ndarray, grid: Grid, ale: np.ndarray, z: np.ndarray) -> pd.DataFrame:
    """Rows for the clusters numbered in ``significant`` (1-based labels of ``ci``)."""
    if ci is None or len(significant) == 0:
        return pd.DataFrame(columns=COLUMNS)
    voxel_mm3 = grid.voxel_volume_mm3
    labels = ci.labels.ravel()[grid.mask_flat]
    ijk = grid.mask_ijk
    rows = []
    for new_id, lab in enumerate(significant, start=1):
        members = np.flatnonzero(labels == lab)
        vals = ale[members]
        peak = members[np.argmax(vals)]
        peak_mm = grid.ijk_to_mm(ijk[peak])[0]
        com_mm = grid.ijk_to_mm((ijk[members] * vals[:, None]).sum(axis=0) / vals.sum())[0]
        rows.append(
            {
                "cluster": new_id,
                "voxels": int(members.size),
                "volume_mm3": members.size * voxel_mm3,
                "peak_x": peak_mm[0], "peak_y": peak_mm[1], "peak_z": peak_mm[2],
                "peak_ale": float(ale[peak]),
                "peak_stat_z": float(z[peak]),
                "p_fwe_size": float(ci.p_size[lab - 1]),
                "p_fwe_mass": float(ci.p_mass[lab - 1]),
                "mass": float(ci.mass[lab - 1]),
                "com_x": com_mm[0], "com_y": com_mm[1], "com_z": com_mm[2],
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


MAP_COLUMNS = ["cluster", "voxels", "volume_mm3", "peak_x", "peak_y", "peak_z", "peak_stat_z", "com_x", "com_y", "com_z"]


def map_clusters(values: np.ndarray, grid: Grid, connectivity: int = 6, min_volume_mm3: float = 0.0):
    """Clusters of the non-zero voxels of an in-mask map.

    Returns ``(labels, table)``: in-mask cluster numbers (0 = none, clusters
    smaller than ``min_volume_mm3`` removed, largest first) and a table with
    one row per cluster (peak = largest value; centre of mass weighted by value).
    """
    from alemap.corrections.cluster import label_clusters

    voxel_mm3 = grid.voxel_volume_mm3
    vol = grid.to_volume(values, dtype=np.float64)
    labels_vol, n = label_clusters(vol > 0, connectivity)
    labels = labels_vol.ravel()[grid.mask_flat]
    sizes = np.bincount(labels, minlength=n + 1)[1:]
    keep = np.flatnonzero(sizes * voxel_mm3 >= min_volume_mm3) + 1
    keep = keep[np.argsort(-sizes[keep - 1], kind="stable")]
    relabel = np.zeros(n + 1, dtype=np.int64)
    relabel[keep] = np.arange(1, len(keep) + 1)
    labels = relabel[labels]
    ijk = grid.mask_ijk
    rows = []
    for new_id in range(1, len(keep) + 1):
        members = np.flatnonzero(labels == new_id)
        vals = values[members]
        peak_mm = grid.ijk_to_mm(ijk[members[np.argmax(vals)]])[0]
        com_mm = grid.ijk_to_mm((ijk[members] * vals[:, None]).sum(axis=0) / vals.sum())[0]
        rows.append({"cluster": new_id, "voxels": int(members.size), "volume_mm3": members.size * voxel_mm3,
                     "peak_x": peak_mm[0], "peak_y": peak_mm[1], "peak_z": peak_mm[2],
                     "peak_stat_z": float(vals.max()), "com_x": com_mm[0], "com_y": com_mm[1], "com_z": com_mm[2]})
    return labels, pd.DataFrame(rows, columns=MAP_COLUMNS)
