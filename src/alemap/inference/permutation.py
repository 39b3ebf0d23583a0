"""Label-exchange permutations for ALE contrasts (Eickhoff et al. 2011).

Eickhoff SB, Bzdok D, Laird AR, Roski C, Caspers S, Zilles K, Fox PT (2011).
Co-activation patterns distinguish cortical modules, their connectivity and
functional differentiation. NeuroImage 57:938-949.

The pooled experiments of groups A and B are reassigned at random to groups of
the original sizes; for each reassignment the ALE difference
``ALE_A - ALE_B`` is recomputed at every tested voxel and compared with the
observed one. Because ``ALE = -expm1(sum of log(1 - MA))``, a reassignment is a
0/1 row vector ``s`` (1 = in A) and the group sums are ``s @ L`` and
``total - s @ L`` for the experiments-by-voxels matrix ``L = log1p(-MA)``. A
batch of reassignments is therefore one matrix product (BLAS), which is what
makes 10,000 permutations cheap.

Seeding follows the Monte Carlo contract: batch ``b`` of :data:`BATCH` draws
from ``SeedSequence(seed, spawn_key=(b,))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["BATCH", "PermutationCounts", "permutation_counts", "assignment_batch"]

#: Reassignments per seeded batch (part of the seed contract).
BATCH = 128


@dataclass(frozen=True)
class PermutationCounts:
    """Observed difference and how often permuted differences reached it.

    ``upper[v]`` counts permutations with ``d_perm >= d_obs``; ``lower[v]``
    those with ``d_perm <= d_obs``.
    """

    observed: np.ndarray
    upper: np.ndarray
    lower: np.ndarray
    n_permutations: int


def assignment_batch(seed: int, batch: int, n_rows: int, n_total: int, n_a: int) -> np.ndarray:
    """0/1 matrix (n_rows, n_total): each row a random choice of ``n_a`` experiments for A."""
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(batch),)))
    keys = rng.random((n_rows, n_total))
    order = np.argsort(keys, axis=1, kind="stable")
    s = np.zeros((n_rows, n_total))
    np.put_along_axis(s, order[:, :n_a], 1.0, axis=1)
    return s


def _diff(sum_a: np.ndarray, total: np.ndarray) -> np.ndarray:
    # ALE_A - ALE_B = (1 - e^{S_A}) - (1 - e^{S_B}) = e^{S_B} - e^{S_A}
    return np.exp(total - sum_a) - np.exp(sum_a)


#: Voxels per chunk: bounds the (BATCH x chunk) float64 work arrays to ~64 MB.
CHUNK = 1 << 16


def permutation_counts(
    log1m,
    n_a: int,
    n_permutations: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> PermutationCounts:
    """Permutation counts of the ALE difference of the first ``n_a`` rows vs the rest.

    Parameters
    ----------
    log1m : array or scipy.sparse matrix (n_experiments, n_voxels)
        ``log1p(-MA)`` of the pooled experiments, group A first. Voxels are
        processed in chunks of :data:`CHUNK`, so a sparse whole-brain matrix
        never has to be dense all at once.
    n_a : int
        Size of group A.
    n_permutations, seed : int
        Number of reassignments and root seed.
    progress : callable, optional
        Called with the number of (permutation x chunk) units done, out of
        ``n_permutations * n_chunks``.
    """
    n_total, n_vox = log1m.shape
    observed = np.zeros(n_vox)
    upper = np.zeros(n_vox, dtype=np.int64)
    lower = np.zeros(n_vox, dtype=np.int64)
    for lo in range(0, n_vox, CHUNK):
        hi = min(n_vox, lo + CHUNK)
        block = log1m[:, lo:hi]
        block = np.ascontiguousarray(block.toarray() if hasattr(block, "toarray") else block, dtype=np.float64)
        o, u, l_ = _chunk_counts(block, n_a, n_permutations, seed, progress)
        observed[lo:hi], upper[lo:hi], lower[lo:hi] = o, u, l_
    return PermutationCounts(observed, upper, lower, n_permutations)


def _sum_threshold(observed: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Group-A log-sum ``S*`` at which the ALE difference equals ``observed``.

    ``d(S) = exp(total - S) - exp(S)`` falls strictly as ``S`` grows, so
    ``d >= observed`` exactly when ``S <= S*``; with ``y = exp(S*)``,
    ``y**2 + observed * y - exp(total) = 0``. Counting then needs no
    exponential per permutation.
    """
    y = 0.5 * (-observed + np.sqrt(observed**2 + 4.0 * np.exp(total)))
    return np.log(y)


def _chunk_counts(block, n_a, n_permutations, seed, progress):
    n_total = block.shape[0]
    total = block.sum(axis=0)
    observed = _diff(block[:n_a].sum(axis=0), total)
    upper = np.zeros(block.shape[1], dtype=np.int64)
    lower = np.zeros(block.shape[1], dtype=np.int64)
    # a few ulps of tolerance: a reassignment equal to the observed split (up to
    # summation order) must count as a tie in both tails
    tol = 1e-12 * np.abs(observed) + 1e-15
    s_hi = _sum_threshold(observed - tol, total)  # d >= observed - tol  <=>  S <= s_hi
    s_lo = _sum_threshold(observed + tol, total)  # d <= observed + tol  <=>  S >= s_lo
    done = 0
    b = 0
    while done < n_permutations:
        rows = min(BATCH, n_permutations - done)
        sums = assignment_batch(seed, b, rows, n_total, n_a) @ block
        upper += (sums <= s_hi).sum(axis=0)
        lower += (sums >= s_lo).sum(axis=0)
        done += rows
        b += 1
        if progress is not None:
            progress(rows)
    return observed, upper, lower
