"""Base-rate maps for SCALE and C-SALE nulls.

Langner R et al. (2014) NeuroImage 99:6-14 (SCALE); Magielse N et al. (2025)
Neurosci Biobehav Rev 179:106418 (C-SALE): the probability that a focus
reported anywhere in the literature lands in a voxel, estimated as the **sum**
(not the maximum) of the ALE kernels of every focus of a reference database,
restricted to the analysis mask and normalised to sum 1.
"""

from __future__ import annotations

import numba
import numpy as np

from alemap.kernels.gaussian import kernel_cubes

__all__ = ["kernel_density", "base_rate_map"]


@numba.njit(cache=True)
def _sum_kernels(ijk, cube_of_focus, values, start, width, shape, out):
    nx, ny, nz = shape[0], shape[1], shape[2]
    for f in range(ijk.shape[0]):
        j = cube_of_focus[f]
        w = width[j]
        r = w // 2
        s0 = start[j]
        ci, cj, ck = ijk[f, 0], ijk[f, 1], ijk[f, 2]
        for a in range(max(0, ci - r), min(nx, ci + r + 1)):
            for b in range(max(0, cj - r), min(ny, cj + r + 1)):
                base = (a * ny + b) * nz
                kbase = s0 + ((a - ci + r) * w + (b - cj + r)) * w - ck + r
                for c in range(max(0, ck - r), min(nz, ck + r + 1)):
                    out[base + c] += values[kbase + c]


def kernel_density(ijk: np.ndarray, n_subjects: np.ndarray, shape, voxel_size_mm: float = 2.0) -> np.ndarray:
    """Full-grid sum of the ALE kernels of foci ``ijk`` with sample sizes ``n_subjects``."""
    cubes = kernel_cubes(n_subjects, voxel_size_mm)
    out = np.zeros(int(np.prod(shape)))
    _sum_kernels(np.ascontiguousarray(ijk, dtype=np.int64), cubes.index(n_subjects), cubes.values, cubes.start,
                 cubes.width, np.asarray(shape, dtype=np.int64), out)
    return out.reshape(shape)


def base_rate_map(density_in_mask: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """Normalise a non-negative density over mask voxels to probabilities (sum 1).

    ``floor`` (relative to the mean) keeps every voxel reachable if wanted; the
    C-SALE scripts use no floor.
    """
    d = np.asarray(density_in_mask, dtype=np.float64)
    if np.any(d < 0) or not np.isfinite(d).all():
        raise ValueError("A base-rate density must be finite and non-negative.")
    d = d + floor * d.mean()
    total = d.sum()
    if total <= 0:
        raise ValueError("The base-rate density is zero everywhere in the mask.")
    return d / total
