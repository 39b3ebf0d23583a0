"""Cluster robustness diagnostics (alemap.reporting.robustness) on constructed data.

The data (a 40^3 box grid, every voxel in the mask):

- cluster "A": 8 experiments ("a000".."a007", 20 subjects) each with one focus
  within one voxel (<= 3.5 mm) of point A, plus 2 background foci;
- cluster "B": one experiment ("dom000", 1000 subjects) with 27 foci filling the
  3x3x3 voxels around point B, plus two small experiments ("help000",
  "help001", 12 subjects) with one focus 2 mm from B each: B is driven by
  "dom000" (about 57 % of the summed MA; B cannot survive without it);
- 8 background experiments ("bg000".., 4 random foci each, far from A and B).

The Fail-safe N tests use a second data set (:func:`_fsn_experiments`): a
strong cluster of 10 convergent experiments and a weak one of 5.

Everything is seeded and deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest

from _simulate import box_grid, records
from alemap import ALE, ExperimentSet
from alemap.reporting.robustness import (
    CONTRIBUTION_COLUMNS,
    ROBUSTNESS_COLUMNS,
    FailSafeN,
    cluster_robustness,
    contributions,
    fail_safe_n,
    leave_one_out_ale,
    noise_experiments,
    result_ma_maps,
    robustness_tables,
)

SHAPE = (40, 40, 40)
CENTRE = np.array(SHAPE) // 2
A = CENTRE - [8, 0, 0]
B = CENTRE + [8, 0, 0]


def _experiments(grid) -> ExperimentSet:
    rng = np.random.default_rng(3)
    mask_ijk = grid.mask_ijk
    far = mask_ijk[(np.linalg.norm(mask_ijk - A, axis=1) > 8) & (np.linalg.norm(mask_ijk - B, axis=1) > 8)]
    a_ijk = [np.vstack([A + rng.integers(-1, 2, size=3), far[rng.choice(len(far), 2, replace=False)]]) for _ in range(8)]
    blob = np.array([B + [i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])
    helpers = [np.vstack([B + [0, 2 * h - 1, 0], far[rng.choice(len(far), 2, replace=False)]]) for h in range(2)]
    bg = [far[rng.choice(len(far), 4, replace=False)] for _ in range(8)]
    recs = (
        records(grid, a_ijk, [20] * 8, prefix="a")
        + records(grid, [blob], [1000], prefix="dom")
        + records(grid, helpers, [12, 12], prefix="help")
        + records(grid, bg, rng.integers(10, 30, size=8), prefix="bg")
    )
    return ExperimentSet.from_records(recs)


@pytest.fixture(scope="module")
def grid():
    return box_grid(SHAPE)


@pytest.fixture(scope="module")
def result(grid):
    return ALE(iterations=500, seed=1, quiet=True, mask=grid).fit(_experiments(grid))


@pytest.fixture(scope="module")
def cluster_ids(result):
    """Cluster number containing A and containing B."""
    labels = result.grid.to_volume(result.maps["clusters"], dtype=np.int64)
    a, b = int(labels[tuple(A)]), int(labels[tuple(B)])
    assert a > 0 and b > 0 and a != b, "both constructed clusters must be significant"
    return {"A": a, "B": b}


@pytest.fixture(scope="module")
def contrib(result):
    return contributions(result)


@pytest.fixture(scope="module")
def robust(result, contrib):
    return cluster_robustness(result, contrib)


def test_contribution_table_shape_and_order(result, contrib):
    assert list(contrib.columns) == CONTRIBUTION_COLUMNS
    assert set(contrib["cluster"]) == set(result.clusters["cluster"])
    assert contrib["cluster"].is_monotonic_increasing
    for _, sub in contrib.groupby("cluster"):
        assert np.all(np.diff(sub["contribution_pct"].to_numpy()) <= 0)
        assert (sub["ma_sum"] > 0).all()


def test_shares_sum_to_100(contrib):
    for _, sub in contrib.groupby("cluster"):
        assert sub["contribution_pct"].sum() == pytest.approx(100.0, abs=1e-9)
        assert sub["jale_contribution_pct"].sum() == pytest.approx(100.0, abs=1e-9)


def test_jackknife_identifies_dominant_experiment(contrib, robust, cluster_ids):
    sub_b = contrib[contrib["cluster"] == cluster_ids["B"]]
    assert sub_b["experiment"].iloc[0] == "dom000"  # largest share
    assert sub_b.loc[sub_b["jackknife"].idxmax(), "experiment"] == "dom000"
    assert sub_b.loc[sub_b["max_drop_pct"].idxmax(), "experiment"] == "dom000"
    row_b = robust.set_index("cluster").loc[cluster_ids["B"]]
    assert row_b["top_experiment"] == "dom000" and row_b["jackknife_top_experiment"] == "dom000"
    assert row_b["top_share_pct"] > 50.0
    # in A no experiment stands out: 8 near-equal contributors
    sub_a = contrib[contrib["cluster"] == cluster_ids["A"]]
    assert sub_a["contribution_pct"].max() < 20.0
    assert sub_a["experiment"].iloc[:8].str.startswith("a").all()


def test_driven_by_few_and_leave_one_out(robust, cluster_ids):
    assert list(robust.columns) == ROBUSTNESS_COLUMNS
    rows = robust.set_index("cluster")
    a, b = rows.loc[cluster_ids["A"]], rows.loc[cluster_ids["B"]]
    assert bool(b["driven_by_few"]) and not bool(a["driven_by_few"])
    assert not bool(b["survives_leave_one_out"]) and b["loo_weakest_experiment"] == "dom000"
    assert bool(a["survives_leave_one_out"])
    assert a["n_experiments"] >= 8 and a["max_jackknife_drop"] < 0.2


def test_driven_by_few_thresholds_are_parameters(result, contrib, cluster_ids):
    rows = cluster_robustness(result, contrib).set_index("cluster")
    top, top2 = rows.loc[cluster_ids["B"], ["top_share_pct", "top2_share_pct"]]
    loose = cluster_robustness(result, contrib, one_experiment_pct=top + 1, two_experiments_pct=top2 + 1)
    assert not loose.set_index("cluster").loc[cluster_ids["B"], "driven_by_few"]
    strict = cluster_robustness(result, contrib, one_experiment_pct=top + 1, two_experiments_pct=top2 - 1)
    assert strict.set_index("cluster").loc[cluster_ids["B"], "driven_by_few"]


def test_focus_counter(result, contrib, robust, cluster_ids):
    labels = result.grid.to_volume(result.maps["clusters"], dtype=np.int64)
    exps = result.experiments
    expected = {}
    for e in range(exps.n_experiments):
        ijk = result.ijk[exps.offsets[e] : exps.offsets[e + 1]]
        for c in labels[tuple(ijk.T)]:
            if c > 0:
                expected[(int(c), exps.names[e])] = expected.get((int(c), exps.names[e]), 0) + 1
    got = {(int(r.cluster), r.experiment): int(r.foci_in_cluster) for r in contrib.itertuples() if r.foci_in_cluster}
    assert got == expected
    by = {(int(r.cluster), r.experiment): int(r.foci_in_cluster) for r in contrib.itertuples()}
    assert by[(cluster_ids["B"], "dom000")] == 27
    assert by[(cluster_ids["B"], "help000")] == 1 and by[(cluster_ids["B"], "help001")] == 1
    for k in range(8):
        assert by[(cluster_ids["A"], f"a{k:03d}")] == 1
    assert not any(name.startswith("bg") for (_, name) in got)
    rows = robust.set_index("cluster")
    assert rows.loc[cluster_ids["B"], "n_foci"] == 29 and rows.loc[cluster_ids["A"], "n_foci"] == 8


@pytest.mark.parametrize("name", ["dom000", "a003", "bg002"])
def test_leave_one_out_equals_refit(result, grid, name):
    exps = result.experiments
    i = exps.names.index(name)
    others = [j for j in range(exps.n_experiments) if j != i]
    refit = ALE(iterations=0, quiet=True, mask=grid).fit(exps.select(others))
    shortcut = leave_one_out_ale(result, name)
    assert np.max(np.abs(shortcut - refit.maps["ale"])) <= 1e-12
    assert np.array_equal(leave_one_out_ale(result, i), shortcut)
    assert np.array_equal(leave_one_out_ale(result, i, ma=result_ma_maps(result)), shortcut)


@pytest.mark.parametrize("chunk", [1, 3000])
def test_leave_one_out_does_not_depend_on_the_streaming_chunk(result, monkeypatch, chunk):
    """Without MA maps given, leave_one_out_ale sums them a chunk at a time: the same bits
    as from the whole maps, whichever chunk holds the experiment left out."""
    from alemap.reporting import robustness

    ma = result_ma_maps(result)
    whole = [leave_one_out_ale(result, i, ma=ma) for i in (0, 7, result.experiments.n_experiments - 1)]
    monkeypatch.setattr(robustness, "ENTRY_CHUNK", chunk)
    for i, expected in zip((0, 7, result.experiments.n_experiments - 1), whole):
        assert np.array_equal(leave_one_out_ale(result, i), expected)


def test_jackknife_matches_refit_definition(result, grid, contrib, cluster_ids):
    """NiMARE's value: mean over the cluster of 1 - ALE_{-i}/ALE, ALE_{-i} from a refit."""
    exps = result.experiments
    ale = result.maps["ale"]
    for key, name in (("B", "dom000"), ("A", "a005")):
        c = cluster_ids[key]
        i = exps.names.index(name)
        refit = ALE(iterations=0, quiet=True, mask=grid).fit(exps.select([j for j in range(exps.n_experiments) if j != i]))
        members = result.maps["clusters"] == c
        ratio = refit.maps["ale"][members] / ale[members]
        row = contrib[(contrib["cluster"] == c) & (contrib["experiment"] == name)].iloc[0]
        assert row["jackknife"] == pytest.approx(np.mean(1 - ratio), abs=1e-12)
        assert row["max_drop_pct"] == pytest.approx(100 * (1 - ratio.min()), abs=1e-9)


