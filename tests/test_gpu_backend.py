"""The GPU backend (``alemap.inference.gpu``) and backend selection.

The GPU engine is written against an array module ``xp``; with ``xp = numpy``
the same code path runs here, without a GPU, and must equal

1. the compiled CPU engine (``alemap.inference.cpu.run_batch``) on the same
   relocated foci: maximum ALE and cluster sizes bit for bit (the engine adds
   ``log(1 - MA)`` in experiment order, like the CPU engine), cluster masses up
   to float rounding (``MASS_RTOL``);
2. the plain reference of ``tests/test_properties.py`` (``reference_ale``,
   ``reference_maxima``): the whole ALE map, and the maxima;
3. ``run_null`` on the CPU for the same seed, resumed or not.

Tests marked ``gpu`` run the CuPy engine and need CuPy and a CUDA device. They
are skipped without one ("no CUDA GPU / CuPy not installed"), unless
``ALEMAP_REQUIRE_GPU=1``, which turns the skip into a failure so a GPU job
cannot pass by skipping (PyMARE's ``PYMARE_REQUIRE_CMDSTAN``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from _simulate import ellipsoid_grid, null_experiments, sphere_grid
from alemap import ALE
from alemap.cli.main import main
from alemap.exceptions import BackendUnavailableError, ParameterError
from alemap.inference import cpu, gpu
from alemap.inference.gpu_windows import WindowDevice
from alemap.inference.backends import INSTALL_HINT, resolve_backend
from alemap.inference.montecarlo import BATCH_SIZE, NullMaxima, batch_draws, run_null
from alemap.inference.plan import make_plan
from alemap.kernels.gaussian import kernel_cubes
from alemap.space.grid import load_mni152_2mm
from test_properties import _extra_draws, reference_ale, reference_maxima

#: Cluster masses are float sums over a cluster's voxels in another order than the CPU
#: engine's flood fill: they agree to a few ulps (measured: <= 1.3e-15 relative).
MASS_RTOL = 1e-12
#: The plain reference builds ALE as 1 - prod(1 - MA), not via log1p: agreement to rounding.
REFERENCE_ATOL = 1e-12

REQUIRE_GPU = os.environ.get("ALEMAP_REQUIRE_GPU") == "1"


def _cpu_engine(draws, plan):
    n = draws.shape[0]
    out = np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n)
    cpu.run_batch(draws, plan, cpu.Workspace(plan.n_grid, plan.n_blocks), *out)
    return out


def _setup(mask, n_subjects, counts):
    exp_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    cubes = kernel_cubes(n_subjects)
    return exp_offsets, cubes, cubes.index(n_subjects)


def _compare(mask, n_subjects, counts, cuts, connectivities, n_random, seed, reference_all=True):
    """Array path == CPU engine for every cut and connectivity, == reference too (for the first
    connectivity only unless ``reference_all``); returns the draws and the sizes seen."""
    rng = np.random.default_rng(seed)
    exp_offsets, cubes, coe = _setup(mask, n_subjects, counts)
    first = make_plan(mask, exp_offsets, coe, cubes, cuts[0], connectivities[0])
    draws = np.vstack([batch_draws(seed, 0, n_random, first.n_foci, first.n_mask), _extra_draws(first, counts, rng)])
    # the log(1 - ALE) maps do not depend on the cut or the neighbourhood: computed once
    log1m = gpu.log1m_block(draws, gpu.DevicePlan.build(first, np, ndimage.label), gpu.NUMPY_MAX_ENTRIES)
    maps = -np.expm1(log1m[:-1].reshape(draws.shape[0], *mask.shape))
    ales = [reference_ale(first.mask_ijk[row], exp_offsets, n_subjects, mask.shape) for row in draws]
    np.testing.assert_allclose(maps, np.array(ales), rtol=0, atol=REFERENCE_ATOL)
    seen = {}
    for cut in cuts:
        for conn in connectivities:
            plan = make_plan(mask, exp_offsets, coe, cubes, cut, conn)
            ale, size, mass = gpu.block_maxima(gpu.DevicePlan.build(plan, np, ndimage.label), log1m, draws.shape[0])
            c_ale, c_size, c_mass = _cpu_engine(draws, plan)
            assert np.array_equal(ale, c_ale)
            assert np.array_equal(size, c_size)
            np.testing.assert_allclose(mass, c_mass, rtol=MASS_RTOL, atol=0)
            seen[cut, conn] = size
            if not (reference_all or conn == connectivities[0]):
                continue
            ref = np.array([reference_maxima(a, mask, cut, conn) for a in ales])
            np.testing.assert_allclose(ale, ref[:, 0], rtol=0, atol=REFERENCE_ATOL)
            assert np.array_equal(size, ref[:, 1].astype(np.int64))
            np.testing.assert_allclose(mass, ref[:, 2], rtol=1e-9, atol=1e-12)
    return draws, seen


# --------------------------------------------------------------------------------------
# 1-2. The array path (xp = numpy) == CPU engine == plain reference
# --------------------------------------------------------------------------------------


def test_array_path_small_grid_all_connectivities():
    """Odd-shaped grid whose mask touches grid faces; experiments of 1 to 8 foci (overlapping
    kernels), all foci on one voxel, foci on the mask's extreme voxels (kernel boxes cut by
    the grid), duplicated foci; a low, a typical and an unreachable cut; 6/18/26 neighbours."""
    grid = ellipsoid_grid((27, 31, 25), (16, 14, 15))
    mask = grid.mask
    assert mask[0].any() and mask[-1].any() and mask[:, :, 0].any()
    n_subjects = np.array([8, 12, 20, 35, 60, 15, 15, 100])
    counts = np.array([1, 2, 5, 8, 3, 6, 1, 4])
    _, seen = _compare(mask, n_subjects, counts, (0.008, 0.014, 0.9), (6, 18, 26), 9, seed=5)
    # not vacuous: clusters exist, some iterations have none, and the neighbourhood matters
    assert np.all(seen[0.008, 6] > 0) and np.all(seen[0.9, 6] == 0)
    assert np.any(seen[0.014, 6] == 0) and np.any(seen[0.014, 6] > 0)
    assert np.any(seen[0.008, 26] > seen[0.008, 6])


def test_max_ale_uses_the_cpu_engines_expm1():
    """The array engine turns each iteration's minimum log(1 - ALE) into its maximum ALE with the
    C library's expm1, which the CPU engine's compiled code calls: NumPy's vectorised expm1
    differs from it in the last bit for some inputs on AVX-512 machines (-0.0267779546111245 here:
    found by a batch on the fake GPU whose maximum ALE differed from the CPU's by one ulp)."""
    import numba

    compiled = numba.njit(lambda x: -np.expm1(x))
    rng = np.random.default_rng(4)
    x = np.concatenate([[-0.026777954611124546, 0.0, -1e-300], -rng.exponential(0.02, 2000)])
    got = gpu._ale_from_log1m(x)
    assert got.dtype == np.float64 and np.array_equal(got, np.array([compiled(v) for v in x]))


class _AnyWinner(np.ndarray):
    """An array whose assignment through an integer index array with repeated indices lets an
    arbitrary one of them win, as on a GPU (NumPy keeps the last; CuPy promises nothing)."""

    rng = np.random.default_rng(0)

    def __setitem__(self, key, value):
        if isinstance(key, np.ndarray) and key.dtype.kind in "iu" and np.ndim(value) == 1:
            order = self.rng.permutation(key.shape[0])
            key, value = key[order], np.asarray(value)[order]
        super().__setitem__(key, value)


def test_array_path_does_not_depend_on_which_repeated_index_wins():
    """Overlapping kernel boxes of one experiment scatter several values to one voxel; whichever
    wins, the re-scatter rounds leave the minimum: the CPU engine's log(1 - ALE), bit for bit."""
    grid = ellipsoid_grid((19, 21, 17), (9, 10, 8))
    n_subjects = np.array([10, 30, 12])
    counts = np.array([6, 9, 4])
    exp_offsets, cubes, coe = _setup(grid.mask, n_subjects, counts)
    plan = make_plan(grid.mask, exp_offsets, coe, cubes, 0.01, 26)
    draws = batch_draws(2, 0, 6, plan.n_foci, plan.n_mask)
    dp = gpu.DevicePlan.build(plan, np, ndimage.label, windows=False)
    expected = gpu.log1m_block(draws, dp, gpu.NUMPY_MAX_ENTRIES)
    for _ in range(3):  # three shuffles
        log1m = np.zeros_like(expected).view(_AnyWinner)
        comb = np.zeros_like(expected).view(_AnyWinner)
        gpu._accumulate(dp, dp.mask_ijk[draws], log1m, comb, gpu.NUMPY_MAX_ENTRIES)
        assert np.array_equal(np.asarray(log1m)[:-1], expected[:-1])
    # and the plain (NumPy: last wins) result is the CPU engine's (without the re-scatter rounds,
    # this test fails: checked when it was written)
    ale, size, _ = gpu.block_maxima(dp, expected, draws.shape[0])
    c_ale, c_size, _ = _cpu_engine(draws, plan)
    assert np.array_equal(ale, c_ale) and np.array_equal(size, c_size)


def test_array_path_mni_grid():
    """The real MNI152 2 mm mask (902,629-voxel grid), a few iterations."""
    mask = load_mni152_2mm().mask
    n_subjects = np.array([9, 14, 22, 30, 70, 16, 11])
    counts = np.array([1, 6, 10, 2, 4, 12, 5])
    _, seen = _compare(mask, n_subjects, counts, (0.006,), (6, 26), 2, seed=21, reference_all=False)
    assert seen[0.006, 6].max() > 0


def test_blocking_and_entry_limits_do_not_change_results():
    """Small blocks and a tiny entry budget (one iteration per step) give the same maxima."""
    grid = ellipsoid_grid((21, 23, 19), (11, 12, 10))
    n_subjects = np.array([10, 25, 14])
    counts = np.array([7, 3, 5])
    exp_offsets, cubes, coe = _setup(grid.mask, n_subjects, counts)
    plan = make_plan(grid.mask, exp_offsets, coe, cubes, 0.01, 18)
    draws = batch_draws(5, 2, 11, plan.n_foci, plan.n_mask)
    expected = _cpu_engine(draws, plan)
    for block, max_entries in ((None, None), (4, 1000), (1, gpu.NUMPY_MAX_ENTRIES)):
        got = gpu.run_batches_xp(draws, plan, np, ndimage.label, block=block, max_entries=max_entries)
        assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
        np.testing.assert_allclose(got[2], expected[2], rtol=MASS_RTOL, atol=0)
    assert np.any(expected[1] > 0)
    assert gpu.iterations_per_call(plan, np) == BATCH_SIZE


# --------------------------------------------------------------------------------------
# 1b. The array engine's window path (gpu_windows) == CPU engine
# --------------------------------------------------------------------------------------


@pytest.fixture
def whole_grid_calls(monkeypatch):
    """Iterations the window path left to the whole grid (``gpu.log1m_block`` calls)."""
    calls, real = [], gpu.log1m_block

    def counting(draws, dp, max_entries):
        calls.append(draws.shape[0])
        return real(draws, dp, max_entries)

    monkeypatch.setattr(gpu, "log1m_block", counting)
    return calls


def _compare_windows(mask, n_subjects, counts, cuts, connectivities, n_random, seed, calls, share=None):
    """Window path (``share``: its largest share of candidates) == CPU engine for every cut and
    neighbourhood; returns {(cut, conn): (sizes, iterations, iterations left to the whole grid)}."""
    rng = np.random.default_rng(seed)
    exp_offsets, cubes, coe = _setup(mask, n_subjects, counts)
    seen = {}
    for cut in cuts:
        for conn in connectivities:
            plan = make_plan(mask, exp_offsets, coe, cubes, cut, conn)
            assert plan.window.usable
            draws = np.vstack([batch_draws(seed, 0, n_random, plan.n_foci, plan.n_mask),
                               _extra_draws(plan, counts, rng)])
            dp = gpu.DevicePlan.build(plan, np, ndimage.label, windows=True)
            if share is not None:
                dp = dataclasses.replace(dp, windows=WindowDevice.build(plan, np, share))
            calls.clear()
            got = gpu.run_iterations(draws, dp, gpu.NUMPY_BLOCK, gpu.NUMPY_MAX_ENTRIES)
            expected = _cpu_engine(draws, plan)
            assert np.array_equal(got[0], expected[0])
            assert np.array_equal(got[1], expected[1])
            np.testing.assert_allclose(got[2], expected[2], rtol=MASS_RTOL, atol=0)
            seen[cut, conn] = (expected[1], draws.shape[0], sum(calls))
    return seen


def test_window_path_small_grid_all_connectivities(whole_grid_calls):
    """The odd grid of the array-path test: every cut and neighbourhood equals the CPU engine;
    the window path finishes the iterations with a voxel above a reachable cut and leaves the
    others (the unreachable cut) to the whole grid."""
    grid = ellipsoid_grid((27, 31, 25), (16, 14, 15))
    n_subjects = np.array([8, 12, 20, 35, 60, 15, 15, 100])
    counts = np.array([1, 2, 5, 8, 3, 6, 1, 4])
    seen = _compare_windows(grid.mask, n_subjects, counts, (0.008, 0.014, 0.9), (6, 18, 26), 9, 5,
                            whole_grid_calls)
    for conn in (6, 18, 26):
        sizes, n, redone = seen[0.008, conn]
        assert np.all(sizes > 0) and redone == 0  # all by the window path
        sizes, n, redone = seen[0.014, conn]
        assert 0 < np.count_nonzero(sizes == 0) == redone < n  # only those without a cluster redone
        assert seen[0.9, conn][2] == seen[0.9, conn][1]  # nothing above the cut: all on the whole grid


def test_window_path_two_width_classes(monkeypatch, whole_grid_calls):
    """Two classes of kernel widths in the separable bound (normally from 10,000 foci on)."""
    monkeypatch.setattr("alemap.inference.plan.SEPARATE_CLASSES_FROM_FOCI", 0)
    grid = ellipsoid_grid((27, 31, 25), (16, 14, 15))
    n_subjects = np.array([8, 12, 20, 35, 60, 15, 15, 100])
    counts = np.array([1, 2, 5, 8, 3, 6, 1, 4])
    exp_offsets, cubes, coe = _setup(grid.mask, n_subjects, counts)
    assert make_plan(grid.mask, exp_offsets, coe, cubes, 0.01).window.env.shape[0] == 2
    seen = _compare_windows(grid.mask, n_subjects, counts, (0.008, 0.014), (6,), 12, 4, whole_grid_calls)
    assert seen[0.008, 6][2] == 0 and np.all(seen[0.008, 6][0] > 0)


def test_window_path_leaves_dense_iterations_to_the_whole_grid(whole_grid_calls):
    """A largest share of 0: every iteration has too many candidates and is computed whole."""
    grid = ellipsoid_grid((21, 23, 19), (11, 12, 10))
    n_subjects = np.array([10, 25, 14])
    counts = np.array([7, 3, 5])
    seen = _compare_windows(grid.mask, n_subjects, counts, (0.01,), (18,), 11, 2, whole_grid_calls, share=0.0)
    sizes, n, redone = seen[0.01, 18]
    assert redone == n and np.any(sizes > 0)


def test_window_path_mni_grid(whole_grid_calls):
    """The MNI152 2 mm grid (91 x 109 x 91, 13 windows per column)."""
    mask = load_mni152_2mm().mask
    n_subjects = np.array([9, 14, 22, 30, 70, 16, 11])
    counts = np.array([1, 6, 10, 2, 4, 12, 5])
    seen = _compare_windows(mask, n_subjects, counts, (0.006,), (26,), 3, 21, whole_grid_calls)
    sizes, n, redone = seen[0.006, 26]
    assert np.count_nonzero(sizes) > redone


# --------------------------------------------------------------------------------------
# 3. run_null on the array path == run_null on the CPU, resumed or not
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_plan():
    grid = sphere_grid(24, 10.5)
    n_subjects = np.array([12, 20, 9, 30, 16])
    counts = np.array([4, 2, 6, 1, 3])
    exp_offsets, cubes, coe = _setup(grid.mask, n_subjects, counts)
    return make_plan(grid.mask, exp_offsets, coe, cubes, 0.012, 6)


def _assert_same_null(a: NullMaxima, b: NullMaxima) -> None:
    assert np.array_equal(a.ale, b.ale)
    assert np.array_equal(a.size, b.size)
    np.testing.assert_allclose(a.mass, b.mass, rtol=MASS_RTOL, atol=0)


def test_run_null_array_path_equals_cpu_and_resumes(small_plan):
    n_iter = BATCH_SIZE + 9  # a full batch and a partial one
    ref = run_null(small_plan, n_iter, seed=17, jobs=2, backend="cpu")
    assert np.any(ref.size > 0) and np.any(ref.size == 0)
    seen = []
    arr = run_null(small_plan, n_iter, seed=17, backend="numpy", progress=seen.append)
    _assert_same_null(arr, ref)
    assert sum(seen) == n_iter
    # resume: batch 0 done (from the CPU run), batch 1 still to do
    done = np.array([True, False])
    partial = NullMaxima(ref.ale.copy(), ref.size.copy(), ref.mass.copy())
    partial.ale[BATCH_SIZE:], partial.size[BATCH_SIZE:], partial.mass[BATCH_SIZE:] = 0.0, 0, 0.0
    batches, seen = [], []
    resumed = run_null(small_plan, n_iter, seed=17, backend="numpy", done=done, partial=partial,
                       progress=seen.append, on_batch=lambda b, m: batches.append((b, m.ale[BATCH_SIZE:].copy())))
    _assert_same_null(resumed, ref)
    assert seen == [9] and [b for b, _ in batches] == [1]
    assert np.array_equal(batches[0][1], ref.ale[BATCH_SIZE:])  # the maxima are stored when on_batch runs
    assert np.all(partial.ale[BATCH_SIZE:] == 0.0)  # the caller's partial maxima are not modified
    # another seed: another null
    assert not np.array_equal(run_null(small_plan, 9, seed=18, backend="numpy").ale, ref.ale[:9])


def test_run_null_rejects_unknown_backend(small_plan):
    with pytest.raises(ValueError, match="backend"):
        run_null(small_plan, 4, seed=0, backend="tpu")


# --------------------------------------------------------------------------------------
# Backend resolution and its errors
# --------------------------------------------------------------------------------------


@pytest.fixture
def no_cupy(monkeypatch):
    """CuPy absent (``import cupy`` raises ImportError), on any machine."""
    monkeypatch.setitem(sys.modules, "cupy", None)


@pytest.fixture
def cupy_without_device(monkeypatch):
    """A CuPy that imports but whose CUDA runtime finds no device."""

    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device)))
    monkeypatch.setitem(sys.modules, "cupy", fake)


