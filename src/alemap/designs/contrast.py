"""Contrasts between two ALE analyses.

Three methods, selectable per contrast (``method:``):

``gingerale`` (default; Eickhoff et al. 2011, NeuroImage 57:938-949)
    The pooled experiments of both groups are reassigned at random to groups of
    the original sizes (label exchange, ``permutations`` times, default
    10,000). A>B is tested only inside A's significant main effect (cluster-
    level FWE) and B>A only inside B's, one-sided: p = share of reassignments
    whose difference is at least as extreme, floored at 1/n. Voxels with
    p < ``p`` (default 0.05, Eickhoff 2011's 95 % criterion) form the z maps;
    clusters smaller than ``min_volume_mm3`` are removed.
``subtraction`` (NiMARE's ``ALESubtraction``)
    The same permutations over every voxel where either group has ALE > 0,
    two-sided: p = 2 min(upper, lower) / n clipped to [1/n, 1 - 1/n]; the sign
    is positive where A > B.
``balanced`` (JALE's balanced contrast, Frahm et al.)
    For groups of unequal size: the statistic is the mean, over ``subsamples``
    (default 100) draws, of ALE(random ``target_n`` of A) - ALE(random
    ``target_n`` of B), and each label-exchange permutation recomputes it the
    same way (default 1,000 permutations). Tested inside the main effects as
    ``gingerale``. ``target_n`` defaults to JALE's
    ``min(floor(mean(min(nA, nB), 17)), min(nA, nB) - 2)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import special

from alemap.inference.permutation import assignment_batch, permutation_counts
from alemap.kernels.gaussian import kernel_cubes
from alemap.reporting.cluster_table import map_clusters
from alemap.statistics.ale import ma_maps
from alemap.statistics.pz import p_to_z

__all__ = ["CONTRAST_METHODS", "ContrastResult", "run_contrast", "log1m_matrix", "default_target_n"]

CONTRAST_METHODS = ("gingerale", "subtraction", "balanced")
DEFAULTS = {"gingerale": {"permutations": 10000, "p": 0.05, "min_volume_mm3": 0.0},
            "subtraction": {"permutations": 10000, "p": 0.001, "min_volume_mm3": 0.0},
            "balanced": {"permutations": 1000, "p": 0.05, "min_volume_mm3": 0.0, "subsamples": 100}}
#: groups whose sizes differ by this factor or more get a recommendation to balance
SIZE_RATIO_WARNING = 2.0


@dataclass(frozen=True, eq=False)
class ContrastResult:
    """Maps (in-mask vectors), cluster table, parameters and notes of a contrast."""

    maps: dict
    clusters: pd.DataFrame
    params: dict
    notes: list


def log1m_matrix(result_a, result_b) -> sp.csr_matrix:
    """``log1p(-MA)`` of the pooled experiments (A's first), experiments x in-mask voxels."""
    grid = result_a.grid
    mats = []
    for res in (result_a, result_b):
        exps = res.experiments
        cubes = kernel_cubes(exps.n_subjects, float(grid.voxel_size[0]))
        ma = ma_maps(res.ijk, exps.offsets, cubes.index(exps.n_subjects), cubes, grid.mask)
        mats.append(sp.csr_matrix((np.log1p(-ma.vals), ma.cols, ma.indptr), shape=(exps.n_experiments, grid.n_voxels)))
    return sp.vstack(mats).tocsr()


def default_target_n(n_a: int, n_b: int) -> int:
    """JALE's default subsample size for a balanced contrast."""
    small = min(n_a, n_b)
    return max(1, min(int(np.floor(np.mean([small, 17]))), small - 2))


def _one_sided(counts_tail, n, gate):
    p = np.ones(gate.shape[0])
    p[gate] = np.maximum(counts_tail[gate], 1) / n
    return p


def _gingerale_maps(counts, sig_a, sig_b, p_thr):
    n = counts.n_permutations
    d = counts.observed
    p_ab = _one_sided(counts.upper, n, sig_a & (d > 0))
    p_ba = _one_sided(counts.lower, n, sig_b & (d < 0))
    z_ab = np.where(p_ab < p_thr, p_to_z(p_ab), 0.0)
    z_ba = np.where(p_ba < p_thr, p_to_z(p_ba), 0.0)
    return {"diff": d, "p_AgtB": p_ab, "p_BgtA": p_ba, "z_AgtB": z_ab, "z_BgtA": z_ba}


def _subtraction_maps(counts, p_thr):
    n = counts.n_permutations
    p = 2.0 * np.minimum(counts.upper, counts.lower) / n
    p = np.clip(p, 1.0 / n, 1.0 - 1.0 / n)
    sign = np.sign(counts.lower.astype(np.int64) - counts.upper.astype(np.int64))
    z = -special.ndtri(p / 2.0) * sign
    z_ab = np.where((p < p_thr) & (sign > 0), np.abs(z), 0.0)
    z_ba = np.where((p < p_thr) & (sign < 0), np.abs(z), 0.0)
    return {"diff": counts.observed, "p_subtraction": p, "z_subtraction": z, "z_AgtB": z_ab, "z_BgtA": z_ba}


def _balanced_stat(log1m, rows_a, rows_b):
    # rows_*: (k, n_total) 0/1 matrices, each row one subsample; mean of the differences
    s_a = rows_a @ log1m
    s_b = rows_b @ log1m
    return (np.exp(s_b) - np.exp(s_a)).mean(axis=0)


def _subsample_rows(rng, members, n_total, m, k):
    rows = np.zeros((k, n_total))
    for r in range(k):
        rows[r, rng.choice(members, m, replace=False)] = 1.0
    return rows


def _balanced_counts(log1m, n_a, n_perm, seed, m, k, progress):
    n_total = log1m.shape[0]
    members_a, members_b = np.arange(n_a), np.arange(n_a, n_total)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(2**31,)))
    obs = _balanced_stat(log1m, _subsample_rows(rng, members_a, n_total, m, k),
                         _subsample_rows(rng, members_b, n_total, m, k))
    upper = np.zeros_like(obs, dtype=np.int64)
    lower = np.zeros_like(obs, dtype=np.int64)
    tol = 1e-12 * np.abs(obs) + 1e-15
    for i in range(n_perm):
        perm = np.flatnonzero(assignment_batch(seed, i, 1, n_total, n_a)[0])
        rest = np.setdiff1d(np.arange(n_total), perm)
        prng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(i, 1)))
        d = _balanced_stat(log1m, _subsample_rows(prng, perm, n_total, m, k),
                           _subsample_rows(prng, rest, n_total, m, k))
        upper += d >= obs - tol
        lower += d <= obs + tol
        if progress is not None:
            progress(1)
    from alemap.inference.permutation import PermutationCounts

    return PermutationCounts(obs, upper, lower, n_perm)


