"""Voxel-wise Monte Carlo null (SCALE / C-SALE) on the array engine: CuPy on a GPU, NumPy for tests.

The array counterpart of :mod:`alemap.inference.voxelwise`, with the same
contract: per tested voxel, the number of iterations whose null ALE is at least
the observed ALE there, for the base-rate weighted draws of
:func:`~alemap.inference.montecarlo.batch_draws` (the CPU's draws, batch by
batch, from the same seed).

A block of iterations is computed at once on the box of the grid that holds
the relocation region and the tested voxels (``voxelwise._crop``): the foci's
``log(1 - MA)`` terms are added experiment by experiment in order by
:func:`alemap.inference.gpu.accumulate_log1m`, the whole-grid path of the FWE
null (the plain accumulation's bits, as on the CPU), then the block's values at
the tested voxels are compared with the observed ``log(1 - ALE)`` and the
comparisons summed per voxel. Counts are integers, so they equal the CPU
engine's exactly (tested on NumPy: ``tests/test_voxelwise.py``).

Memory per iteration of a block: ``log1m`` and ``comb`` over the box (8 + 8
bytes per voxel), the gathered values and comparisons at the tested voxels
(8 + 1), the foci's draws and coordinates (32); the block takes
:data:`~alemap.inference.gpu.GRID_SHARE` of the free device memory and one
experiment's kernel entries :data:`~alemap.inference.gpu.ENTRY_SHARE`;
running out of memory halves the block. Not yet timed on a GPU (issue 5).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from alemap.inference.backends import to_host
from alemap.inference.gpu import (
    ENTRY_BYTES, ENTRY_SHARE, FOCUS_BYTES, GRID_SHARE, NUMPY_BLOCK, NUMPY_MAX_ENTRIES, _free_bytes,
    accumulate_log1m, array_module, device_cubes,
)
from alemap.inference.montecarlo import BATCH_SIZE, batch_draws
from alemap.inference.voxelwise import _crop

__all__ = ["voxelwise_counts_array", "bytes_per_iteration", "BOX_BYTES", "TEST_BYTES"]

#: Bytes per box voxel and iteration: log1m and comb (float64).
BOX_BYTES = 8 + 8
#: Bytes per tested voxel and iteration: its gathered value (float64) and comparison (bool).
TEST_BYTES = 8 + 1


def bytes_per_iteration(n_box: int, n_test: int, n_foci: int) -> int:
    """Device bytes of one iteration of a block."""
    return BOX_BYTES * n_box + TEST_BYTES * n_test + FOCUS_BYTES * n_foci


def _budget(xp, n_box: int, n_test: int, n_foci: int) -> tuple[int, int]:
    """(iterations per block, kernel entries per step): fixed on NumPy, from free memory on a GPU."""
    if xp is np:
        return NUMPY_BLOCK, NUMPY_MAX_ENTRIES
    free = _free_bytes(xp)
    return (max(1, int(GRID_SHARE * free) // bytes_per_iteration(n_box, n_test, n_foci)),
            max(1, int(ENTRY_SHARE * free) // ENTRY_BYTES))


def _count_block(xp, ijk, sub, exp_offsets, cube_of_exp, cubes, ranges, test_sub, obs, counts,
                 max_entries: int) -> None:
    """Add to ``counts`` the iterations of ``ijk`` (m, n_foci, 3; box voxels) whose
    ``log(1 - ALE)`` at ``test_sub`` is at most ``obs`` (null ALE >= observed ALE)."""
    m = ijk.shape[0]
    n_box = int(np.prod(sub))
    log1m = xp.zeros(m * n_box + 1)  # + 1: the spare slot for box voxels outside the grid
    comb = xp.zeros_like(log1m)
    accumulate_log1m(xp, ijk, log1m, comb, sub, exp_offsets, cube_of_exp, cubes, ranges, max_entries)
    del comb
    values = log1m[: m * n_box].reshape(m, n_box)[:, test_sub]
    del log1m
    counts += (values <= obs[None, :]).sum(axis=0)


def voxelwise_counts_array(
    *, draw_ijk: np.ndarray, cdf: np.ndarray, test_flat: np.ndarray, observed_ale: np.ndarray,
    exp_offsets: np.ndarray, cube_of_exp: np.ndarray, cubes, shape, n_iterations: int, seed: int,
    backend: str = "gpu", progress: Callable[[int], None] | None = None, block: int | None = None,
    max_entries: int | None = None,
) -> np.ndarray:
    """Counts, per tested voxel, of iterations with null ALE >= observed ALE, on ``backend``
    (``"gpu"`` or ``"numpy"``); the arguments as for
    :func:`alemap.inference.voxelwise.voxelwise_counts`. ``block`` (iterations per block) and
    ``max_entries`` (kernel entries per step) default to the memory-based choices."""
    xp, _ = array_module(backend)
    shape = np.asarray(shape, dtype=np.int64)
    origin, sub, test_ijk = _crop(draw_ijk, test_flat, shape, int(np.max(cubes.width)) // 2)
    t = test_ijk - origin
    test_sub = xp.asarray((t[:, 0] * sub[1] + t[:, 1]) * sub[2] + t[:, 2])
    obs = xp.asarray(np.log1p(-np.asarray(observed_ale, dtype=np.float64)))
    ijk_box = xp.asarray(np.ascontiguousarray(draw_ijk - origin, dtype=np.int64))
    dcubes, ranges = device_cubes(xp, cubes.log1m, cubes.start, cubes.width)
    n_foci, n_box, n_test = int(exp_offsets[-1]), int(np.prod(sub)), int(test_flat.shape[0])
    counts = xp.zeros(n_test, dtype=xp.int64)
    batches = [(b, lo, min(n_iterations, lo + BATCH_SIZE)) for b, lo in enumerate(range(0, n_iterations, BATCH_SIZE))]
    limit = None  # iterations per block after running out of memory
    i = 0
    while i < len(batches):
        size, entries = _budget(xp, n_box, n_test, n_foci)
        size = min(size if block is None else block, limit or size)
        entries = entries if max_entries is None else max_entries
        group = batches[i : i + max(1, size // BATCH_SIZE)]  # whole batches per call, as for the FWE null
        draws = np.vstack([batch_draws(seed, b, hi - lo, n_foci, draw_ijk.shape[0], cdf) for b, lo, hi in group])
        before = counts.copy()
        try:
            for s0 in range(0, draws.shape[0], size):
                part = xp.asarray(draws[s0 : s0 + size])
                _count_block(xp, ijk_box[part], sub, exp_offsets, cube_of_exp, dcubes, ranges, test_sub, obs,
                             counts, entries)
        except MemoryError:  # cupy.cuda.memory.OutOfMemoryError is a MemoryError
            if xp is np or size == 1:
                raise
            counts = before
            xp.get_default_memory_pool().free_all_blocks()
            limit = max(1, size // 2)
            continue
        i += len(group)
        if progress:
            progress(int(draws.shape[0]))
    return to_host(counts).astype(np.int64)