def test_gpu_without_cupy_is_a_clear_error(no_cupy):
    with pytest.raises(BackendUnavailableError) as err:
        resolve_backend("gpu")
    text = str(err.value)
    assert INSTALL_HINT in text and 'pip install "alemap[gpu]"' in text and "CUDA" in text
    assert isinstance(err.value, ImportError)  # old `except ImportError` handlers keep working
    assert resolve_backend("auto") == "cpu" and resolve_backend("cpu") == "cpu"


def test_gpu_without_device_says_so(cupy_without_device):
    with pytest.raises(BackendUnavailableError, match="no CUDA device") as err:
        resolve_backend("gpu")
    assert "cudaErrorNoDevice" in str(err.value) and "pip install" not in str(err.value)
    assert resolve_backend("auto") == "cpu"


def test_auto_picks_a_usable_gpu(monkeypatch):
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert resolve_backend("auto") == "gpu"


def test_unknown_backend_is_a_parameter_error():
    with pytest.raises(ParameterError, match="'backend'"):
        resolve_backend("cuda")


def test_estimator_backend_parameter(no_cupy):
    """ALE validates ``backend``, records it, and fails before computing when the GPU is unusable."""
    grid = sphere_grid(20, 8.5)
    exps = null_experiments(np.random.default_rng(0), grid, 4, foci=(2, 4), subjects=(10, 20))
    with pytest.raises(ParameterError, match="The 'backend' parameter of ALE must be one of 'auto', 'cpu', 'gpu'"):
        ALE(iterations=0, mask=grid, quiet=True, backend="cuda").fit(exps)
    with pytest.raises(BackendUnavailableError, match="alemap\\[gpu\\]"):
        ALE(iterations=32, mask=grid, quiet=True, backend="gpu").fit(exps)
    res = ALE(iterations=32, seed=1, mask=grid, quiet=True, backend="auto").fit(exps)
    assert res.provenance["parameters"]["backend"] == "auto"
    assert res.provenance["backend"] == "cpu-numba"  # no GPU here: auto ran the CPU engine
    cpu_res = ALE(iterations=32, seed=1, mask=grid, quiet=True, backend="cpu").fit(exps)
    _assert_same_null(res.null_maxima, cpu_res.null_maxima)


