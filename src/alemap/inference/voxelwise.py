"""Voxel-wise Monte Carlo null for ALE under a base-rate relocation model.

SCALE (Langner R, Rottschy C, Laird AR, Fox PT, Eickhoff SB (2014),
NeuroImage 99:6-14) and C-SALE (Magielse N et al. (2025), Neurosci Biobehav
Rev 179:106418) replace uniform relocation by relocation in proportion to a
base-rate map of how often foci are reported anywhere in the literature. The
null then differs from voxel to voxel, so each voxel is tested against its
own null: p_v = share of iterations whose ALE at v is at least the observed
ALE at v, floored at 1/n.

Counting runs in threads, each with its own counts; the integer counts are
summed at the end, so results do not depend on the number of threads.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable

import numba
import numpy as np

from alemap.inference.cpu import _accumulate
from alemap.inference.montecarlo import BATCH_SIZE, batch_draws

__all__ = ["voxelwise_counts"]


@numba.njit(cache=True, nogil=True)
def _zero_boxes(log1m, ijk, exp_offsets, cube_of_exp, width, shape):
    nx, ny, nz = shape[0], shape[1], shape[2]
    for e in range(exp_offsets.shape[0] - 1):
        r = width[cube_of_exp[e]] // 2
        for f in range(exp_offsets[e], exp_offsets[e + 1]):
            ci, cj, ck = ijk[f, 0], ijk[f, 1], ijk[f, 2]
            for a in range(max(0, ci - r), min(nx, ci + r + 1)):
                for b in range(max(0, cj - r), min(ny, cj + r + 1)):
                    base = (a * ny + b) * nz
                    for c in range(max(0, ck - r), min(nz, ck + r + 1)):
                        log1m[base + c] = 0.0


@numba.njit(cache=True, nogil=True)
def _count_batch(draws, mask_ijk, test_flat, obs_log1m, exp_offsets, cube_of_exp, log1m_k, start, width,
                 shape, log1m, combine, counts):
    n_foci = draws.shape[1]
    ijk = np.empty((n_foci, 3), dtype=np.int64)
    for t in range(draws.shape[0]):
        for f in range(n_foci):
            m = draws[t, f]
            ijk[f, 0] = mask_ijk[m, 0]
            ijk[f, 1] = mask_ijk[m, 1]
            ijk[f, 2] = mask_ijk[m, 2]
        _accumulate(ijk, exp_offsets, cube_of_exp, log1m_k, start, width, shape, log1m, combine)
        for q in range(test_flat.shape[0]):
            # null ALE >= observed ALE  <=>  null log(1 - ALE) <= observed log(1 - ALE)
            if log1m[test_flat[q]] <= obs_log1m[q]:
                counts[q] += 1
        _zero_boxes(log1m, ijk, exp_offsets, cube_of_exp, width, shape)


def voxelwise_counts(
    *, draw_ijk: np.ndarray, cdf: np.ndarray, test_flat: np.ndarray, observed_ale: np.ndarray,
    exp_offsets: np.ndarray, cube_of_exp: np.ndarray, cubes, shape, n_iterations: int, seed: int,
    jobs: int = 1, progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Counts, per tested voxel, of iterations with null ALE >= observed ALE.

    Parameters
    ----------
    draw_ijk : int array (n_candidates, 3)
        Voxels foci may be relocated to; ``cdf`` is the cumulative base rate over them.
    test_flat : int array
        Flat grid indices of the tested voxels; ``observed_ale`` their ALE.
    """
    shape = np.asarray(shape, dtype=np.int64)
    n_grid = int(np.prod(shape))
    obs = np.log1p(-np.asarray(observed_ale, dtype=np.float64))
    n_foci = int(exp_offsets[-1])
    local = threading.local()
    per_thread: list[np.ndarray] = []
    lock = threading.Lock()

    def work(b, lo, hi):
        ws = getattr(local, "ws", None)
        if ws is None:
            ws = local.ws = (np.zeros(n_grid), np.zeros(n_grid), np.zeros(test_flat.shape[0], dtype=np.int64))
            with lock:
                per_thread.append(ws[2])
        draws = batch_draws(seed, b, hi - lo, n_foci, draw_ijk.shape[0], cdf)
        _count_batch(draws, draw_ijk, test_flat, obs, exp_offsets, cube_of_exp, cubes.log1m, cubes.start,
                     cubes.width, shape, ws[0], ws[1], ws[2])
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
