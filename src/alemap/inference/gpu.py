"""Array engine for the Monte Carlo null: CuPy on a GPU, the same code on NumPy.

Every function here takes an array module ``xp`` and uses only operations that
NumPy and CuPy share (broadcasting, fancy-index gathers and scatters,
``bincount``, ``lexsort``, reductions) plus ``ndimage.label`` from
``scipy.ndimage`` / ``cupyx.scipy.ndimage``. No CuPy kernel is hand-written, so
with ``xp = numpy`` the very code path that runs on the GPU runs, and is
tested, on any machine (``tests/test_gpu_backend.py``, against
:mod:`alemap.inference.cpu` and a plain reference).

A block of iterations is computed at once (see :mod:`alemap.inference.cpu` for
one iteration):

1. ``log1m`` (iterations x grid, float64) accumulates ``log(1 - MA)`` experiment
   by experiment, in experiment order. For one experiment and all iterations of
   the block, every (iteration, focus, box voxel) entry of its kernel cube is
   built by broadcasting; entries outside the grid go to one spare slot at the
   end of the array, whose value is never read. The experiment's MA is the
   voxel-wise maximum of its kernels (Turkeltaub 2012), i.e. the minimum of
   ``log1p(-k)``: all entries are scattered into a second array ``comb``; where
   foci of the experiment overlap, several entries hit one voxel and one of them
   wins; entries smaller than the value that won are scattered again until none
   is (one round per overlap depth, usually one or two; a focus whose box
   overlaps no other focus of its experiment is final after the first scatter).
   ``comb`` is then added into ``log1m`` (each voxel once: duplicate entries
   all write the same sum) and cleared. Because each voxel receives its
   experiments' terms in experiment order, ``log1m`` is bit for bit the CPU
   engine's, so the supra-threshold voxels (``log1m < log_cut``) and therefore
   cluster sizes are identical, and the maximum ALE (``-expm1`` of the minimum,
   taken on the host with the C library's ``expm1``, which the CPU engine's
   compiled code calls; NumPy's vectorised one can differ in the last bit) too.
2. The in-mask minimum of each iteration gives its maximum ALE; supra-threshold
   in-mask voxels are labelled with a 4-D structuring element whose outer
   planes are empty, so clusters never join across iterations.
3. Sizes are label counts and masses label sums of ``-expm1(x) - cut_ale``
   (``bincount``); each iteration's largest is found by sorting labels by
   (iteration, value). Masses equal the CPU engine's up to the order of the
   float sum (on a GPU, ``bincount`` adds with atomics, so the last bits of a
   mass may also differ between two GPU runs).

Memory: a block holds ``log1m`` and ``comb`` (8 + 8 bytes per grid voxel and
iteration), the supra-threshold mask and labels (1 + 4), the in-mask values and
mask (9 per mask voxel), and per supra-threshold voxel about 36 bytes (index,
label, iteration, value), counted for every mask voxel as the worst case,
and the draw and voxel coordinates of every focus (32): :data:`GRID_BYTES`,
:data:`MASK_BYTES` and :data:`FOCUS_BYTES`. Per experiment the entries cost
about :data:`ENTRY_BYTES` each with their temporaries. On a GPU the block takes
:data:`GRID_SHARE` and the entries :data:`ENTRY_SHARE` of the free device memory,
in whole batches of :data:`~alemap.inference.montecarlo.BATCH_SIZE`
iterations, so the seed contract (per-batch draws, generated on the host by
:func:`~alemap.inference.montecarlo.batch_draws` exactly as for the CPU) holds.
The window path (:data:`WINDOWS`, :mod:`alemap.inference.gpu_windows`) adds
its bound planes, per-voxel arrays and an estimated number of (window, focus)
pairs per iteration (:func:`alemap.inference.gpu_windows.bytes_per_iteration`);
running out of memory halves the block, as above.
``cupyx.scipy.ndimage.label`` indexes voxels with 32-bit integers, so a block
also stays below 2**31 voxels (2,379 iterations of the 2 mm MNI grid). With
NumPy the blocks are small and fixed (:data:`NUMPY_BLOCK`, :data:`NUMPY_MAX_ENTRIES`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from alemap.inference.backends import to_host
from alemap.inference.gpu_windows import WindowDevice, window_log1m
from alemap.inference.gpu_windows import bytes_per_iteration as _window_bytes
from alemap.inference.plan import MonteCarloPlan

__all__ = [
    "DevicePlan", "array_module", "device_cubes", "accumulate_log1m", "log1m_block", "block_maxima",
    "run_iterations", "run_batches_xp",
    "iterations_per_call", "bytes_per_iteration", "WINDOWS", "run_null_array", "GRID_BYTES", "MASK_BYTES",
    "FOCUS_BYTES", "ENTRY_BYTES",
    "GRID_SHARE", "ENTRY_SHARE", "NUMPY_BLOCK", "NUMPY_MAX_ENTRIES",
]

#: Bytes per grid voxel and iteration of a block: log1m, comb (float64), supra mask (bool), labels (int32).
GRID_BYTES = 8 + 8 + 1 + 4
#: Bytes per mask voxel and iteration: in-mask log1m and its supra mask (9), and for supra voxels their
#: flat index, label, iteration and value (36; counted for all mask voxels, the worst case).
MASK_BYTES = 9 + 36
#: Bytes per focus and iteration: its draw (int64) and voxel coordinates (3 x int64).
FOCUS_BYTES = 8 + 24
#: Bytes per kernel entry (iteration x focus x box voxel) with its temporaries (index, value, gathers, masks).
ENTRY_BYTES = 72
#: Share of free device memory for a block's grid arrays, and for one experiment's entries.
GRID_SHARE = 0.5
ENTRY_SHARE = 0.2
#: With NumPy (tests, no GPU): iterations per block and entries per step, to keep host memory modest
#: (8 iterations of the MNI grid: about 0.2 GB; 2**22 entries: about 0.3 GB).
NUMPY_BLOCK = 8
NUMPY_MAX_ENTRIES = 2**22
#: Dense nulls by the window path (:mod:`alemap.inference.gpu_windows`: separable bound, exact
#: values on candidate windows) where the plan's tables allow it; False computes every iteration
#: on the whole grid. Both give the same maxima (tested on NumPy); which is faster on a GPU is
#: not measured yet (issue 5).
WINDOWS = True
#: ``cupyx.scipy.ndimage.label`` numbers voxels with int32.
MAX_LABEL_VOXELS = 2**31 - 2


def array_module(backend: str) -> tuple[Any, Callable]:
    """(xp, ndimage.label) of ``"gpu"`` (CuPy; needs a device) or ``"numpy"`` (the same path on the host)."""
    if backend == "numpy":
        from scipy.ndimage import label

        return np, label
    if backend == "gpu":
        from alemap.inference.backends import import_cupy

        cupy = import_cupy()
        from cupyx.scipy.ndimage import label

        return cupy, label
    raise ValueError(f"array backends are 'gpu' and 'numpy', not {backend!r}")


@dataclass(frozen=True)
class DevicePlan:
    """A :class:`MonteCarloPlan` with the arrays an iteration reads moved to ``xp``."""

    plan: MonteCarloPlan
    xp: Any
    label: Callable
    mask_ijk: Any
    mask_flat: Any
    cubes: tuple  # per kernel cube: (w, w, w) log1p(-k) on the device
    ranges: tuple  # per kernel cube: arange(-r, r + 1) on the device
    structure: np.ndarray  # 4-D: the plan's neighbourhood inside one iteration, nothing across
    windows: Any = None  # the window path's tables (gpu_windows.WindowDevice), or None: whole grid only

    @classmethod
    def build(cls, plan: MonteCarloPlan, xp, label: Callable, windows: bool | None = None) -> "DevicePlan":
        """Copy the plan's invariants to the device once per run (the window path's tables too
        if ``windows``, default :data:`WINDOWS`, and the plan's tables can bound its kernels)."""
        cubes, ranges = device_cubes(xp, plan.log1m_k, plan.start, plan.width)
        structure = np.zeros((3, 3, 3, 3), dtype=bool)
        structure[1, 1, 1, 1] = True
        for off in plan.nbr:
            structure[(1, *(off + 1))] = True
        wd = None
        if (WINDOWS if windows is None else windows) and plan.window.usable:
            wd = WindowDevice.build(plan, xp)
        return cls(plan, xp, label, xp.asarray(plan.mask_ijk), xp.asarray(plan.mask_flat), cubes, ranges,
                   structure, wd)