def test_cli_gpu_without_cupy_exits_2_with_the_fix(no_cupy, tmp_path, capsys, finger_path):
    out = tmp_path / "out"
    status = main(["ale", str(finger_path), "-o", str(out), "--iterations", "32", "--backend", "gpu", "--quiet",
                   "--no-report"])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("alemap: error: ") and 'pip install "alemap[gpu]"' in err
    assert not (out / "provenance.json").exists()
    from alemap.cli.main import _parser

    for command in (["run", "p.yaml", "-o", "o"], ["demo", "-o", "o"]):
        assert _parser().parse_args([*command, "--backend", "cpu"]).backend == "cpu"
        assert _parser().parse_args(command).backend == "auto"


class _NumpyAsCupy(types.ModuleType):
    """NumPy dressed as CuPy (one device with ``free`` bytes free), so the GPU driver code runs here."""

    def __init__(self, free: int):
        super().__init__("cupy")
        self.free = free
        device = types.SimpleNamespace(mem_info=(free, 2 * free))
        self.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
                                          Device=lambda: device)
        self.freed = 0

    def get_default_memory_pool(self):
        def free_all_blocks():
            self.freed += 1

        return types.SimpleNamespace(free_bytes=lambda: 0, free_all_blocks=free_all_blocks)

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.fixture
def numpy_as_cupy(monkeypatch, small_plan):
    """A fake CuPy (NumPy inside) whose free memory fits 100 iterations of ``small_plan``."""
    per_iteration = gpu.bytes_per_iteration(small_plan, gpu.WINDOWS and small_plan.window.usable)
    fake = _NumpyAsCupy(int(100 * per_iteration / gpu.GRID_SHARE))
    ndi = types.ModuleType("cupyx.scipy.ndimage")
    ndi.label = ndimage.label
    cupyx = types.ModuleType("cupyx")
    for name, module in (("cupy", fake), ("cupyx", cupyx),
                         ("cupyx.scipy", types.ModuleType("cupyx.scipy")), ("cupyx.scipy.ndimage", ndi)):
        monkeypatch.setitem(sys.modules, name, module)
    return fake


