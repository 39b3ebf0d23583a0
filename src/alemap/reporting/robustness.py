"""Robustness of ALE clusters: experiment contributions, jackknife, focus counts, Fail-safe N.

Diagnostics for the significant clusters of a fitted :class:`~alemap.result.ALEResult`
(spec section 5). Except for :func:`fail_safe_n`, everything here is computed
from the fitted result alone: the MA maps are rebuilt from the placed foci
(:func:`alemap.statistics.ale.ma_maps`), ``ENTRY_CHUNK`` entries at a time,
keeping only the entries inside clusters, and no Monte Carlo null is re-run.

Leave-one-out ALE without refitting
-----------------------------------
With ``L_v = sum_j log(1 - MA_jv)`` (so ``ALE_v = 1 - exp(L_v)``), the ALE
without experiment ``i`` is::

    ALE_{-i,v} = 1 - exp(L_v - log(1 - MA_iv))

and the drop it causes is ``ALE_v - ALE_{-i,v} = MA_iv * exp(L_v - log(1 - MA_iv))``
(from ``1 - ALE = (1 - ALE_{-i})(1 - MA_i)``), computed in that form so small
drops keep full relative precision. This equals refitting the ALE map
without the experiment (to rounding; ``tests/test_robustness.py`` checks it).

References
----------
Eickhoff SB, Nichols TE, Laird AR, et al. (2016) Behavior, sensitivity, and power
    of activation likelihood estimation characterized by massive empirical
    simulation. NeuroImage 137:70-85 (report each experiment's contribution to
    each cluster; beware clusters driven by one or two experiments).
Acar F, Seurinck R, Eickhoff SB, Moerkerke B (2018) Assessing robustness against
    potential publication bias in Activation Likelihood Estimation (ALE)
    meta-analyses for fMRI. PLoS ONE 13:e0208177 (Fail-safe N; code:
    github.com/NeuroStat/GenerateNull).
NiMARE (Salo et al.) ``nimare.diagnostics.Jackknife`` and ``FocusCounter``.
JALE (Frahm et al.) ``utils/contribution.py``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from alemap.corrections.cluster import label_clusters
from alemap.corrections.voxel import null_to_p
from alemap.data.experiment_set import ExperimentSet, FocusOrigin
from alemap.kernels.gaussian import kernel_cubes
from alemap.statistics.ale import MAMaps, ma_maps, mask_index_grid

__all__ = [
    "CONTRIBUTION_COLUMNS",
    "ROBUSTNESS_COLUMNS",
    "FailSafeN",
    "cluster_robustness",
    "contributions",
    "fail_safe_n",
    "leave_one_out_ale",
    "noise_experiments",
    "result_ma_maps",
    "robustness_tables",
]

CONTRIBUTION_COLUMNS = [
    "cluster", "experiment", "study", "n_subjects", "n_foci", "foci_in_cluster",
    "ma_sum", "ma_mean_pct", "contribution_pct", "jackknife", "jale_contribution_pct", "max_drop_pct",
]

#: MA entries (of ``ma_maps``, 12 bytes each) built at a time when the tables collect
#: the entries inside clusters: the whole MA maps of 1,000 experiments would take ~0.7 GB.
ENTRY_CHUNK = 4_000_000

ROBUSTNESS_COLUMNS = [
    "cluster", "voxels", "n_experiments", "n_foci", "top_experiment", "top_share_pct",
    "top2_share_pct", "max_jackknife_drop", "jackknife_top_experiment", "max_voxel_drop_pct",
    "driven_by_few", "survives_leave_one_out", "loo_min_voxels", "loo_weakest_experiment",
]


# ----------------------------------------------------------------------------- helpers


def result_ma_maps(result) -> MAMaps:
    """Sparse MA maps of the experiments of a fitted result.

    Rebuilt from ``result.ijk`` exactly as :meth:`alemap.ALE.fit` builds them
    (same kernels, same grid), so ``ale_from_ma(result_ma_maps(r))`` equals
    ``r.maps["ale"]``.

    Parameters
    ----------
    result : ALEResult
        A fitted result.

    Returns
    -------
    MAMaps
        One sparse MA map per experiment, in ``result.experiments`` order.
    """
    exps, grid = result.experiments, result.grid
    cubes = kernel_cubes(exps.n_subjects, float(grid.voxel_size[0]))
    return ma_maps(result.ijk, exps.offsets, cubes.index(exps.n_subjects), cubes, grid.mask)


def _ma_chunks(result):
    """The MA maps of :func:`result_ma_maps`, built ``ENTRY_CHUNK`` entries (at least one
    experiment) at a time: ``(first experiment, MAMaps of the chunk)`` in experiment order.

    Each experiment's map does not depend on the others, so the entries are
    those of :func:`result_ma_maps`, in the same order."""
    exps, grid = result.experiments, result.grid
    cubes = kernel_cubes(exps.n_subjects, float(grid.voxel_size[0]))
    coe = np.asarray(cubes.index(exps.n_subjects))
    offsets = np.asarray(exps.offsets, dtype=np.int64)
    per_focus = max(1, int(np.max(cubes.width)) ** 3)
    a = 0
    while a < exps.n_experiments:
        b = a + 1  # at least one experiment per chunk
        while b < exps.n_experiments and (offsets[b + 1] - offsets[a]) * per_focus <= ENTRY_CHUNK:
            b += 1
        fa, fb = offsets[a], offsets[b]
        yield a, ma_maps(result.ijk[fa:fb], offsets[a : b + 1] - fa, coe[a:b], cubes, grid.mask)
        a = b


def _cluster_chunks(result, labels: np.ndarray):
    """The MA entries that fall in a cluster, chunk of experiments by chunk
    (:func:`_ma_chunks`): (experiment, cluster, in-mask voxel, value) arrays, in
    experiment order."""
    for a, ma in _ma_chunks(result):
        lab = labels[ma.cols]
        sel = (lab > 0) & (ma.vals > 0)
        exp_of = np.repeat(np.arange(a, a + ma.n_experiments, dtype=np.int64), np.diff(ma.indptr))
        yield exp_of[sel], lab[sel], ma.cols[sel].astype(np.int64), ma.vals[sel]


def _cluster_log_sum(result, labels: np.ndarray) -> np.ndarray:
    """``L_v = sum_i log(1 - MA_iv)`` at the cluster voxels (0 elsewhere), added voxel by
    voxel in experiment order as :func:`_log_sum` does (the same bits there)."""
    log_sum = np.zeros(result.grid.n_voxels)
    for _, _, v, val in _cluster_chunks(result, labels):
        np.add.at(log_sum, v, np.log1p(-val))  # unbuffered, in entry order
    return log_sum


def _log_sum(ma: MAMaps) -> np.ndarray:
    """``L_v = sum_i log(1 - MA_iv)`` over experiments (ALE = -expm1(L))."""
    return np.bincount(ma.cols, weights=np.log1p(-ma.vals), minlength=ma.n_voxels)


def _experiment_index(result, experiment) -> int:
    if isinstance(experiment, (int, np.integer)):
        i = int(experiment)
        if not 0 <= i < result.experiments.n_experiments:
            raise IndexError(f"Experiment index {i} out of range (0..{result.experiments.n_experiments - 1}).")
        return i
    try:
        return result.experiments.names.index(experiment)
    except ValueError:
        raise KeyError(f"No experiment named {experiment!r} in the result.") from None


def leave_one_out_ale(result, experiment, ma: MAMaps | None = None) -> np.ndarray:
    """ALE map without one experiment, without refitting.

    ``ALE_{-i} = 1 - exp(L - log(1 - MA_i))`` with ``L = sum_j log(1 - MA_j)``
    (see the module docstring). Equal, to rounding, to the ALE map of a fit on
    the other experiments; this is the map NiMARE's ``Jackknife`` obtains by
    refitting (``nimare.diagnostics.Jackknife``) and JALE's contribution
    analysis by recomputing the union.

    Parameters
    ----------
    result : ALEResult
        A fitted result.
    experiment : int or str
        Index in ``result.experiments`` (canonical order) or experiment name.
    ma : MAMaps, optional
        MA maps of the result (:func:`result_ma_maps`), to avoid rebuilding them
        for each call. Without them, the maps are built and summed a chunk at a
        time (the same map, in less memory).

    Returns
    -------
    ndarray of float64
        In-mask ALE vector without the experiment.
    """
    i = _experiment_index(result, experiment)
    if ma is not None:
        log_sum = _log_sum(ma)
        cols, vals = ma.experiment(i)
    else:  # streamed: memory for one chunk of MA maps, not all of them
        log_sum = np.zeros(result.grid.n_voxels)
        for a, chunk in _ma_chunks(result):
            np.add.at(log_sum, chunk.cols, np.log1p(-chunk.vals))  # entry order, as _log_sum adds
            if a <= i < a + chunk.n_experiments:
                cols, vals = (x.copy() for x in chunk.experiment(i - a))
    log_sum[cols] -= np.log1p(-vals)
    return -np.expm1(log_sum)


def _cluster_labels(result) -> np.ndarray:
    if "clusters" not in result.maps:
        return np.zeros(result.grid.n_voxels, dtype=np.int64)
    return np.rint(np.asarray(result.maps["clusters"])).astype(np.int64)


def _foci_cluster(result, labels: np.ndarray) -> np.ndarray:
    """Cluster number (0: none) of each focus: the cluster its voxel belongs to."""
    grid = result.grid
    ijk = np.asarray(result.ijk, dtype=np.int64).reshape(-1, 3)
    out = np.zeros(ijk.shape[0], dtype=np.int64)
    inside = grid.in_grid(ijk)
    if inside.any():
        flat = np.ravel_multi_index(tuple(ijk[inside].T), grid.shape)
        mi = mask_index_grid(grid.mask)[flat]
        lab = np.zeros(mi.shape[0], dtype=np.int64)
        lab[mi >= 0] = labels[mi[mi >= 0]]
        out[inside] = lab
    return out


def _params(result) -> dict:
    return dict(result.provenance.get("parameters", {}))


# ----------------------------------------------------------------------------- contributions


def contributions(result) -> pd.DataFrame:
    """Contribution of each experiment to each significant cluster.

    For every significant cluster (numbers as in ``result.clusters`` and the
    ``clusters`` map) and every experiment with non-zero MA in it, with
    ``V`` the cluster's voxels, ``MA_i`` the experiment's MA map and
    ``ALE_{-i}`` the ALE without it (:func:`leave_one_out_ale`):

    ``ma_sum``
        ``sum_V MA_i`` (JALE).
    ``ma_mean_pct``
        ``100 * sum_V MA_i / |V|`` (JALE's per-voxel average, in %).
    ``contribution_pct``
        ``100 * sum_V MA_i / sum_j sum_V MA_j``: the experiment's share of the
        summed MA in the cluster (JALE's "contribution %"; sums to 100 per
        cluster). The share of *summed MA*, not of ALE itself, since ALE is
        a non-additive union.
    ``jackknife``
        ``mean_V (1 - ALE_{-i} / ALE)``: NiMARE's ``Jackknife`` value, the
        mean relative drop of ALE over the cluster when the experiment is left
        out (0..1).
    ``jale_contribution_pct``
        ``100 * (1 - mean_V(ALE_{-i} / ALE))`` renormalised so the values sum
        to 100 within the cluster (JALE).
    ``max_drop_pct``
        ``100 * (1 - min_V(ALE_{-i} / ALE))``: the largest single-voxel drop (JALE).
    ``foci_in_cluster``
        Number of the experiment's foci whose voxel (as placed for the fit,
        ``result.ijk``) lies in the cluster (NiMARE's ``FocusCounter``;
        NiMARE truncates mm to voxels and accepts a cluster voxel less than
        one voxel away, here the fit's own placement is used and the voxel
        must be in the cluster).

    JALE reports clusters of at least 5 voxels only; every significant cluster
    is reported here. No refit and no Monte Carlo: ALE_{-i} is computed in
    closed form (module docstring).

    Parameters
    ----------
    result : ALEResult
        A fitted result with a Monte Carlo null (``iterations > 0``); without
        one there are no significant clusters and the table is empty.

    Returns
    -------
    DataFrame
        Columns :data:`CONTRIBUTION_COLUMNS`, sorted by cluster, then
        ``contribution_pct`` descending (ties by experiment name).

    References
    ----------
    Eickhoff SB et al. (2016) NeuroImage 137:70-85. NiMARE
    ``nimare.diagnostics.Jackknife`` and ``FocusCounter``; JALE
    ``utils/contribution.py``.
    """
    labels = _cluster_labels(result)
    n_clusters = int(labels.max()) if labels.size else 0
    if n_clusters == 0:
        return pd.DataFrame(columns=CONTRIBUTION_COLUMNS)
    return _tables(result, labels, n_clusters, leave_one_out=False)[0]


def _tables(result, labels: np.ndarray, n_clusters: int, leave_one_out: bool):
    """(contributions table, leave-one-out per cluster or None) in two streamed passes over
    the MA maps: ``L`` at the cluster voxels, then the per-experiment sums and leave-one-outs."""
    log_sum = _cluster_log_sum(result, labels)
    loo = _LeaveOneOut(result, labels, n_clusters, log_sum) if leave_one_out else None
    n_exp = result.experiments.n_experiments
    parts = []
    for e, c, v, val in _cluster_chunks(result, labels):
        rest = np.exp(log_sum[v] - np.log1p(-val))  # 1 - ALE_{-i}
        drop = val * rest / -np.expm1(log_sum[v])  # 1 - ALE_{-i} / ALE, exactly (ALE > 0 inside clusters)
        keys, inv = np.unique(c * n_exp + e, return_inverse=True)  # chunks hold disjoint experiments
        max_drop = np.zeros(keys.size)
        np.maximum.at(max_drop, inv, drop)
        parts.append((keys, np.bincount(inv, weights=val, minlength=keys.size),
                      np.bincount(inv, weights=drop, minlength=keys.size), max_drop))
        if loo is not None:
            loo.add(e, c, v, val)
    keys, ma_sum, drop_sum, max_drop = (np.concatenate([q[k] for q in parts]) for k in range(4))
    order = np.argsort(keys, kind="stable")
    keys, ma_sum, drop_sum, max_drop = keys[order], ma_sum[order], drop_sum[order], max_drop[order]
    table = _contribution_table(result, labels, n_clusters, keys, ma_sum, drop_sum, max_drop)
    return table, (loo.result() if loo is not None else None)


def _contribution_table(result, labels, n_clusters, keys, ma_sum, drop_sum, max_drop) -> pd.DataFrame:
    """The contributions table from per-(cluster, experiment) sums, ``keys = cluster * n_exp + experiment`` ascending."""
    exps = result.experiments
    n_exp = exps.n_experiments
    k_cluster, k_exp = keys // n_exp, keys % n_exp
    n_vox = np.bincount(labels, minlength=n_clusters + 1)
    jack = drop_sum / n_vox[k_cluster]
    ma_total = np.bincount(k_cluster, weights=ma_sum, minlength=n_clusters + 1)
    jack_total = np.bincount(k_cluster, weights=jack, minlength=n_clusters + 1)
    foci_cluster = _foci_cluster(result, labels)
    fkey = foci_cluster * n_exp + exps.experiment_of_focus
    fcount = np.bincount(fkey[foci_cluster > 0], minlength=(n_clusters + 1) * n_exp)
    table = pd.DataFrame(
        {
            "cluster": k_cluster.astype(np.int64),
            "experiment": [exps.names[i] for i in k_exp],
            "study": [exps.studies[i] for i in k_exp],
            "n_subjects": exps.n_subjects[k_exp].astype(np.int64),
            "n_foci": exps.foci_counts[k_exp].astype(np.int64),
            "foci_in_cluster": fcount[keys].astype(np.int64),
            "ma_sum": ma_sum,
            "ma_mean_pct": 100.0 * ma_sum / n_vox[k_cluster],
            "contribution_pct": 100.0 * ma_sum / ma_total[k_cluster],
            "jackknife": jack,
            "jale_contribution_pct": 100.0 * jack / jack_total[k_cluster],
            "max_drop_pct": 100.0 * max_drop,
        },
        columns=CONTRIBUTION_COLUMNS,
    )
    table = table.sort_values(["cluster", "contribution_pct", "experiment"], ascending=[True, False, True], kind="stable")
    return table.reset_index(drop=True)


# ----------------------------------------------------------------------------- per-cluster summary


def cluster_robustness(
    result,
    contrib: pd.DataFrame | None = None,
    *,
    one_experiment_pct: float = 50.0,
    two_experiments_pct: float = 80.0,
) -> pd.DataFrame:
    """One row per significant cluster: how many experiments carry it, and how robust it is.

    Columns
    -------
    ``voxels``, ``n_experiments`` (experiments with MA in the cluster),
    ``n_foci`` (foci inside, :func:`contributions`' focus counter),
    ``top_experiment`` and ``top_share_pct`` (largest ``contribution_pct``),
    ``top2_share_pct`` (the two largest together),
    ``max_jackknife_drop`` (largest NiMARE jackknife value, the mean relative
    ALE drop over the cluster, 0..1) and ``jackknife_top_experiment`` (whose),
    ``max_voxel_drop_pct`` (largest single-voxel drop, %),
    ``driven_by_few``: ``top_share_pct > one_experiment_pct`` or
    ``top2_share_pct > two_experiments_pct``. Eickhoff et al. (2016) recommend
    reporting each cluster's contributing experiments and warn that clusters
    driven by one or two experiments are not a convergent finding; the 50 % /
    80 % cut-offs are conventions made explicit as parameters.

    ``survives_leave_one_out``: True when, for every experiment ``i``, the
    cluster keeps voxels with ``ALE_{-i}`` above the cluster-forming threshold
    and the component of those voxels around the original peak (or, when the
    peak itself falls below threshold, the largest remaining component)
    is still significant at cluster level: corrected p < alpha against the
    *same* Monte Carlo null maxima (size or mass, as the fit's
    ``cluster_stat``; alpha and connectivity from the fit's provenance). The
    criterion is the fit's own (:func:`alemap.corrections.voxel.null_to_p`
    < alpha), i.e. exceeding the ``(ceil(alpha n))``-th largest null maximum;
    ``np.quantile(null.size, 1 - alpha)`` differs from it only by the
    quantile's interpolation (a cluster exactly between two order statistics
    would pass the quantile and fail the fit's test), so the fit's criterion is
    used to keep an unchanged cluster significant. ``loo_min_voxels`` is the smallest remaining
    component over all leave-one-outs and ``loo_weakest_experiment`` whose
    removal leaves it.

    This is an **approximation**: a refit without experiment ``i`` would
    recompute the cluster-forming threshold (the analytic null of fewer
    experiments, usually a lower threshold) and the Monte Carlo null of
    cluster sizes (fewer foci, usually smaller clusters); both are reused from
    the full analysis here. Removing an experiment only lowers ALE, so the
    remaining component is always inside the original cluster.

    Parameters
    ----------
    result : ALEResult
        A fitted result with a Monte Carlo null.
    contrib : DataFrame, optional
        :func:`contributions` of ``result`` (computed when omitted).
    one_experiment_pct : float, default 50
        Share (%) above which one experiment alone flags the cluster.
    two_experiments_pct : float, default 80
        Joint share (%) above which the two largest contributors flag it.

    Returns
    -------
    DataFrame
        Columns :data:`ROBUSTNESS_COLUMNS`, one row per cluster in cluster order.

    References
    ----------
    Eickhoff SB, Nichols TE, Laird AR, et al. (2016) NeuroImage 137:70-85.
    NiMARE ``nimare.diagnostics.Jackknife``; JALE ``utils/contribution.py``.
    """
    return _both_tables(result, contrib, one_experiment_pct, two_experiments_pct)[1]


def robustness_tables(result) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`contributions` and :func:`cluster_robustness` (default cut-offs) of ``result``
    together, building the MA maps once less (as :meth:`ALEResult.save` writes them)."""
    return _both_tables(result, None, 50.0, 80.0)


def _both_tables(result, contrib, one_experiment_pct, two_experiments_pct):
    """(contributions, robustness); ``contrib`` (given) replaces the computed contributions."""
    labels = _cluster_labels(result)
    n_clusters = int(labels.max()) if labels.size else 0
    if n_clusters == 0:
        return pd.DataFrame(columns=CONTRIBUTION_COLUMNS), pd.DataFrame(columns=ROBUSTNESS_COLUMNS)
    table, loo = _tables(result, labels, n_clusters, leave_one_out=True)
    contrib = table if contrib is None else contrib
    n_vox = np.bincount(labels, minlength=n_clusters + 1)
    rows = []
    for c in range(1, n_clusters + 1):
        sub = contrib[contrib["cluster"] == c].sort_values("contribution_pct", ascending=False, kind="stable")
        shares = sub["contribution_pct"].to_numpy()
        top = float(shares[0]) if shares.size else 0.0
        top2 = float(shares[:2].sum()) if shares.size else 0.0
        jk = sub["jackknife"].to_numpy()
        j = int(np.argmax(jk)) if jk.size else None
        survives, min_vox, weakest = loo[c]
        rows.append(
            {
                "cluster": c,
                "voxels": int(n_vox[c]),
                "n_experiments": int(len(sub)),
                "n_foci": int(sub["foci_in_cluster"].sum()),
                "top_experiment": sub["experiment"].iloc[0] if len(sub) else None,
                "top_share_pct": top,
                "top2_share_pct": top2,
                "max_jackknife_drop": float(jk[j]) if j is not None else 0.0,
                "jackknife_top_experiment": sub["experiment"].iloc[j] if j is not None else None,
                "max_voxel_drop_pct": float(sub["max_drop_pct"].max()) if len(sub) else 0.0,
                "driven_by_few": bool(top > one_experiment_pct or top2 > two_experiments_pct),
                "survives_leave_one_out": bool(survives),
                "loo_min_voxels": int(min_vox),
                "loo_weakest_experiment": weakest,
            }
        )
    return contrib, pd.DataFrame(rows, columns=ROBUSTNESS_COLUMNS)


class _LeaveOneOut:
    """Per cluster: does it survive leaving out each experiment, its smallest remnant and
    whose removal leaves it; fed the cluster MA entries chunk by chunk (:meth:`add`)."""

    def __init__(self, result, labels: np.ndarray, n_clusters: int, log_sum: np.ndarray):
        params = _params(result)
        self.alpha = float(params.get("alpha", 0.05))
        self.connectivity = int(params.get("connectivity", 6))
        stat = params.get("cluster_stat", "size")
        self.use_size = stat == "size"
        self.null = result.null_maxima.size if self.use_size else result.null_maxima.mass
        self.cut = float(result.thresholds["cluster_forming_ale"])
        self.names = result.experiments.names
        self.log_sum = log_sum
        self.local = np.full(result.grid.n_voxels, -1, dtype=np.int64)  # index within its cluster
        ale = -np.expm1(log_sum)
        self.clusters = {}
        for c in range(1, n_clusters + 1):
            members = np.flatnonzero(labels == c)
            self.local[members] = np.arange(members.size)
            local_ijk = result.grid.mask_ijk[members].astype(np.int64)
            local_ijk -= local_ijk.min(axis=0)
            box_shape = tuple(int(s) for s in local_ijk.max(axis=0) + 1)
            ale_c = ale[members]
            # state: [survives, smallest remnant, experiment leaving it]
            self.clusters[c] = (local_ijk, box_shape, int(np.argmax(ale_c)), ale_c, [True, members.size, None])

    def add(self, e, c, v, val) -> None:
        """Leave out, in turn, each experiment of these entries (experiment order; clusters apart)."""
        for cl in np.unique(c):
            sel = c == cl
            e_c, v_c, val_c = e[sel], v[sel], val[sel]
            starts = np.flatnonzero(np.r_[True, e_c[1:] != e_c[:-1]])  # each experiment's entries are one run
            for s0, s1 in zip(starts, np.r_[starts[1:], e_c.size]):
                self._leave_out(int(cl), int(e_c[s0]), v_c[s0:s1], val_c[s0:s1])

    def _leave_out(self, c: int, i: int, v, val) -> None:
        local_ijk, box_shape, peak, ale_c, state = self.clusters[c]
        ale_i = ale_c.copy()
        ale_i[self.local[v]] = -np.expm1(self.log_sum[v] - np.log1p(-val))
        supra = ale_i > self.cut
        if supra.all():  # the whole (connected) cluster stays: no labelling needed
            keep = supra
        elif supra.any():
            box = np.zeros(box_shape, dtype=bool)
            box[tuple(local_ijk[supra].T)] = True
            lab_box, n = label_clusters(box, self.connectivity)
            comp = lab_box[tuple(local_ijk.T)]  # component of each member voxel (0: below)
            if comp[peak] > 0:
                keep = comp == comp[peak]
            else:
                counts = np.bincount(comp, minlength=n + 1)[1:]
                keep = comp == int(np.argmax(counts)) + 1
        else:
            keep = supra
        size = int(keep.sum())
        mass = float((ale_i[keep] - self.cut).sum()) if size else 0.0
        value = size if self.use_size else mass
        ok = size > 0 and bool(null_to_p(np.array([value]), self.null)[0] < self.alpha)
        state[0] = state[0] and ok
        if size < state[1] or state[2] is None:
            state[1], state[2] = size, self.names[i]

    def result(self) -> dict:
        """Cluster -> (survives every leave-one-out, smallest remnant, experiment leaving it)."""
        return {c: tuple(entry[-1]) for c, entry in self.clusters.items()}


# ----------------------------------------------------------------------------- fail-safe N


@dataclass(frozen=True)
class FailSafeN:
    """Result of :func:`fail_safe_n`.

    Attributes
    ----------
    fsn : int
        Number of noise experiments the cluster withstood: significant with
        ``fsn`` added and not with ``fsn + 1`` (the bisection's boundary; 0 if
        it failed at every tested count; ``k_max`` when censored).
    cluster : int
        Cluster number in the reference result.
    peak_mm : tuple of float
        Peak of the cluster (MNI mm); a refit's cluster is the significant
        cluster containing this voxel.
    n_experiments : int
        Experiments in the meta-analysis (``n``).
    k_min, k_max : int
        Search bounds (noise experiments).
    censored : bool
        True when the cluster survived ``k_max`` noise experiments: the true
        FSN is at least ``fsn = k_max``.
    rosenthal_min : int
        ``5 n + 10`` (Rosenthal's tolerance level, used by Acar et al. as a minimum).
    robust_by_rosenthal : bool
        ``fsn >= rosenthal_min``. When ``censored`` and ``k_max < rosenthal_min``
        the search could not reach the criterion, so False then means "not shown".
    iterations : int
        Monte Carlo iterations of every refit.
    seed : int
        Seed of the noise experiments and of every refit's Monte Carlo null.
    evaluations : tuple of (int, bool)
        Every refit: number of noise experiments added and whether the cluster
        was significant, in the order run.
    """

    fsn: int
    cluster: int
    peak_mm: tuple
    n_experiments: int
    k_min: int
    k_max: int
    censored: bool
    rosenthal_min: int
    robust_by_rosenthal: bool
    iterations: int
    seed: int
    evaluations: tuple = field(default=())


def noise_experiments(experiments: ExperimentSet, grid, k: int, rng: np.random.Generator, prefix: str = "fsn_noise_") -> ExperimentSet:
    """``k`` noise experiments as in Acar et al. (2018), ``GenerateNull.R``.

    Each noise experiment's focus count and sample size are drawn (with
    replacement, independently, as ``GenerateNull.R`` does) from those of the
    observed experiments; its foci are distinct in-mask voxels of ``grid``
    drawn uniformly without replacement (``GenerateNull.R`` draws from
    GingerALE's MNI mask; here the analysis mask), given as voxel centres in
    MNI mm. The experiments are drawn one after the other, so the first
    ``k'`` of ``k`` are the same for any ``k >= k'`` (nested sets).

    Parameters
    ----------
    experiments : ExperimentSet
        The observed experiments.
    grid : Grid
        Analysis grid (its mask is the sampling space).
    k : int
        Number of noise experiments.
    rng : numpy.random.Generator
        Source of randomness.
    prefix : str
        Name prefix; names are ``prefix + 5-digit number``.

    Returns
    -------
    ExperimentSet
    """
    counts = np.asarray(experiments.foci_counts)
    sizes = np.asarray(experiments.n_subjects)
    mask_ijk = grid.mask_ijk
    n_mask = mask_ijk.shape[0]
    records = []
    for j in range(k):  # one experiment after the other: the first k' of k are those of k'
        n_foci = int(counts[rng.integers(counts.shape[0])])
        n_subj = int(sizes[rng.integers(sizes.shape[0])])
        vox = rng.choice(n_mask, size=min(n_foci, n_mask), replace=False)
        name = f"{prefix}{j + 1:05d}"
        xyz = grid.ijk_to_mm(mask_ijk[vox])
        records.append(
            {
                "name": name, "study": name, "n_subjects": n_subj, "space": "MNI", "xyz": xyz,
                "origins": [FocusOrigin("fail-safe N noise", 0)] * len(xyz),
            }
        )
    return ExperimentSet.from_records(records)


def fail_safe_n(
    result_or_experiments,
    cluster: int = 1,
    *,
    k_min: int | None = None,
    k_max: int | None = None,
    iterations: int = 1000,
    seed: int = 0,
    jobs: int = 1,
    **ale_params,
) -> FailSafeN:
    """Fail-safe N of a cluster: how many noise experiments it withstands.

    Acar et al. (2018): add ``k`` noise experiments (no true effect; see
    :func:`noise_experiments`) to the meta-analysis, refit, and find the
    largest ``k`` for which the cluster of interest is still significant.
    The noise experiments are generated once (``k_max`` of them, from
    ``numpy.random.default_rng(seed)``) and the first ``k`` are added, so the
    sets are nested as in Acar's procedure. The search is the bisection of
    ``algorithm_step4.R``: ``k_min`` is tested first, then ``k_max``; if the
    cluster survives ``k_max`` the result is censored (``fsn = k_max``),
    otherwise the interval between the last significant and the first
    non-significant count is halved until they are adjacent. If the cluster
    already fails at ``k_min``, the search continues between 0 (the original
    analysis, taken as significant without a refit) and ``k_min``.

    In a refit, "the cluster" is the significant cluster (cluster-level FWE,
    the fit's ``cluster_stat``) that contains the original cluster's peak
    voxel. The bisection assumes significance falls monotonically with ``k``.
    It need not: each added experiment changes the cluster-forming threshold
    and the Monte Carlo null, and a cluster near the cluster-level threshold
    can pass at some ``k`` and fail at a smaller one. The result is then one
    boundary (significant at ``fsn``, not at ``fsn + 1``), not necessarily the
    largest ``k`` at which the cluster is significant; ``evaluations`` lists
    every refit.

    **Expensive**: every step refits the whole analysis, Monte Carlo null
    included (``2 + log2(k_max - k_min)`` refits or so, each with
    ``n + k`` experiments). Use a modest ``iterations`` (e.g. 1000) and
    ``jobs``.

    Parameters
    ----------
    result_or_experiments : ALEResult or ExperimentSet
        A fitted result (its parameters, mask and experiments are reused), or
        experiments, which are first fitted with ``ALE(iterations, seed,
        **ale_params)`` to locate the cluster.
    cluster : int, default 1
        Cluster number in the (reference) result's cluster table.
    k_min : int, optional
        Lower search bound; default ``2 n`` (Acar et al. suggest searching
        between 2 n and 10 n; ``5 n + 10`` is Rosenthal's minimum).
    k_max : int, optional
        Upper search bound; default ``10 n + 10`` (``GenerateNull.R``'s default count).
    iterations : int, default 1000
        Monte Carlo iterations of every refit.
    seed : int, default 0
        Seed of the noise experiments and of every refit's Monte Carlo null.
    jobs : int, default 1
        Threads of each refit's Monte Carlo null.
    **ale_params
        Other :class:`alemap.ALE` parameters (override the result's; the mask
        is always the reference result's grid).

    Returns
    -------
    FailSafeN

    References
    ----------
    Acar F, Seurinck R, Eickhoff SB, Moerkerke B (2018) PLoS ONE 13:e0208177;
    github.com/NeuroStat/GenerateNull (``GenerateNull.R``, ``algorithm_step4.R``).
    Rosenthal R (1979) Psychol Bull 86:638-641.
    """
    from alemap.estimator import ALE

    if isinstance(result_or_experiments, ExperimentSet):
        params = dict(ale_params)
        params.update(iterations=iterations, seed=seed, quiet=True, jobs=jobs)
        reference = ALE(**params).fit(result_or_experiments)
        params = {k: v for k, v in params.items() if k not in ("iterations", "seed", "quiet", "jobs")}
    else:
        reference = result_or_experiments
        accepted = set(inspect.signature(ALE).parameters) - {"iterations", "seed", "jobs", "mask", "quiet"}
        params = {k: v for k, v in _params(reference).items() if k in accepted}
        params.update(ale_params)
    params["mask"] = reference.grid
    grid = reference.grid
    experiments = reference.experiments
    n = experiments.n_experiments
    labels = _cluster_labels(reference)
    members = np.flatnonzero(labels == int(cluster))
    if members.size == 0:
        raise ValueError(f"The result has no significant cluster {cluster} (it has {int(labels.max())}).")
    peak = int(members[np.argmax(reference.maps["ale"][members])])
    peak_mm = tuple(float(x) for x in grid.ijk_to_mm(grid.mask_ijk[peak])[0])
    k_min = 2 * n if k_min is None else int(k_min)
    k_max = 10 * n + 10 if k_max is None else int(k_max)
    if not 0 <= k_min <= k_max:
        raise ValueError(f"Need 0 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}.")

    rng = np.random.default_rng(seed)
    prefix = "fsn_noise_"
    while any(name.startswith(prefix) for name in experiments.names):
        prefix = "_" + prefix
    noise = noise_experiments(experiments, grid, k_max, rng, prefix).to_records()
    base = experiments.to_records()
    estimator = ALE(iterations=iterations, seed=seed, quiet=True, jobs=jobs, **params)
    evaluations: list[tuple[int, bool]] = []
    cache: dict[int, bool] = {}

    def significant(k: int) -> bool:
        if k not in cache:
            res = estimator.fit(ExperimentSet.from_records(base + noise[:k]))
            cache[k] = bool(_cluster_labels(res)[peak] > 0)
            evaluations.append((k, cache[k]))
        return cache[k]

    censored = False
    if significant(k_min):
        if significant(k_max):
            lo, hi, censored = k_max, k_max, True
        else:
            lo, hi = k_min, k_max
    else:
        lo, hi = 0, k_min
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if significant(mid):
            lo = mid
        else:
            hi = mid
    fsn = lo
    rosenthal = 5 * n + 10
    return FailSafeN(
        fsn=int(fsn), cluster=int(cluster), peak_mm=peak_mm, n_experiments=n, k_min=k_min, k_max=k_max,
        censored=censored, rosenthal_min=rosenthal, robust_by_rosenthal=bool(fsn >= rosenthal),
        iterations=int(iterations), seed=int(seed), evaluations=tuple(evaluations),
    )