def run_contrast(result_a, result_b, method="gingerale", permutations=None, p=None, min_volume_mm3=None,
                 seed=0, subsamples=None, target_n=None, connectivity=6, progress=None) -> ContrastResult:
    """Contrast two fitted ALE analyses (see the module docstring)."""
    if method not in CONTRAST_METHODS:
        raise ValueError(f"contrast method must be one of {CONTRAST_METHODS}, got {method!r}")
    d = DEFAULTS[method]
    n_perm = int(permutations if permutations is not None else d["permutations"])
    p_thr = float(p if p is not None else d["p"])
    min_vol = float(min_volume_mm3 if min_volume_mm3 is not None else d["min_volume_mm3"])
    grid = result_a.grid
    n_a, n_b = result_a.experiments.n_experiments, result_b.experiments.n_experiments
    full = log1m_matrix(result_a, result_b)
    sig_a = result_a.maps.get("z_cfwe", np.zeros(grid.n_voxels)) > 0
    sig_b = result_b.maps.get("z_cfwe", np.zeros(grid.n_voxels)) > 0
    if method == "subtraction":
        cols = np.flatnonzero(np.asarray((full != 0).sum(axis=0)).ravel() > 0)
    else:
        cols = np.flatnonzero(sig_a | sig_b)
    params = {"method": method, "permutations": n_perm, "p": p_thr, "min_volume_mm3": min_vol, "seed": seed,
              "n_a": n_a, "n_b": n_b, "tested_voxels": int(cols.size)}
    sub = full[:, cols]
    if method == "balanced":
        m = int(target_n if target_n is not None else default_target_n(n_a, n_b))
        k = int(subsamples if subsamples is not None else d["subsamples"])
        params.update(target_n=m, subsamples=k)
        counts = _balanced_counts(sub.toarray(), n_a, n_perm, seed, m, k, progress) if cols.size else None
    else:
        counts = permutation_counts(sub, n_a, n_perm, seed, progress) if cols.size else None
    maps = _expand(counts, cols, grid.n_voxels, method, sig_a, sig_b, p_thr)
    table = _tables(maps, grid, connectivity, min_vol)
    notes = _notes(n_a, n_b, method, cols.size)
    floor = (2.0 if method == "subtraction" else 1.0) / n_perm
    if floor >= p_thr:
        notes.append(f"with {n_perm} permutations the smallest attainable p is {floor:.2g}, not below p = {p_thr}: "
                     "no voxel can pass; use more permutations.")
    return ContrastResult(maps=maps, clusters=table, params=params, notes=notes)


def _expand(counts, cols, n_vox, method, sig_a, sig_b, p_thr):
    from alemap.inference.permutation import PermutationCounts

    if counts is None:
        counts = PermutationCounts(np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 1)
    n = counts.n_permutations
    full = PermutationCounts(np.zeros(n_vox), np.full(n_vox, n, dtype=np.int64), np.full(n_vox, n, dtype=np.int64), n)
    full.observed[cols], full.upper[cols], full.lower[cols] = counts.observed, counts.upper, counts.lower
    if method == "subtraction":
        return _subtraction_maps(full, p_thr)
    return _gingerale_maps(full, sig_a, sig_b, p_thr)


def _tables(maps, grid, connectivity, min_vol):
    tables = []
    for key, label in (("z_AgtB", "A>B"), ("z_BgtA", "B>A")):
        labels, t = map_clusters(maps[key], grid, connectivity, min_vol)
        maps[key] = np.where(labels > 0, maps[key], 0.0)
        t.insert(0, "direction", label)
        tables.append(t)
    maps["z_contrast"] = maps["z_AgtB"] - maps["z_BgtA"]
    return pd.concat(tables, ignore_index=True)


def _notes(n_a, n_b, method, n_tested):
    notes = []
    ratio = max(n_a, n_b) / max(1, min(n_a, n_b))
    if ratio >= SIZE_RATIO_WARNING and method != "balanced":
        notes.append(f"The groups differ a lot in size ({n_a} vs {n_b} experiments): the larger group's ALE is "
                     "higher everywhere it converges, which biases the difference. Consider 'method: balanced' "
                     "(matched-size subsampling).")
    if n_tested == 0:
        notes.append("No voxel was tested: neither main effect has a significant cluster.")
    return notes