def test_gpu_driver_batches_per_call_and_out_of_memory(numpy_as_cupy, small_plan, monkeypatch):
    """The GPU driver (run on the fake CuPy): whole batches per call from free memory; on running
    out of memory it halves the batches per call; results equal the CPU's for the same seed."""
    xp, _ = gpu.array_module("gpu")
    assert xp is numpy_as_cupy
    windows = gpu.WINDOWS and small_plan.window.usable
    assert gpu.iterations_per_call(small_plan, xp, windows) == 3 * BATCH_SIZE  # 100 iterations fit: 3 batches
    calls, real = [], gpu.run_iterations

    def flaky(draws, dp, block, max_entries):
        calls.append(draws.shape[0])
        if len(calls) == 1:
            raise MemoryError("out of device memory")  # as cupy.cuda.memory.OutOfMemoryError
        return real(draws, dp, block, max_entries)

    monkeypatch.setattr(gpu, "run_iterations", flaky)
    n_iter = 4 * BATCH_SIZE + 5
    batches = []
    got = run_null(small_plan, n_iter, seed=8, backend="gpu", on_batch=lambda b, m: batches.append(b))
    _assert_same_null(got, run_null(small_plan, n_iter, seed=8, backend="cpu"))
    assert calls == [96, 32, 32, 32, 32, 5] and numpy_as_cupy.freed == 1
    assert batches == [0, 1, 2, 3, 4]