@pytest.mark.parametrize("chunk", [1, 3000])
def test_tables_do_not_depend_on_the_streaming_chunk(result, contrib, robust, monkeypatch, chunk):
    """The MA maps are streamed ENTRY_CHUNK entries at a time (at least one experiment per
    chunk): one experiment per chunk, or a few, gives the same tables, bit for bit."""
    import pandas as pd

    from alemap.reporting import robustness

    assert result.experiments.n_foci * 17**3 <= robustness.ENTRY_CHUNK  # the fixtures: one chunk
    monkeypatch.setattr(robustness, "ENTRY_CHUNK", chunk)
    seen = []
    real = robustness.ma_maps
    monkeypatch.setattr(robustness, "ma_maps", lambda *a: seen.append(len(a[1]) - 1) or real(*a))
    c2, r2 = robustness_tables(result)
    assert len(seen) > 2 and sum(seen) == 2 * result.experiments.n_experiments  # two passes, several chunks
    pd.testing.assert_frame_equal(c2, contrib, check_exact=True)
    pd.testing.assert_frame_equal(r2, robust, check_exact=True)
    pd.testing.assert_frame_equal(cluster_robustness(result), robust, check_exact=True)


def test_no_null_gives_empty_tables(result, grid):
    res0 = ALE(iterations=0, quiet=True, mask=grid).fit(result.experiments)
    assert contributions(res0).empty and list(contributions(res0).columns) == CONTRIBUTION_COLUMNS
    assert cluster_robustness(res0).empty


