"""Voxel-wise Monte Carlo null for ALE under a base-rate relocation model.

SCALE (Langner R, Rottschy C, Laird AR, Fox PT, Eickhoff SB (2014),
NeuroImage 99:6-14) and C-SALE (Magielse N et al. (2025), Neurosci Biobehav
Rev 179:106418) replace uniform relocation by relocation in proportion to a
base-rate map of how often foci are reported anywhere in the literature. The
null then differs from voxel to voxel, so each voxel is tested against its
own null: p_v = share of iterations whose ALE at v is at least the observed
ALE at v, floored at 1/n.

Each iteration computes ``log(1 - ALE)`` exactly (the plain accumulation's
bits, ``cpu._accumulate``) on the box of the grid that holds the relocation
region and the tested voxels, widened by the kernel radius (for C-SALE the
cerebellum's: 76 x 56 x 51 voxels, 2 MB, instead of the 902,629-voxel grid),
kernel rows as eight-wide vector steps, and clears it with one fill. Measured
(one thread, same counts as before; session 7, `/tmp/x/s7/abvw.py`): the
motor-learning demo's C-SALE (173 cerebellar foci) 6.55 -> 1.64 ms per
iteration, a whole-brain SCALE null of the finger set (654 foci) 29.9 -> 11.4.

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

from alemap.inference.cpu import ROW_PAD, _isolated
from alemap.inference.montecarlo import BATCH_SIZE, batch_draws
from alemap.inference.plan import kernel_rows
from alemap.inference.simd import LANES, add8, flush8, min8

__all__ = ["voxelwise_counts"]


#: What ``_box_steps`` does with a focus's box.
_ADD, _MIN, _FLUSH = 0, 1, 2


@numba.njit(cache=True, nogil=True, inline="always")
def _box_steps(log1m, comb, rows, row_start, ijk, f, w, shape, NZS, mode):
    """Focus f's kernel box (cube of edge ``w`` at ``rows[row_start:]``) as eight-wide steps per
    row: add its rows to ``log1m`` (``_ADD``), take their minimum into ``comb`` (``_MIN``), or
    move ``comb`` into ``log1m`` there (``_FLUSH``)."""
    nx, ny, nz = shape[0], shape[1], shape[2]
    r = w // 2
    ci, cj, ck = ijk[f, 0], ijk[f, 1], ijk[f, 2]
    lc, hc = max(0, ck - r), min(nz, ck + r + 1)
    n_vec = (hc - lc + LANES - 1) // LANES
    for a in range(max(0, ci - r), min(nx, ci + r + 1)):
        for b in range(max(0, cj - r), min(ny, cj + r + 1)):
            t = (a * ny + b) * NZS + lc
            k = row_start + ((a - ci + r) * w + (b - cj + r)) * (w + ROW_PAD) + lc - ck + r
            for h in range(n_vec):
                if mode == _ADD:
                    add8(log1m, t + LANES * h, rows, k + LANES * h)
                elif mode == _MIN:
                    min8(comb, t + LANES * h, rows, k + LANES * h)
                else:
                    flush8(log1m, comb, t + LANES * h)


@numba.njit(cache=True, nogil=True)
def _accumulate_rows(ijk, exp_offsets, cube_of_exp, rows, row_start, width, shape, NZS, log1m, comb):
    """log(1 - ALE) on a grid of ``shape`` stored with z-rows ``NZS >= nz + ROW_PAD`` long: the
    plain accumulation (``cpu._accumulate``: a focus whose box overlaps no other of its
    experiment added straight in, the others combined by minimum and then added once), each
    kernel row as eight-wide steps (``simd``) from the padded rows of ``plan.kernel_rows``.

    A step past a row's end adds the kernel row's zero padding, or, for a box cut by the grid's
    end, lands in the row's spare ``NZS - nz`` elements, which are never read; each voxel gets
    the same additions in the same order as the plain accumulation: the same bits."""
    for e in range(exp_offsets.shape[0] - 1):
        j = cube_of_exp[e]
        w = width[j]
        a0, a1 = exp_offsets[e], exp_offsets[e + 1]
        any_overlap = False
        for f in range(a0, a1):
            isolated = _isolated(ijk, a0, a1, f, w)
            any_overlap = any_overlap or not isolated
            _box_steps(log1m, comb, rows, row_start[j], ijk, f, w, shape, NZS, _ADD if isolated else _MIN)
        if any_overlap:
            for f in range(a0, a1):
                if not _isolated(ijk, a0, a1, f, w):
                    _box_steps(log1m, comb, rows, row_start[j], ijk, f, w, shape, NZS, _FLUSH)


@numba.njit(cache=True, nogil=True)
def _count_batch(draws, draw_ijk, test_at, obs_log1m, exp_offsets, cube_of_exp, rows, row_start, width,
                 shape, NZS, log1m, comb, counts):
    n_foci = draws.shape[1]
    ijk = np.empty((n_foci, 3), dtype=np.int64)
    for t in range(draws.shape[0]):
        for f in range(n_foci):
            m = draws[t, f]
            ijk[f, 0] = draw_ijk[m, 0]
            ijk[f, 1] = draw_ijk[m, 1]
            ijk[f, 2] = draw_ijk[m, 2]
        _accumulate_rows(ijk, exp_offsets, cube_of_exp, rows, row_start, width, shape, NZS, log1m, comb)
        for q in range(test_at.shape[0]):
            # null ALE >= observed ALE  <=>  null log(1 - ALE) <= observed log(1 - ALE)
            if log1m[test_at[q]] <= obs_log1m[q]:
                counts[q] += 1
        log1m[:] = 0.0


def _crop(draw_ijk: np.ndarray, test_flat: np.ndarray, shape, radius: int):
    """The box of the grid that holds every kernel box of a focus at a ``draw_ijk`` voxel and every
    tested voxel: (origin, shape). Only the grid's faces cut a kernel box inside it."""
    test_ijk = np.column_stack(np.unravel_index(test_flat, tuple(int(s) for s in shape)))
    both = np.vstack([draw_ijk, test_ijk]) if test_ijk.size else draw_ijk
    lo = np.maximum(both.min(axis=0) - radius, 0)
    hi = np.minimum(both.max(axis=0) + radius + 1, np.asarray(shape, dtype=np.int64))
    return lo.astype(np.int64), (hi - lo).astype(np.int64), test_ijk


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
    origin, sub, test_ijk = _crop(draw_ijk, test_flat, shape, int(np.max(cubes.width)) // 2)
    NZS = int(sub[2]) + ROW_PAD
    n_sub = int(sub[0] * sub[1]) * NZS
    rows = kernel_rows(cubes)
    ijk_sub = np.ascontiguousarray(draw_ijk - origin, dtype=np.int64)
    t = test_ijk - origin
    test_at = ((t[:, 0] * sub[1] + t[:, 1]) * NZS + t[:, 2]).astype(np.int64)
    obs = np.log1p(-np.asarray(observed_ale, dtype=np.float64))
    n_foci = int(exp_offsets[-1])
    local = threading.local()
    per_thread: list[np.ndarray] = []
    lock = threading.Lock()

    def work(b, lo, hi):
        ws = getattr(local, "ws", None)
        if ws is None:
            ws = local.ws = (np.zeros(n_sub), np.zeros(n_sub), np.zeros(test_flat.shape[0], dtype=np.int64))
            with lock:
                per_thread.append(ws[2])
        draws = batch_draws(seed, b, hi - lo, n_foci, draw_ijk.shape[0], cdf)
        _count_batch(draws, ijk_sub, test_at, obs, exp_offsets, cube_of_exp, rows["log1m_rows"], rows["row_start"],
                     cubes.width, sub, NZS, ws[0], ws[1], ws[2])
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