def test_gpu_driver_splits_a_batch_when_one_does_not_fit(numpy_as_cupy, small_plan, monkeypatch):
    """Out of memory with one batch per call: the batch is computed in halves; a second failure
    at one iteration per block is raised (as MemoryError, which the command line reports)."""
    monkeypatch.setattr(gpu, "iterations_per_call", lambda plan, xp, windows=False: BATCH_SIZE)
    blocks, real = [], gpu.run_iterations

    def tight(draws, dp, block, max_entries):
        blocks.append(block)
        if block > 16:
            raise MemoryError("out of device memory")
        return real(draws, dp, block, max_entries)

    monkeypatch.setattr(gpu, "run_iterations", tight)
    got = run_null(small_plan, BATCH_SIZE + 3, seed=9, backend="gpu")
    _assert_same_null(got, run_null(small_plan, BATCH_SIZE + 3, seed=9, backend="cpu"))
    assert blocks == [32, 16, 3]
    def never_fits(draws, dp, block, max_entries):
        blocks.append(block)
        raise MemoryError("out of device memory")

    monkeypatch.setattr(gpu, "run_iterations", never_fits)
    blocks.clear()
    with pytest.raises(MemoryError):
        run_null(small_plan, 5, seed=9, backend="gpu")
    assert blocks == [5, 2, 1]


