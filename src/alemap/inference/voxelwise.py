"""Voxel-wise Monte Carlo null for ALE under a base-rate relocation model.

SCALE (Langner R, Rottschy C, Laird AR, Fox PT, Eickhoff SB (2014),
NeuroImage 99:6-14) and C-SALE (Magielse N et al. (2025), Neurosci Biobehav
Rev 179:106418) replace uniform relocation by relocation in proportion to a
base-rate map of how often foci are reported anywhere in the literature. The
null then differs from voxel to voxel, so each voxel is tested against its
own null: p_v = share of iterations whose ALE at v is at least the observed
ALE at v, floored at 1/n.

Each iteration computes ``log(1 - ALE)`` exactly (the plain accumulation's
bits) with the whole-grid pass's slabs (``cpu._slab_log1m``: foci binned to
4 x 8 x 96-voxel slabs, accumulated in cache-resident buffers with eight-wide
kernel rows), on the box of the grid that holds the relocation region and the
tested voxels widened by the kernel radius, and only in the slabs holding a
tested voxel whose observed ALE is above 0: ``log(1 - ALE) <= 0`` always, so a
voxel with observed ALE 0 counts in every iteration without computing it.
Measured (one thread, same counts; docs/dev-notes/session-7.md): the
motor-learning demo's C-SALE (173 cerebellar foci) 6.55 -> 0.90 ms per
iteration, a whole-brain SCALE null of the finger set (654 foci) 29.9 -> 6.3.

Counting runs in threads, each with its own counts; the integer counts are
summed at the end, so results do not depend on the number of threads
(tested against a plain recomputation: ``tests/test_voxelwise.py``).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable

import numba
import numpy as np

from alemap.inference.cpu import ROW_PAD, SLAB, SLAB_VOXELS, _bin_foci, _slab_log1m
from alemap.inference.montecarlo import BATCH_SIZE, batch_draws
from alemap.inference.plan import kernel_rows, slab_tiling, tiles_per_focus

__all__ = ["voxelwise_counts"]


@numba.njit(cache=True, nogil=True)
def _count_batch(draws, draw_ijk, exp_of_focus, cube_of_focus, width, rows, row_start, shape, dims, sshape,
                 slab_z, test_at, obs_log1m, ptr, lst, acc, comb, counts):
    """Add to ``counts[q]`` the iterations of ``draws`` whose ``log(1 - ALE)`` at the voxel with
    ``test_at == q`` is at most ``obs_log1m[q]``, computing only the ``dims`` slabs whose z-range
    ``slab_z`` is not empty (those holding such voxels; ``cpu._slab_log1m``: the plain
    accumulation's bits)."""
    ny, nz = shape[1], shape[2]
    SY, SZ = dims[1], dims[2]
    n_foci = draws.shape[1]
    ijk = np.empty((n_foci, 3), dtype=np.int64)
    for it in range(draws.shape[0]):
        for f in range(n_foci):
            m = draws[it, f]
            ijk[f, 0] = draw_ijk[m, 0]
            ijk[f, 1] = draw_ijk[m, 1]
            ijk[f, 2] = draw_ijk[m, 2]
        _bin_foci(ijk, cube_of_focus, width, shape, dims, sshape, slab_z, ptr, lst)
        beg = np.int64(0)  # not a literal (see cpu._tiled)
        for t in range(ptr.shape[0] - 1):
            end = ptr[t]
            if end == beg:
                continue  # no focus reaches the slab: log(1 - ALE) = 0 > every obs_log1m there
            a0, a1, b0, b1, c0, c1 = _slab_log1m(ijk, exp_of_focus, cube_of_focus, width, rows, row_start, shape,
                                                 dims, sshape, t, lst, beg, end, acc, comb)
            z0, z1 = max(c0, slab_z[t, 0]), min(c1, slab_z[t, 1])
            for a in range(a0, a1):
                for b in range(b0, b1):
                    base = (a * ny + b) * nz
                    tb = ((a - a0) * SY + (b - b0)) * SZ - c0
                    for c in range(z0, z1):
                        q = test_at[base + c]
                        # null ALE >= observed ALE  <=>  null log(1 - ALE) <= observed log(1 - ALE)
                        if q >= 0 and acc[tb + c] <= obs_log1m[q]:
                            counts[q] += 1
            beg = end


def _crop(draw_ijk: np.ndarray, test_flat: np.ndarray, shape, radius: int):
    """The box of the grid that holds every kernel box of a focus at a ``draw_ijk`` voxel and every
    tested voxel: (origin, shape, tested voxels' ijk). Only the grid's faces cut a kernel box
    inside it."""
    test_ijk = np.column_stack(np.unravel_index(test_flat, tuple(int(s) for s in shape)))
    both = np.vstack([draw_ijk, test_ijk]) if test_ijk.size else draw_ijk
    lo = np.maximum(both.min(axis=0) - radius, 0)
    hi = np.minimum(both.max(axis=0) + radius + 1, np.asarray(shape, dtype=np.int64))
    return lo.astype(np.int64), (hi - lo).astype(np.int64), test_ijk


def voxelwise_counts(
    *, draw_ijk: np.ndarray, cdf: np.ndarray, test_flat: np.ndarray, observed_ale: np.ndarray,
    exp_offsets: np.ndarray, cube_of_exp: np.ndarray, cubes, shape, n_iterations: int, seed: int,
    jobs: int = 1, progress: Callable[[int], None] | None = None, backend: str = "cpu",
) -> np.ndarray:
    """Counts, per tested voxel, of iterations with null ALE >= observed ALE.

    ``backend`` ``"cpu"`` (numba, ``jobs`` threads) or an array backend, ``"gpu"`` (CuPy) or
    ``"numpy"`` (the GPU's code on the host, for tests): :mod:`alemap.inference.gpu_voxelwise`,
    the same counts.

    Parameters
    ----------
    draw_ijk : int array (n_candidates, 3)
        Voxels foci may be relocated to; ``cdf`` is the cumulative base rate over them.
    test_flat : int array
        Flat grid indices of the tested voxels; ``observed_ale`` their ALE.
    """
    if backend != "cpu":
        from alemap.inference.gpu_voxelwise import voxelwise_counts_array

        return voxelwise_counts_array(draw_ijk=draw_ijk, cdf=cdf, test_flat=test_flat, observed_ale=observed_ale,
                                      exp_offsets=exp_offsets, cube_of_exp=cube_of_exp, cubes=cubes, shape=shape,
                                      n_iterations=n_iterations, seed=seed, backend=backend, progress=progress)
    shape = np.asarray(shape, dtype=np.int64)
    origin, sub, test_ijk = _crop(draw_ijk, test_flat, shape, int(np.max(cubes.width)) // 2)
    obs = np.log1p(-np.asarray(observed_ale, dtype=np.float64))
    # log(1 - ALE) <= 0 always: a voxel whose observed ALE is 0 counts in every iteration; the
    # others can count only where foci reach, so only the slabs holding them are computed
    always = obs >= 0.0
    t = test_ijk - origin
    test_at = np.full(int(np.prod(sub)), -1, dtype=np.int64)
    flat = (t[:, 0] * sub[1] + t[:, 1]) * sub[2] + t[:, 2]
    test_at[flat[~always]] = np.flatnonzero(~always)
    sshape, slab_z = slab_tiling((test_at >= 0).reshape(tuple(int(v) for v in sub)))
    rows = kernel_rows(cubes)
    ijk_sub = np.ascontiguousarray(draw_ijk - origin, dtype=np.int64)
    exp_of_focus = np.repeat(np.arange(len(exp_offsets) - 1, dtype=np.int64), np.diff(exp_offsets))
    cube_of_focus = np.asarray(cube_of_exp, dtype=np.int64)[exp_of_focus]
    n_foci = int(exp_offsets[-1])
    n_list = max(1, n_foci * tiles_per_focus(int(np.max(cubes.width))))
    local = threading.local()
    per_thread: list[np.ndarray] = []
    lock = threading.Lock()

    def work(b, lo, hi):
        ws = getattr(local, "ws", None)
        if ws is None:
            ws = local.ws = (np.zeros(SLAB_VOXELS + ROW_PAD), np.zeros(SLAB_VOXELS + ROW_PAD),
                             np.zeros(int(np.prod(sshape)) + 1, dtype=np.int64), np.empty(n_list, dtype=np.int32),
                             np.zeros(test_flat.shape[0], dtype=np.int64))
            with lock:
                per_thread.append(ws[4])
        draws = batch_draws(seed, b, hi - lo, n_foci, draw_ijk.shape[0], cdf)
        acc, comb, ptr, lst, counts = ws
        _count_batch(draws, ijk_sub, exp_of_focus, cube_of_focus, cubes.width, rows["log1m_rows"], rows["row_start"],
                     sub, SLAB, sshape, slab_z, test_at, obs, ptr, lst, acc, comb, counts)
        counts[always] += hi - lo
        return hi - lo

    batches = [(b, lo, min(n_iterations, lo + BATCH_SIZE)) for b, lo in enumerate(range(0, n_iterations, BATCH_SIZE))]
    if jobs <= 1:
        for t in batches:
            n = work(*t)
            if progress:
                progress(n)
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for fut in as_completed([pool.submit(work, *t) for t in batches]):
                if progress:
                    progress(fut.result())
    return np.sum(per_thread, axis=0) if per_thread else np.zeros(test_flat.shape[0], dtype=np.int64)
