"""Modelled-activation maps and the ALE union.

Each experiment's MA map is the voxel-wise **maximum** of the kernels of its
foci (the non-additive MA of Turkeltaub et al. 2012, Hum Brain Mapp
33:1-13), so one experiment reporting several nearby peaks is not counted
several times. ALE is the union of the experiments' MA maps, the
probability that at least one experiment activates a voxel (Eickhoff et al.
2009)::

    ALE_v = 1 - prod_i (1 - MA_iv) = -expm1( sum_i log1p(-MA_iv) )

MA maps are kept sparse (in-mask voxel index and value per experiment), in
float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from alemap.kernels.gaussian import KernelCubes

__all__ = ["MAMaps", "ma_maps", "ale_from_ma"]


@dataclass(frozen=True)
class MAMaps:
    """Sparse MA maps: experiment ``e`` has ``cols[indptr[e]:indptr[e+1]]``
    (in-mask voxel indices) with values ``vals[...]``."""

    indptr: np.ndarray
    cols: np.ndarray
    vals: np.ndarray
    n_voxels: int

    @property
    def n_experiments(self) -> int:
        """Number of experiments."""
        return self.indptr.shape[0] - 1

    def experiment(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        """(voxel indices, MA values) of experiment ``e``."""
        a, b = self.indptr[e], self.indptr[e + 1]
        return self.cols[a:b], self.vals[a:b]

    def dense(self, e: int) -> np.ndarray:
        """Dense in-mask MA vector of experiment ``e``."""
        out = np.zeros(self.n_voxels)
        c, v = self.experiment(e)
        out[c] = v
        return out

    def max_per_experiment(self) -> np.ndarray:
        """Largest MA value of each experiment (0 for none)."""
        out = np.zeros(self.n_experiments)
        for e in range(self.n_experiments):
            _, v = self.experiment(e)
            if v.size:
                out[e] = v.max()
        return out


@numba.njit(cache=True, nogil=True)
def _ma_pass(ijk, exp_offsets, cube_of_exp, values, start, width, shape, mask_index, scratch, touched,
             indptr, cols, vals, fill):
    """One pass over the experiments: count (``fill=False``, into ``indptr``)
    or write (``fill=True``) the in-mask voxels where each experiment's MA > 0."""
    nx, ny, nz = shape[0], shape[1], shape[2]
    n_out = 0
    for e in range(exp_offsets.shape[0] - 1):
        j = cube_of_exp[e]
        w = width[j]
        r = w // 2
        s0 = start[j]
        n_t = 0
        for f in range(exp_offsets[e], exp_offsets[e + 1]):
            ci, cj, ck = ijk[f, 0], ijk[f, 1], ijk[f, 2]
            for a in range(max(0, ci - r), min(nx, ci + r + 1)):
                for b in range(max(0, cj - r), min(ny, cj + r + 1)):
                    base = (a * ny + b) * nz
                    kbase = s0 + ((a - ci + r) * w + (b - cj + r)) * w - ck + r
                    for c in range(max(0, ck - r), min(nz, ck + r + 1)):
                        v = base + c
                        if mask_index[v] < 0:
                            continue
                        k = values[kbase + c]
                        if k <= 0.0:
                            continue
                        if scratch[v] == 0.0:
                            touched[n_t] = v
                            n_t += 1
                        if k > scratch[v]:
                            scratch[v] = k
        for t in range(n_t):
            v = touched[t]
            if fill:
                cols[n_out] = mask_index[v]
                vals[n_out] = scratch[v]
            scratch[v] = 0.0
            n_out += 1
        if not fill:
            indptr[e + 1] = n_out


def _ma_sparse(ijk, exp_offsets, cube_of_exp, values, start, width, shape, mask_index):
    """Sparse MA maps, built in two passes so that memory is allocated exactly once
    (int32 voxel numbers, float64 values: 12 bytes per entry)."""
    n_grid = int(np.prod(shape))
    scratch = np.zeros(n_grid)
    touched = np.empty(n_grid, dtype=np.int64)
    indptr = np.zeros(exp_offsets.shape[0], dtype=np.int64)
    args = (ijk, exp_offsets, cube_of_exp, values, start, width, shape, mask_index, scratch, touched, indptr)
    _ma_pass(*args, np.empty(0, dtype=np.int32), np.empty(0), False)
    cols = np.empty(int(indptr[-1]), dtype=np.int32)
    vals = np.empty(int(indptr[-1]))
    _ma_pass(*args, cols, vals, True)
    return indptr, cols, vals


@numba.njit(cache=True, nogil=True)
def _log_sum(cols, vals, n_voxels):
    out = np.zeros(n_voxels)
    for t in range(cols.shape[0]):
        out[cols[t]] += np.log1p(-vals[t])
    return out


def mask_index_grid(mask: np.ndarray) -> np.ndarray:
    """Flat int64 array: in-mask index of each voxel, -1 outside the mask."""
    flat = mask.ravel()
    out = np.full(flat.shape[0], -1, dtype=np.int64)
    out[flat] = np.arange(int(flat.sum()))
    return out


def ma_maps(
    ijk: np.ndarray,
    exp_offsets: np.ndarray,
    cube_of_exp: np.ndarray,
    cubes: KernelCubes,
    mask: np.ndarray,
) -> MAMaps:
    """Sparse non-additive MA maps of every experiment.

    Parameters
    ----------
    ijk : int array (n_foci, 3)
        Voxel indices of the foci (may lie outside the grid; kernels are clipped).
    exp_offsets : int array (n_experiments + 1,)
        Foci of experiment ``e`` are ``ijk[exp_offsets[e]:exp_offsets[e+1]]``.
    cube_of_exp : int array (n_experiments,)
        Kernel (cube) index of each experiment.
    cubes : KernelCubes
        The kernels.
    mask : bool array, grid shape
        In-analysis voxels; MA is only kept inside.
    """
    mi = mask_index_grid(mask)
    indptr, cols, vals = _ma_sparse(
        np.ascontiguousarray(ijk, dtype=np.int64),
        np.asarray(exp_offsets, dtype=np.int64),
        np.asarray(cube_of_exp, dtype=np.int64),
        cubes.values,
        cubes.start,
        cubes.width,
        np.asarray(mask.shape, dtype=np.int64),
        mi,
    )
    return MAMaps(indptr, cols, vals, int(mask.sum()))


def ale_from_ma(ma: MAMaps) -> np.ndarray:
    """ALE union (in-mask vector, float64) of sparse MA maps."""
    return -np.expm1(_log_sum(ma.cols, ma.vals, ma.n_voxels))
