"""The voxel-wise Monte Carlo null of SCALE / C-SALE (``alemap.inference.voxelwise``).

Counts per tested voxel of iterations whose null ALE reaches the observed ALE
must equal a plain NumPy recomputation of every iteration: the same seeded,
base-rate weighted draws (``batch_draws``), each experiment's ``log(1 - MA)`` as
the voxel-wise minimum of its foci's ``log1p(-k)``, added experiment by
experiment in order (so the bits, and thus every comparison, are the engine's),
for any number of threads, and on the array engine (the GPU's code, run here
with NumPy) for any block of iterations and step of kernel entries.
"""

from __future__ import annotations

import numpy as np
import pytest

from _simulate import box_grid, ellipsoid_grid
from alemap.inference.montecarlo import BATCH_SIZE, batch_draws
from alemap.inference.gpu_voxelwise import voxelwise_counts_array
from alemap.inference.voxelwise import voxelwise_counts
from alemap.kernels.gaussian import kernel_cubes


def _reference_log1m(ijk, offsets, cube_of_exp, cubes, shape):
    out = np.zeros(shape)
    for e in range(len(offsets) - 1):
        j = cube_of_exp[e]
        w = int(cubes.width[j])
        r = w // 2
        cube = cubes.log1m[cubes.start[j] : cubes.start[j] + w**3].reshape(w, w, w)
        comb = np.zeros(shape)
        for f in range(offsets[e], offsets[e + 1]):
            lo = ijk[f] - r
            src = tuple(slice(max(0, -lo[d]), w - max(0, lo[d] + w - shape[d])) for d in range(3))
            dst = tuple(slice(max(0, lo[d]), min(shape[d], lo[d] + w)) for d in range(3))
            comb[dst] = np.where(cube[src] < comb[dst], cube[src], comb[dst])
        out += comb
    return out


def _reference_counts(draw_ijk, cdf, test_flat, observed_ale, offsets, cube_of_exp, cubes, shape, n_iter, seed):
    obs = np.log1p(-observed_ale)
    counts = np.zeros(test_flat.shape[0], dtype=np.int64)
    for b, lo in enumerate(range(0, n_iter, BATCH_SIZE)):
        draws = batch_draws(seed, b, min(n_iter, lo + BATCH_SIZE) - lo, int(offsets[-1]), draw_ijk.shape[0], cdf)
        for row in draws:
            log1m = _reference_log1m(draw_ijk[row], offsets, cube_of_exp, cubes, shape).ravel()
            counts += log1m[test_flat] <= obs
    return counts


def _case(grid, region, n_subjects, counts, seed):
    """Draw region (weighted by a random base rate), tested voxels, observed ALE of a random placement."""
    rng = np.random.default_rng(seed)
    shape = grid.mask.shape
    flat = np.flatnonzero(region.ravel())
    draw_ijk = np.column_stack(np.unravel_index(flat, shape)).astype(np.int64)
    weights = rng.gamma(0.5, size=flat.size)
    weights[rng.random(flat.size) < 0.2] = 0.0  # voxels never drawn
    cdf = np.cumsum(weights / weights.sum())
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    cubes = kernel_cubes(n_subjects)
    coe = cubes.index(n_subjects)
    observed = draw_ijk[rng.integers(0, flat.size, offsets[-1])]
    obs_ale = -np.expm1(_reference_log1m(observed, offsets, coe, cubes, shape)).ravel()[flat]
    return dict(draw_ijk=draw_ijk, cdf=cdf, test_flat=flat, observed_ale=obs_ale, exp_offsets=offsets,
                cube_of_exp=coe, cubes=cubes, shape=shape)


@pytest.mark.parametrize("jobs, backend", [(1, "cpu"), (2, "cpu"), (1, "numpy")])
def test_counts_equal_a_plain_recomputation_in_a_subregion(jobs, backend):
    """A region in one corner of the grid (as the cerebellum): kernel boxes cut by the grid's
    faces, experiments of 1-9 foci with overlapping kernels, 8-100 subjects."""
    grid = ellipsoid_grid((29, 33, 27), (14, 16, 13))
    ii, jj, kk = np.indices(grid.mask.shape)
    region = grid.mask & (kk < 9) & (jj > 12)
    n_subjects = np.array([8, 12, 20, 35, 100, 15])
    counts = np.array([1, 3, 9, 2, 4, 6])
    case = _case(grid, region, n_subjects, counts, seed=3)
    n_iter = BATCH_SIZE + 7
    got = voxelwise_counts(**case, n_iterations=n_iter, seed=11, jobs=jobs, backend=backend)
    expected = _reference_counts(**{k: case[k] for k in ("draw_ijk", "cdf", "test_flat", "observed_ale", "cube_of_exp",
                                                         "cubes", "shape")},
                                 offsets=case["exp_offsets"], n_iter=n_iter, seed=11)
    assert np.array_equal(got, expected)
    # not vacuous: some voxels always reached, some in between
    assert np.any((got > 0) & (got < n_iter)) and np.any(got == n_iter)


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_counts_equal_a_plain_recomputation_whole_grid(backend):
    """The whole mask as region and tested voxels (SCALE), foci reaching every face of a box grid."""
    grid = box_grid((19, 22, 17))
    n_subjects = np.array([10, 25, 60, 9])
    counts = np.array([5, 2, 7, 3])
    case = _case(grid, grid.mask, n_subjects, counts, seed=8)
    n_iter = 2 * BATCH_SIZE + 3
    got = voxelwise_counts(**case, n_iterations=n_iter, seed=4, jobs=2, backend=backend)
    expected = _reference_counts(**{k: case[k] for k in ("draw_ijk", "cdf", "test_flat", "observed_ale", "cube_of_exp",
                                                         "cubes", "shape")},
                                 offsets=case["exp_offsets"], n_iter=n_iter, seed=4)
    assert np.array_equal(got, expected)
    assert np.any((got > 0) & (got < n_iter))


@pytest.mark.parametrize("block, max_entries", [(5, 700), (3 * BATCH_SIZE, 10**7), (1, 1)])
def test_array_engine_counts_do_not_depend_on_blocks_or_steps(block, max_entries):
    """Blocks that split batches (5 iterations), span them (three batches), or hold one iteration,
    and kernel entries added a focus-box at a time: the CPU engine's counts every time."""
    grid = ellipsoid_grid((23, 27, 21), (11, 13, 10))
    ii, jj, kk = np.indices(grid.mask.shape)
    region = grid.mask & (kk < 8)
    case = _case(grid, region, np.array([9, 30, 14, 70]), np.array([4, 1, 6, 3]), seed=21)
    n_iter = 2 * BATCH_SIZE + 9
    seen = []
    got = voxelwise_counts_array(**case, n_iterations=n_iter, seed=5, backend="numpy", block=block,
                                 max_entries=max_entries, progress=seen.append)
    expected = voxelwise_counts(**case, n_iterations=n_iter, seed=5, jobs=1)
    assert np.array_equal(got, expected)
    assert sum(seen) == n_iter
    assert np.any((got > 0) & (got < n_iter))