def test_noise_experiments(result, grid):
    exps = result.experiments
    noise = noise_experiments(exps, grid, 25, np.random.default_rng(0))
    assert noise.n_experiments == 25
    assert set(noise.foci_counts) <= set(exps.foci_counts)
    assert set(noise.n_subjects) <= set(exps.n_subjects)
    ijk = grid.mm_to_continuous_ijk(noise.xyz)
    assert np.allclose(ijk, np.round(ijk)) and grid.mask[tuple(np.round(ijk).astype(int).T)].all()
    for e in range(noise.n_experiments):  # foci of one experiment without replacement
        assert len({tuple(p) for p in noise.foci(e)}) == noise.foci_counts[e]
    # seeded and nested: the first 10 of 25 are the 10 drawn alone
    first = noise_experiments(exps, grid, 10, np.random.default_rng(0))
    assert first.names == noise.names[:10]
    assert np.array_equal(first.n_subjects, noise.n_subjects[:10])
    assert np.array_equal(first.xyz, noise.xyz[: first.n_foci])


def _fsn_experiments(grid) -> ExperimentSet:
    """Strong cluster (10 convergent experiments at A), weak cluster (5 at B), 10 background
    experiments; all with 20 subjects and 3 foci, so noise experiments look like them."""
    rng = np.random.default_rng(5)
    mask_ijk = grid.mask_ijk
    a, b = FSN_CENTRE - [6, 0, 0], FSN_CENTRE + [6, 0, 0]
    far = mask_ijk[(np.linalg.norm(mask_ijk - a, axis=1) > 7) & (np.linalg.norm(mask_ijk - b, axis=1) > 7)]

    def convergent(point, n, prefix):
        ijk = [np.vstack([point + rng.integers(-1, 2, size=3), far[rng.choice(len(far), 2, replace=False)]])
               for _ in range(n)]
        return records(grid, ijk, [20] * n, prefix=prefix)

    background = [far[rng.choice(len(far), 3, replace=False)] for _ in range(10)]
    recs = convergent(a, 10, "strong") + convergent(b, 5, "weak") + records(grid, background, [20] * 10, prefix="bg")
    return ExperimentSet.from_records(recs)


