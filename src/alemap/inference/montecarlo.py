"""Seeded, parallel Monte Carlo null of the ALE maxima.

Determinism: iterations are grouped in batches of :data:`BATCH_SIZE`; batch
``b`` draws its relocated foci from ``SeedSequence(seed, spawn_key=(b,))``.
Each iteration's draws therefore depend only on the seed and the iteration
number, never on how many threads run or in which order batches finish, so
``--jobs 1`` and ``--jobs 8`` (and every backend given the same draws) give
identical nulls.

Relocation follows Eickhoff et al. (2012): every focus of every experiment is
moved to an in-mask voxel drawn uniformly with replacement; experiments keep
their focus counts and kernels.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable

import numpy as np

from alemap.inference.cpu import Workspace, run_batch
from alemap.inference.plan import MonteCarloPlan

__all__ = ["BATCH_SIZE", "NullMaxima", "batch_draws", "run_null"]

#: Iterations per seeded batch. Part of the seed contract: changing it changes results.
BATCH_SIZE = 32


@dataclass(frozen=True)
class NullMaxima:
    """Per-iteration maxima of the Monte Carlo null."""

    ale: np.ndarray
    size: np.ndarray
    mass: np.ndarray

    @property
    def n_iterations(self) -> int:
        """Number of iterations."""
        return int(self.ale.shape[0])


def batch_draws(seed: int, batch: int, n_iter: int, n_foci: int, n_mask: int, cdf: np.ndarray | None = None) -> np.ndarray:
    """In-mask voxel numbers (n_iter, n_foci) for batch ``batch``.

    Uniform over the mask (Eickhoff et al. 2012), or, given the cumulative sum
    ``cdf`` of a base-rate map over the mask voxels (ending at 1), drawn with
    probability proportional to that map (SCALE, Langner et al. 2014; C-SALE).
    """
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(batch),)))
    if cdf is None:
        return rng.integers(0, n_mask, size=(n_iter, n_foci), dtype=np.int64)
    u = rng.random((n_iter, n_foci)) * cdf[-1]
    return np.minimum(np.searchsorted(cdf, u, side="right"), n_mask - 1).astype(np.int64)


def _batches(n_iterations: int) -> list[tuple[int, int, int]]:
    out = []
    for b, lo in enumerate(range(0, n_iterations, BATCH_SIZE)):
        out.append((b, lo, min(n_iterations, lo + BATCH_SIZE)))
    return out


def run_null(
    plan: MonteCarloPlan,
    n_iterations: int,
    seed: int,
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
    done: np.ndarray | None = None,
    partial: NullMaxima | None = None,
    on_batch: Callable[[int, NullMaxima], None] | None = None,
    backend: str = "cpu",
) -> NullMaxima:
    """Run the Monte Carlo null on the CPU (numba) or GPU (CuPy) backend.

    Parameters
    ----------
    plan : MonteCarloPlan
        Invariants of the analysis.
    n_iterations : int
        Number of iterations.
    seed : int
        Root seed; see the module docstring for the contract.
    jobs : int
        Threads.
    progress : callable, optional
        Called with the number of iterations just finished.
    done, partial : optional
        Resume: ``done[b]`` marks batches already in ``partial``; they are skipped.
    on_batch : callable, optional
        Called (from the main thread) after each batch with the batch index and
        the current maxima, for checkpoints.
    backend : {"cpu", "gpu", "auto", "numpy"}
        ``"cpu"``: the numba engine on ``jobs`` threads; ``"gpu"``: the array
        engine of :mod:`alemap.inference.gpu` on CuPy (``jobs`` is not used);
        ``"auto"``: see :func:`alemap.inference.backends.resolve_backend`;
        ``"numpy"``: the GPU code path run on the host with NumPy (slow; it
        exists to test that path without a GPU). Every backend relocates the
        same foci for the same seed.
    """
    ale = np.zeros(n_iterations) if partial is None else partial.ale.copy()
    size = np.zeros(n_iterations, dtype=np.int64) if partial is None else partial.size.copy()
    mass = np.zeros(n_iterations) if partial is None else partial.mass.copy()
    todo = [t for t in _batches(n_iterations) if done is None or not done[t[0]]]
    local = threading.local()

    def work(b: int, lo: int, hi: int) -> tuple[int, int, int]:
        ws = getattr(local, "ws", None)
        if ws is None:
            ws = local.ws = Workspace(plan.n_grid, plan.n_blocks)
        draws = batch_draws(seed, b, hi - lo, plan.n_foci, plan.n_mask)
        run_batch(draws, plan, ws, ale[lo:hi], size[lo:hi], mass[lo:hi])
        return b, lo, hi

    def finished(b: int, lo: int, hi: int) -> None:
        if progress is not None:
            progress(hi - lo)
        if on_batch is not None:
            on_batch(b, NullMaxima(ale, size, mass))

    if backend not in ("cpu", "gpu", "auto", "numpy"):
        raise ValueError(f"run_null: backend must be 'cpu', 'gpu', 'auto' or 'numpy', not {backend!r}")
    if backend == "auto":
        from alemap.inference.backends import resolve_backend

        backend = resolve_backend(backend)
    if backend != "cpu":
        if todo:
            from alemap.inference.gpu import run_null_array

            run_null_array(plan, seed, todo, ale, size, mass, finished, backend)
    elif jobs <= 1:
        for b, lo, hi in todo:
            finished(*work(b, lo, hi))
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(work, *t) for t in todo]
            for fut in as_completed(futures):
                finished(*fut.result())
    return NullMaxima(ale, size, mass)