def device_cubes(xp, log1m_k: np.ndarray, start: np.ndarray, width: np.ndarray) -> tuple[tuple, tuple]:
    """Per kernel cube: its (w, w, w) ``log1p(-k)`` and ``arange(-r, r + 1)`` on the device."""
    cubes, ranges = [], []
    for s0, w in zip(np.asarray(start).tolist(), np.asarray(width).tolist()):
        cubes.append(xp.asarray(log1m_k[s0 : s0 + w**3].reshape(w, w, w)))
        ranges.append(xp.arange(-(w // 2), w // 2 + 1, dtype=xp.int64))
    return tuple(cubes), tuple(ranges)


def _box_index(xp, ijk, ar, shape, first: int, n_grid: int, spare: int):
    """Flat (iteration, voxel) index of every box voxel of foci ``ijk`` (m, n, 3); off-grid -> ``spare``."""
    nx, ny, nz = shape
    ia, ib, ic = (ijk[..., d : d + 1] + ar for d in range(3))  # (m, n, w) each
    ok = (((ia >= 0) & (ia < nx))[..., :, None, None] & ((ib >= 0) & (ib < ny))[..., None, :, None]
          & ((ic >= 0) & (ic < nz))[..., None, None, :])
    lin = (ia * ny)[..., :, None, None] + ib[..., None, :, None]
    lin = lin * nz + ic[..., None, None, :]
    lin += (xp.arange(first, first + ijk.shape[0], dtype=xp.int64) * n_grid)[:, None, None, None, None]
    return xp.where(ok, lin, spare)


def _entry_values(xp, idx, cube, spare: int):
    """log1p(-k) of every entry of ``idx`` (..., w, w, w); 0 (no effect) for off-grid entries."""
    return xp.where(idx.reshape(-1, cube.size) != spare, cube.reshape(1, -1), 0.0).reshape(-1)


def _add_experiment(xp, log1m, comb, idx, cube) -> None:
    """Add one experiment's per-voxel minimum of log1p(-k) (entries ``idx``) into ``log1m``."""
    spare = log1m.shape[0] - 1
    vals = _entry_values(xp, idx, cube, spare)
    idx = idx.reshape(-1)
    comb[idx] = vals
    while True:  # where boxes overlap one entry won; rescatter the smaller ones until none is left
        better = vals < comb[idx]
        if not bool(better.any()):
            break
        comb[idx[better]] = vals[better]
    log1m[idx] = log1m[idx] + comb[idx]  # duplicate entries write the same value
    comb[idx] = 0.0


def accumulate_log1m(xp, ijk, log1m, comb, shape, exp_offsets, cube_of_exp, cubes, ranges,
                     max_entries: int) -> None:
    """Add log(1 - ALE) of every iteration of ``ijk`` ((m, n_foci, 3) voxels of a grid of
    ``shape``) into ``log1m`` (m grids and a spare slot; ``comb`` alike and all 0), experiment by
    experiment in order; experiment ``e`` holds foci ``exp_offsets[e]:exp_offsets[e + 1]`` and
    uses kernel ``cubes[cube_of_exp[e]]`` (:func:`device_cubes`)."""
    shape = tuple(int(s) for s in shape)
    n_grid = int(np.prod(shape))
    spare = log1m.shape[0] - 1
    m = ijk.shape[0]
    offsets = np.asarray(exp_offsets).tolist()
    for e, j in enumerate(np.asarray(cube_of_exp).tolist()):
        a, b = offsets[e], offsets[e + 1]
        cube, ar = cubes[j], ranges[j]
        step = max(1, max_entries // ((b - a) * cube.size))
        for t0 in range(0, m, step):
            t1 = min(m, t0 + step)
            idx = _box_index(xp, ijk[t0:t1, a:b], ar, shape, t0, n_grid, spare)
            if b - a == 1:  # one focus: nothing to combine
                flat = idx.reshape(-1)
                log1m[flat] = log1m[flat] + _entry_values(xp, idx, cube, spare)
            else:
                _add_experiment(xp, log1m, comb, idx, cube)


def _accumulate(dp: DevicePlan, ijk, log1m, comb, max_entries: int) -> None:
    """log(1 - ALE) of every iteration of the block (``ijk``: (m, n_foci, 3)) into ``log1m``."""
    plan = dp.plan
    accumulate_log1m(dp.xp, ijk, log1m, comb, plan.shape, plan.exp_offsets, plan.cube_of_exp, dp.cubes,
                     dp.ranges, max_entries)


def _segment_max(xp, segment, value, n_segments: int):
    """Largest ``value`` per ``segment`` (0 where a segment has none)."""
    order = xp.lexsort(xp.stack([value.astype(xp.float64), segment.astype(xp.float64)]))
    seg, val = segment[order], value[order]
    last = xp.ones(seg.shape[0], dtype=bool)
    last[:-1] = seg[1:] != seg[:-1]
    out = xp.zeros(n_segments, dtype=value.dtype)
    out[seg[last]] = val[last]
    return out


def log1m_block(draws: np.ndarray, dp: DevicePlan, max_entries: int):
    """log(1 - ALE) of the iterations ``draws`` (m, n_foci): a flat ``xp`` array of m grids, plus the spare slot."""
    xp, plan = dp.xp, dp.plan
    m = draws.shape[0]
    ijk = dp.mask_ijk[xp.asarray(draws)]  # (m, n_foci, 3)
    log1m = xp.zeros(m * plan.n_grid + 1)  # + 1: the spare slot for off-grid box voxels
    comb = xp.zeros_like(log1m)
    _accumulate(dp, ijk, log1m, comb, max_entries)
    return log1m


def _ale_from_log1m(x: np.ndarray) -> np.ndarray:
    """``-expm1(x)`` with the C library's ``expm1``, as the CPU engine's compiled code calls it:
    NumPy's vectorised ``np.expm1`` can differ from it in the last bit (AVX-512 machines)."""
    return np.array([-math.expm1(v) for v in x.tolist()], dtype=np.float64)


def block_maxima(dp: DevicePlan, log1m, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(max ALE, max cluster size, max cluster mass) of each of the ``m`` iterations in ``log1m`` (host arrays)."""
    xp, plan = dp.xp, dp.plan
    n_grid = plan.n_grid
    grid = log1m[: m * n_grid].reshape(m, n_grid)
    inside = grid[:, dp.mask_flat]
    ale = _ale_from_log1m(to_host(inside.min(axis=1)))
    supra = xp.zeros((m, n_grid), dtype=bool)
    supra[:, dp.mask_flat] = inside < plan.log_cut
    del inside
    labels, n = dp.label(supra.reshape((m, *(int(s) for s in plan.shape))), dp.structure)
    del supra
    n = int(n)
    if n == 0:
        return ale, np.zeros(m, dtype=np.int64), np.zeros(m)
    labels = labels.reshape(-1)
    sel = xp.flatnonzero(labels)
    lab = labels[sel]
    del labels
    values = -xp.expm1(grid.reshape(-1)[sel]) - plan.cut_ale
    size = xp.bincount(lab, minlength=n + 1)[1:]
    mass = xp.bincount(lab, weights=values, minlength=n + 1)[1:]
    iteration = xp.zeros(n + 1, dtype=xp.int64)
    iteration[lab] = sel // n_grid  # every voxel of a label is in the same iteration
    iteration = iteration[1:]
    size = to_host(_segment_max(xp, iteration, size, m)).astype(np.int64)
    mass = to_host(_segment_max(xp, iteration, mass, m))
    return ale, size, np.maximum(mass, 0.0)  # the CPU engine's running maximum starts at 0


def _window_block(draws: np.ndarray, dp: DevicePlan, max_entries: int):
    """Maxima of the iterations ``draws`` by the window path; iterations with too many
    candidates or no voxel above the threshold are recomputed on the whole grid."""
    ijk = dp.mask_ijk[dp.xp.asarray(draws)]
    log1m, dense = window_log1m(dp, dp.windows, ijk, max_entries)
    del ijk
    ale, size, mass = block_maxima(dp, log1m, draws.shape[0])
    del log1m
    redo = np.flatnonzero(dense | (size == 0))
    if redo.size:
        log1m = log1m_block(draws[redo], dp, max_entries)
        ale[redo], size[redo], mass[redo] = block_maxima(dp, log1m, redo.size)
    return ale, size, mass


def run_iterations(draws: np.ndarray, dp: DevicePlan, block: int, max_entries: int):
    """Maxima (ale, size, mass; host arrays) of the iterations ``draws`` (n_iter, n_foci), ``block`` at a time
    (by the window path where ``dp.windows`` is set, else on the whole grid)."""
    n_iter = draws.shape[0]
    ale, size, mass = np.zeros(n_iter), np.zeros(n_iter, dtype=np.int64), np.zeros(n_iter)
    block = max(1, min(int(block), MAX_LABEL_VOXELS // dp.plan.n_grid))
    for lo in range(0, n_iter, block):
        hi = min(n_iter, lo + block)
        if dp.windows is not None:
            ale[lo:hi], size[lo:hi], mass[lo:hi] = _window_block(draws[lo:hi], dp, max_entries)
            continue
        log1m = log1m_block(draws[lo:hi], dp, max_entries)
        ale[lo:hi], size[lo:hi], mass[lo:hi] = block_maxima(dp, log1m, hi - lo)
        del log1m
    return ale, size, mass


def run_batches_xp(draws: np.ndarray, plan: MonteCarloPlan, xp, ndimage_label: Callable,
                   block: int | None = None, max_entries: int | None = None, windows: bool | None = None):
    """Per-iteration maxima (ale, size, mass) of ``draws`` with array module ``xp``.

    ``draws`` (n_iter, n_foci) holds in-mask voxel numbers, as for
    :func:`alemap.inference.cpu.run_batch`. ``block`` and ``max_entries``
    default to the memory-based choices of :func:`iterations_per_call`;
    ``windows`` (default :data:`WINDOWS`) chooses the window path.
    """
    dp = DevicePlan.build(plan, xp, ndimage_label, windows)
    if block is None or max_entries is None:
        b, e = _budget(plan, xp, dp.windows is not None)
        block = b if block is None else block
        max_entries = e if max_entries is None else max_entries
    return run_iterations(np.asarray(draws, dtype=np.int64), dp, block, max_entries)


def _free_bytes(xp) -> int:
    """Free device memory, counting blocks CuPy's pool holds but does not use."""
    free, _total = xp.cuda.Device().mem_info
    return int(free) + int(xp.get_default_memory_pool().free_bytes())


def bytes_per_iteration(plan: MonteCarloPlan, windows: bool = False) -> int:
    """Device bytes of one iteration of a block (with the window path's grids and pairs if ``windows``)."""
    n = GRID_BYTES * plan.n_grid + MASK_BYTES * plan.n_mask + FOCUS_BYTES * plan.n_foci
    if windows:
        n += _window_bytes(plan)
    return n


def _budget(plan: MonteCarloPlan, xp, windows: bool = False) -> tuple[int, int]:
    """(iterations per block, entries per step) for ``xp``: fixed on NumPy, from free memory on a GPU
    (with the window path's grids and pairs if ``windows``)."""
    if xp is np:
        return NUMPY_BLOCK, NUMPY_MAX_ENTRIES
    free = _free_bytes(xp)
    block = min(int(GRID_SHARE * free) // bytes_per_iteration(plan, windows), MAX_LABEL_VOXELS // plan.n_grid)
    return max(1, block), max(1, int(ENTRY_SHARE * free) // ENTRY_BYTES)


def iterations_per_call(plan: MonteCarloPlan, xp, windows: bool = False) -> int:
    """Iterations per device call: whole batches (at least one) that fit the memory budget."""
    from alemap.inference.montecarlo import BATCH_SIZE

    block, _ = _budget(plan, xp, windows)
    if xp is np:
        return BATCH_SIZE
    return max(1, block // BATCH_SIZE) * BATCH_SIZE


def run_null_array(plan: MonteCarloPlan, seed: int, todo, ale, size, mass, finished: Callable, backend: str) -> None:
    """Run the batches ``todo`` ((b, lo, hi) tuples) on the array backend, filling ``ale``, ``size``, ``mass``.

    Draws come from :func:`~alemap.inference.montecarlo.batch_draws`, batch by
    batch, exactly as on the CPU; ``finished(b, lo, hi)`` is called for each
    batch, in order, once its maxima are stored. If the device runs out of
    memory, the number of batches per call is halved and the call repeated;
    at one batch per call, the iterations per block are halved.
    """
    from alemap.inference.montecarlo import BATCH_SIZE, batch_draws

    xp, label = array_module(backend)
    dp = DevicePlan.build(plan, xp, label)
    per_call = iterations_per_call(plan, xp, dp.windows is not None) // BATCH_SIZE
    limit = None  # iterations per block, once one batch per call ran out of memory
    i = 0
    while i < len(todo):
        group = todo[i : i + per_call]
        draws = np.vstack([batch_draws(seed, b, hi - lo, plan.n_foci, plan.n_mask) for b, lo, hi in group])
        block, max_entries = _budget(plan, xp, dp.windows is not None)
        block = min(block, draws.shape[0], limit or block)
        try:
            out = run_iterations(draws, dp, block, max_entries)
        except MemoryError:  # cupy.cuda.memory.OutOfMemoryError is a MemoryError
            if xp is np or (per_call == 1 and block == 1):
                raise
            xp.get_default_memory_pool().free_all_blocks()
            if per_call > 1:
                per_call //= 2
            else:
                limit = block // 2
            continue
        pos = 0
        for b, lo, hi in group:
            n = hi - lo
            ale[lo:hi], size[lo:hi], mass[lo:hi] = (o[pos : pos + n] for o in out)
            pos += n
            finished(b, lo, hi)
        i += len(group)