def test_gpu_voxelwise_driver_groups_batches_and_recovers_from_out_of_memory(numpy_as_cupy, monkeypatch):
    """C-SALE's voxel-wise null on the (fake) GPU: whole batches per call; out of memory, the
    call's counts are dropped, the block halved and the call repeated; the CPU's counts."""
    from alemap.inference import gpu_voxelwise as gv
    from alemap.inference.voxelwise import voxelwise_counts
    from test_voxelwise import _case

    grid = ellipsoid_grid((21, 25, 19), (10, 12, 9))
    case = _case(grid, grid.mask, np.array([9, 25, 14]), np.array([3, 1, 5]), seed=6)
    n_iter = 3 * BATCH_SIZE + 7
    calls, real = [], gv._count_block

    def flaky(xp, ijk, *args):
        calls.append(ijk.shape[0])
        if len(calls) == 2:
            raise MemoryError("out of device memory")  # as cupy.cuda.memory.OutOfMemoryError
        return real(xp, ijk, *args)

    monkeypatch.setattr(gv, "_count_block", flaky)
    monkeypatch.setattr(gv, "_budget", lambda xp, *sizes: (2 * BATCH_SIZE, 10**6))
    seen = []
    got = voxelwise_counts(**case, n_iterations=n_iter, seed=11, backend="gpu", progress=seen.append)
    assert np.array_equal(got, voxelwise_counts(**case, n_iterations=n_iter, seed=11))
    assert calls == [64, 39, 32, 7] and numpy_as_cupy.freed == 1 and seen == [64, 32, 7]