FSN_SHAPE = (30, 30, 30)
FSN_CENTRE = np.array(FSN_SHAPE) // 2


@pytest.fixture(scope="module")
def fsn_case():
    grid = box_grid(FSN_SHAPE)
    res = ALE(iterations=500, seed=1, quiet=True, mask=grid).fit(_fsn_experiments(grid))
    labels = grid.to_volume(res.maps["clusters"], dtype=np.int64)
    strong = int(labels[tuple(FSN_CENTRE - [6, 0, 0])])
    weak = int(labels[tuple(FSN_CENTRE + [6, 0, 0])])
    assert strong > 0 and weak > 0 and strong != weak
    return grid, res, strong, weak


def test_fail_safe_n_bisection_and_monotonicity(fsn_case):
    """10 convergent experiments withstand more noise experiments than 5.

    Measured on these data (refits with 200 iterations, seed 0): the weak
    cluster's component shrinks from 74 voxels (k = 0) to 49 (k = 60) against
    a cluster-size threshold of 49-76 (it varies with k: each refit has its
    own null), the strong one from 197 to 121, so at k_max = 60 the strong
    cluster survives with a wide margin (121 vs 59) and the weak one does not
    (49 vs 59). Significance is not monotone in k near the weak cluster's
    boundary (significant at 40, not at 34): the test only relies on the
    bisection's invariant (significant at fsn, not at fsn + 1)."""
    grid, res, strong, weak = fsn_case
    kw = dict(k_min=2, k_max=60, iterations=200, seed=0)
    fsn_strong = fail_safe_n(res, strong, **kw)
    fsn_weak = fail_safe_n(res, weak, **kw)
    for f in (fsn_strong, fsn_weak):
        assert isinstance(f, FailSafeN)
        assert f.k_min <= f.fsn <= f.k_max
        assert f.n_experiments == res.experiments.n_experiments == 25
        assert f.rosenthal_min == 5 * 25 + 10 and f.robust_by_rosenthal == (f.fsn >= f.rosenthal_min)
        assert f.iterations == 200 and f.seed == 0
        sig = dict(f.evaluations)
        # bisection ends on adjacent counts: significant at fsn, not at fsn + 1 (unless censored)
        assert sig[f.fsn] if f.fsn in sig else f.fsn == 0
        assert f.censored or sig[f.fsn + 1] is False
    assert fsn_strong.censored and fsn_strong.fsn == 60
    assert not fsn_weak.censored and fsn_weak.fsn < fsn_strong.fsn


def test_fail_safe_n_from_experiments(fsn_case):
    """An ExperimentSet is fitted first with the same settings, then searched."""
    grid, res, strong, _ = fsn_case
    f = fail_safe_n(res.experiments, strong, k_min=1, k_max=3, iterations=200, seed=0, mask=grid)
    assert 0 <= f.fsn <= 3 and f.k_max == 3 and f.iterations == 200
    with pytest.raises(ValueError):
        fail_safe_n(res, 99, k_min=1, k_max=2, iterations=10)
    with pytest.raises(ValueError):
        fail_safe_n(res, strong, k_min=5, k_max=2, iterations=10)
