"""Probabilistic ALE: how stable each cluster is across subsamples of experiments.

After JALE's probabilistic ALE (Frahm et al.): draw ``subsamples`` random
subsets of ``target_n`` experiments, threshold each subset's ALE at the same
cluster-forming p and at a cluster-size cut-off, and report for every cluster
of the full analysis the share of subsets in which its peak lies in a surviving
cluster; the mean of the subsets' binary maps is the stability map.

Like JALE, the cluster-size cut-off comes from one Monte Carlo null computed for
a subset of ``target_n`` experiments (the first subset), not from a null per
subset: it is an approximation that keeps the cost at one null plus one ALE per
subset, and it is recorded as such in the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from alemap.corrections.cluster import label_clusters
from alemap.corrections.voxel import fwe_threshold
from alemap.designs.contrast import default_target_n
from alemap.inference.montecarlo import run_null
from alemap.inference.plan import make_plan
from alemap.kernels.gaussian import kernel_cubes
from alemap.statistics.ale import ale_from_ma, ma_maps
from alemap.statistics.null import analytic_null

__all__ = ["Stability", "cluster_stability"]


@dataclass(frozen=True)
class Stability:
    """Per-cluster stability (share of subsets, 0-1) and the stability map (in-mask vector)."""

    table: pd.DataFrame
    map: np.ndarray
    params: dict


def _subset_ale(result, idx, cubes):
    exps = result.experiments
    offs = exps.offsets
    rows = np.concatenate([np.arange(offs[i], offs[i + 1]) for i in idx])
    sub_offsets = np.concatenate([[0], np.cumsum(exps.foci_counts[idx])])
    coe = cubes.index(exps.n_subjects[idx])
    ma = ma_maps(result.ijk[rows], sub_offsets, coe, cubes, result.grid.mask)
    return ma, sub_offsets, coe


def cluster_stability(result, subsamples: int = 100, target_n: int | None = None, iterations: int = 1000,
                      seed: int = 0, jobs: int = 1, backend: str = "cpu") -> Stability:
    """Stability of ``result``'s significant clusters across subsets of its experiments; ``backend``
    (``"cpu"``, ``"gpu"``, ``"auto"``) runs the subset's Monte Carlo null (the same null on each)."""
    exps = result.experiments
    grid = result.grid
    n = exps.n_experiments
    m = int(target_n or default_target_n(n, n))
    params = dict(result.provenance["parameters"])
    p_cf, alpha, conn = params["cluster_forming_p"], params["alpha"], params["connectivity"]
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(7919,)))
    subsets = [np.sort(rng.choice(n, m, replace=False)) for _ in range(subsamples)]
    cubes = kernel_cubes(exps.n_subjects, float(grid.voxel_size[0]))
    ma, offs, coe = _subset_ale(result, subsets[0], cubes)
    cut0 = analytic_null(ma).threshold(p_cf)
    null = run_null(make_plan(grid.mask, offs, coe, cubes, cut0, conn), iterations, seed, jobs, backend=backend)
    k_cut = fwe_threshold(null.size, alpha)
    hits = np.zeros(grid.n_voxels)
    for idx in subsets:
        ma, _, _ = _subset_ale(result, idx, cubes)
        ale = ale_from_ma(ma)
        cut = analytic_null(ma).threshold(p_cf)
        labels, n_cl = label_clusters(grid.to_volume(ale, dtype=np.float64) > cut, conn)
        lab = labels.ravel()[grid.mask_flat]
        sizes = np.bincount(lab, minlength=n_cl + 1)
        keep = np.flatnonzero(sizes > k_cut)
        keep = keep[keep > 0]
        hits += np.isin(lab, keep)
    stab_map = hits / subsamples
    rows = []
    for _, row in result.clusters.iterrows():
        ijk = np.rint(grid.mm_to_continuous_ijk([[row.peak_x, row.peak_y, row.peak_z]])[0]).astype(int)
        flat = np.ravel_multi_index(tuple(ijk), grid.shape)
        pos = np.searchsorted(grid.mask_flat, flat)
        rows.append({"cluster": int(row.cluster), "stability": float(stab_map[pos])})
    params = {"subsamples": subsamples, "target_n": m, "iterations": iterations, "seed": seed,
              "cluster_size_cutoff": k_cut, "approximation": "one Monte Carlo null for a subset of target_n (JALE)"}
    return Stability(pd.DataFrame(rows, columns=["cluster", "stability"]), stab_map, params)