def test_batch_on_the_gpu_engine(numpy_as_cupy, tmp_path):
    """``alemap batch --backend gpu`` (the fake CuPy): whole analyses one after another in this
    process, even where the CPU would shard iterations; the CPU's nulls, maps and tables."""
    from alemap.designs.batch import run_batch, terms_batch
    from alemap.io.databases import read_neurosynth
    from test_batch import COMPARED, TERMS, make_database_files

    c, m, mask = make_database_files(tmp_path)
    batch = terms_batch(read_neurosynth(c, m), TERMS, seed=7, iterations=64, mask=mask)
    on_gpu = run_batch(batch, tmp_path / "gpu", jobs=4, null_backend="gpu", quiet=True)
    on_cpu = run_batch(batch, tmp_path / "cpu", jobs=4, null_backend="cpu", quiet=True)
    assert on_gpu.ok and sorted(on_gpu.computed) == sorted(on_cpu.computed) == sorted(a.name for a in batch.analyses)
    assert on_gpu.execution["shard"] == "analyses" and on_cpu.execution["shard"] == "iterations"
    assert on_gpu.execution["null_backend"] == "gpu-cupy" and on_cpu.execution["null_backend"] == "cpu-numba"
    for a in batch.analyses:
        g, c_ = tmp_path / "gpu" / a.name, tmp_path / "cpu" / a.name
        assert json.loads((g / "provenance.json").read_text())["backend"] == "gpu-cupy"
        ng, nc = np.load(g / "null.npz"), np.load(c_ / "null.npz")
        keys = ("max_ale", "max_cluster_size", "max_cluster_mass")
        _assert_same_null(NullMaxima(*(ng[k] for k in keys)), NullMaxima(*(nc[k] for k in keys)))
        for name in COMPARED:
            assert np.array_equal(np.asarray(nib.load(str(g / f"{name}.nii.gz")).dataobj),
                                  np.asarray(nib.load(str(c_ / f"{name}.nii.gz")).dataobj)), (a.name, name)
        assert (g / "clusters.tsv").read_text() == (c_ / "clusters.tsv").read_text()


def test_estimator_records_the_gpu_backend(numpy_as_cupy):
    grid = sphere_grid(20, 8.5)
    exps = null_experiments(np.random.default_rng(2), grid, 5, foci=(2, 5), subjects=(10, 20))
    on_gpu = ALE(iterations=40, seed=3, mask=grid, quiet=True).fit(exps)  # auto: the (fake) GPU
    assert on_gpu.provenance["backend"] == "gpu-cupy" and on_gpu.provenance["parameters"]["backend"] == "auto"
    on_cpu = ALE(iterations=40, seed=3, mask=grid, quiet=True, backend="cpu").fit(exps)
    assert on_cpu.provenance["backend"] == "cpu-numba"
    _assert_same_null(on_gpu.null_maxima, on_cpu.null_maxima)
    assert np.array_equal(on_gpu.maps["z_cfwe"], on_cpu.maps["z_cfwe"])


# --------------------------------------------------------------------------------------
# Real GPU (CuPy and a CUDA device): skipped without one, unless ALEMAP_REQUIRE_GPU=1
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cupy_xp():
    """(cupy, cupyx label); skip, or fail under ALEMAP_REQUIRE_GPU=1, without a usable GPU."""
    try:
        return gpu.array_module("gpu")
    except BackendUnavailableError as err:
        reason = f"no CUDA GPU / CuPy not installed ({err})"
        if REQUIRE_GPU:
            pytest.fail(f"ALEMAP_REQUIRE_GPU=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def finger(finger_path):
    from alemap.io import load_experiments

    return load_experiments([str(Path(finger_path))])


@pytest.mark.gpu
@pytest.mark.parametrize("windows", [True, False])
def test_gpu_matches_array_path_on_small_grid(cupy_xp, windows):
    grid = ellipsoid_grid((27, 31, 25), (16, 14, 15))
    n_subjects = np.array([8, 12, 20, 35, 60, 15, 15, 100])
    counts = np.array([1, 2, 5, 8, 3, 6, 1, 4])
    exp_offsets, cubes, coe = _setup(grid.mask, n_subjects, counts)
    for conn in (6, 26):
        plan = make_plan(grid.mask, exp_offsets, coe, cubes, 0.01, conn)
        draws = np.vstack([batch_draws(3, 0, 64, plan.n_foci, plan.n_mask),
                           _extra_draws(plan, counts, np.random.default_rng(3))])
        on_gpu = gpu.run_batches_xp(draws, plan, *cupy_xp, windows=windows)
        on_cpu = _cpu_engine(draws, plan)
        assert np.array_equal(on_gpu[0], on_cpu[0]) and np.array_equal(on_gpu[1], on_cpu[1])
        np.testing.assert_allclose(on_gpu[2], on_cpu[2], rtol=MASS_RTOL, atol=0)
    assert gpu.iterations_per_call(plan, cupy_xp[0]) % BATCH_SIZE == 0


@pytest.mark.gpu
@pytest.mark.parametrize("iterations", [96, 1000])
def test_gpu_null_equals_cpu_null_on_finger_data(cupy_xp, finger, iterations):
    """The finger-tapping set (73 experiments): the same seed gives the CPU's null maxima and maps."""
    fits = {b: ALE(iterations=iterations, seed=11, jobs=os.cpu_count() or 1, quiet=True, backend=b).fit(finger)
            for b in ("cpu", "gpu")}
    assert fits["gpu"].provenance["backend"] == "gpu-cupy"
    assert fits["cpu"].provenance["backend"] == "cpu-numba"
    _assert_same_null(fits["gpu"].null_maxima, fits["cpu"].null_maxima)
    assert np.count_nonzero(fits["cpu"].null_maxima.size) > iterations // 2  # clusters are compared
    for key in ("ale", "p", "z"):
        assert np.array_equal(fits["gpu"].maps[key], fits["cpu"].maps[key])
    np.testing.assert_array_equal(fits["gpu"].clusters["voxels"], fits["cpu"].clusters["voxels"])


@pytest.mark.gpu
def test_gpu_run_null_resumes(cupy_xp, small_plan):
    n_iter = 3 * BATCH_SIZE + 5
    ref = run_null(small_plan, n_iter, seed=4, backend="cpu")
    done = np.array([True, False, True, False])
    partial = NullMaxima(ref.ale * done.repeat(BATCH_SIZE)[:n_iter], ref.size * done.repeat(BATCH_SIZE)[:n_iter],
                         ref.mass * done.repeat(BATCH_SIZE)[:n_iter])
    batches = []
    got = run_null(small_plan, n_iter, seed=4, backend="gpu", done=done, partial=partial,
                   on_batch=lambda b, m: batches.append(b))
    _assert_same_null(got, ref)
    assert batches == [1, 3]


@pytest.mark.gpu
def test_gpu_voxelwise_counts_equal_cpu(cupy_xp):
    """C-SALE/SCALE's voxel-wise null on the GPU: the CPU engine's counts (integers: exactly)."""
    from alemap.inference.gpu_voxelwise import voxelwise_counts_array
    from alemap.inference.voxelwise import voxelwise_counts
    from test_voxelwise import _case

    grid = ellipsoid_grid((29, 33, 27), (14, 16, 13))
    region = grid.mask & (np.indices(grid.mask.shape)[2] < 9)
    case = _case(grid, region, np.array([8, 12, 20, 35, 100, 15]), np.array([1, 3, 9, 2, 4, 6]), seed=3)
    n_iter = 3 * BATCH_SIZE + 7
    cpu_counts = voxelwise_counts(**case, n_iterations=n_iter, seed=11, jobs=2)
    for block in (None, 5):
        got = voxelwise_counts_array(**case, n_iterations=n_iter, seed=11, backend="gpu", block=block)
        assert np.array_equal(got, cpu_counts)
    assert np.any((cpu_counts > 0) & (cpu_counts < n_iter))
