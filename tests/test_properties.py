"""Statistical and engine properties of ALE on simulated data.

1. Calibration under the null (foci uniform in the mask): analytic-null voxel
   p-values are uniform in their upper tail; the Monte Carlo FWE p-values of
   the observed maxima are uniform; voxel- and cluster-level FWE rates are near
   alpha.
2. Invariances: experiment order, thread count.
3. The optimized Monte Carlo engine (``alemap.inference.cpu``) equals a slow,
   plainly written numpy/scipy reference on the same relocated foci.
4. Foci at the grid edge or outside the mask keep every map in range.

Everything is seeded; the tests are deterministic. Simulated data come from
``tests/_simulate.py``. Statistical tolerances are justified where they are set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats

from _simulate import box_grid, ellipsoid_grid, null_experiments, null_records, records, sphere_grid
from alemap import ALE, ExperimentSet
from alemap.inference import cpu
from alemap.inference.montecarlo import batch_draws
from alemap.inference.plan import make_plan, window_tables
from alemap.kernels import ale_kernel
from alemap.kernels.gaussian import kernel_cubes
from alemap.space.grid import load_mni152_2mm

ALPHA = 0.05


@pytest.fixture(scope="module")
def mni():
    return load_mni152_2mm()


@pytest.fixture(scope="module")
def sphere():
    return sphere_grid()  # 30^3 voxels of 2 mm, 10,144 in the spherical mask


def _check_maps_in_range(result) -> None:
    maps = result.maps
    ale = maps["ale"]
    assert np.all(np.isfinite(ale)) and ale.min() >= 0.0 and ale.max() <= 1.0
    assert np.all((maps["p"] > 0.0) & (maps["p"] <= 1.0))
    for key in ("z", "z_fdr", "z_vfwe", "z_cfwe"):
        if key in maps:
            assert np.all(np.isfinite(maps[key])), key
    if "p_vfwe" in maps:
        assert np.all((maps["p_vfwe"] > 0.0) & (maps["p_vfwe"] <= 1.0))
    m = result.null_maxima
    assert np.all(np.isfinite(m.ale)) and m.ale.min() >= 0.0 and m.ale.max() <= 1.0
    assert m.size.min() >= 0 and np.all(np.isfinite(m.mass)) and m.mass.min() >= 0.0


# --------------------------------------------------------------------------------------
# 1. Calibration under the null
# --------------------------------------------------------------------------------------

P_LEVELS = np.array([0.5, 0.1, 0.05, 0.01, 0.001])


def test_analytic_p_uniform_under_null(mni):
    """P(p <= t) ~= t for voxel-wise analytic-null p-values of null data (real MNI mask).

    Voxels of one data set are strongly correlated (kernels span ~17 voxels), so
    voxels are not independent samples. Each of D independent simulated data sets
    contributes one number per level, the fraction of its in-mask voxels with
    p <= t; the D fractions are independent, and their standard error (SE) is
    estimated from their spread. We accept |mean - t| <= 4 SE + 0.05 t:
    - 4 SE: sampling error of the mean of D independent fractions (a 4-sigma band
      is about a 1e-4 chance per level for a correct method);
    - 0.05 t: the analytic null is exact only for a spatially stationary MA
      distribution (it draws every voxel's MA from the whole-mask histogram);
      mask edges break stationarity a little, and p includes the mass of the
      observed value's own 1e-5 bin (conservative by up to one bin). Measured on
      the MNI mask over 100 data sets of this design: P(p <= t) / t = 0.974,
      0.995, 0.999, 0.998, 1.003 for t = 0.5 ... 0.001 (the mid-bin p is within
      0.6% everywhere, so the 2.6% at t = 0.5 is the own-bin mass). On a
      10k-voxel sphere the edge effect reaches +15% at t = 0.001, which is why
      this test uses the real mask.
    Over four seeds the largest |mean - t| was 0.48 of the tolerance.
    """
    rng = np.random.default_rng(20240611)
    n_datasets = 20
    fractions = np.empty((n_datasets, P_LEVELS.size))
    for d in range(n_datasets):
        exps = null_experiments(rng, mni, 20, foci=(4, 12), subjects=(8, 40))
        p = ALE(iterations=0, mask=mni, quiet=True).fit(exps).maps["p"]
        fractions[d] = [(p <= t).mean() for t in P_LEVELS]
    mean = fractions.mean(axis=0)
    se = fractions.std(axis=0, ddof=1) / np.sqrt(n_datasets)
    tol = 4 * se + 0.05 * P_LEVELS
    assert np.all(np.abs(mean - P_LEVELS) <= tol), (mean, P_LEVELS, tol)
    # the test has power: the band is narrow compared to the levels checked
    assert np.all(tol < 0.35 * P_LEVELS)


# One set of null fits, shared by the Monte Carlo calibration tests below.
N_NULL_DATASETS = 120
N_NULL_ITERATIONS = 200


def _max_cluster(ale_volume: np.ndarray, cut: float, connectivity: int = 6) -> tuple[int, float]:
    """Largest cluster size and mass of ``ale_volume > cut`` (independent of alemap)."""
    rank = {6: 1, 18: 2, 26: 3}[connectivity]
    labels, n = ndimage.label(ale_volume > cut, ndimage.generate_binary_structure(3, rank))
    if n == 0:
        return 0, 0.0
    flat = labels.ravel()
    size = np.bincount(flat, minlength=n + 1)[1:]
    mass = np.bincount(flat, weights=np.where(flat > 0, ale_volume.ravel() - cut, 0.0), minlength=n + 1)[1:]
    return int(size.max()), float(mass.max())


def _randomized_rank(observed: float, null: np.ndarray, v: float) -> float:
    """Position of ``observed`` among itself and the null, from the top, ties broken at random.

    If the observed statistic is exchangeable with the n null statistics, this is
    exactly Uniform(0, 1) (even for integer statistics with ties, like sizes).
    """
    greater = np.count_nonzero(null > observed)
    equal = np.count_nonzero(null == observed)
    return (greater + v * (equal + 1)) / (null.size + 1)


@pytest.fixture(scope="module")
def null_fits(sphere):
    """N_NULL_DATASETS null data sets, each fitted with its own Monte Carlo null.

    Foci are drawn uniformly from in-mask voxel centres: exactly the distribution
    the Monte Carlo null relocates foci from, so the observed maxima are
    exchangeable with the null maxima (up to the cluster-forming threshold, which
    is computed once from the observed data; a 1000-data-set run of this design
    gave FWE rates 0.051 / 0.051 and KS p-values 0.47-0.59, so that dependence is
    negligible).
    """
    rng = np.random.default_rng(7)
    tie_rng = np.random.default_rng(8)
    rows = []
    for d in range(N_NULL_DATASETS):
        exps = null_experiments(rng, sphere, 10, foci=(5, 10), subjects=(10, 30))
        res = ALE(iterations=N_NULL_ITERATIONS, seed=1000 + d, jobs=2, mask=sphere, quiet=True).fit(exps)
        ale = res.maps["ale"]
        cut = res.thresholds["cluster_forming_ale"]
        size, mass = _max_cluster(sphere.to_volume(ale, dtype=np.float64), cut)
        nm = res.null_maxima
        n_ge = np.count_nonzero(nm.ale >= ale.max())
        rows.append(
            {
                "p_vfwe_of_max": float(res.maps["p_vfwe"].min()),
                "n_ge_max": n_ge,
                "u_ale": (n_ge + tie_rng.uniform()) / (nm.ale.size + 1),
                "u_size": _randomized_rank(size, nm.size, tie_rng.uniform()),
                "u_mass": _randomized_rank(mass, nm.mass, tie_rng.uniform()),
                "obs_size": size,
                "null_frac_with_cluster": float(np.mean(nm.size > 0)),
                "vfwe_hit": bool(np.any(res.maps["p_vfwe"] < ALPHA)),
                "cfwe_hit": len(res.clusters) > 0,
                "cfwe_map_hit": bool(np.any(res.maps["z_cfwe"] > 0)),
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_vfwe_p_of_observed_max_uniform(null_fits):
    """The voxel-FWE p of the observed maximum ALE is uniform across null data sets.

    The corrected p of the maximum is max(c, 1)/n with c = #{null maxima >= observed
    maximum}; under the null c is uniform on {0..n}, so (c + U)/(n + 1) with U
    uniform is exactly Uniform(0, 1). One-sample KS test; we fail at KS p < 0.001
    (a 0.1% false-alarm chance for a correct engine; the seeds are fixed, so the
    outcome is deterministic).
    """
    n = N_NULL_ITERATIONS
    # the result's p-value of the maximum is the Monte Carlo count (floored at 1/n)
    expected = np.maximum(null_fits["n_ge_max"], 1) / n
    np.testing.assert_array_equal(null_fits["p_vfwe_of_max"], expected)
    assert stats.kstest(null_fits["u_ale"], "uniform").pvalue > 1e-3


@pytest.mark.slow
def test_cluster_null_ranks_uniform(null_fits):
    """Observed max cluster size and mass rank uniformly among their Monte Carlo null.

    Sizes are integers with many ties (and 0 when no voxel passes the threshold),
    so ties are broken at random (exact Uniform(0, 1) under exchangeability). KS
    test, fail at p < 0.001 as above. This catches a null that is too small or too
    large in either direction (the FWE-rate test below only looks at 5%).
    """
    # the design must produce clusters often enough for the check to mean something
    assert 0.3 < np.mean(null_fits["obs_size"] > 0) < 0.95
    assert 0.3 < null_fits["null_frac_with_cluster"].mean() < 0.95
    assert stats.kstest(null_fits["u_size"], "uniform").pvalue > 1e-3
    assert stats.kstest(null_fits["u_mass"], "uniform").pvalue > 1e-3


@pytest.mark.slow
def test_fwe_false_positive_rates_near_alpha(null_fits):
    """Fraction of null data sets with >= 1 significant cluster / voxel is ~alpha.

    Under a correct method the count of data sets with a false positive is
    Binomial(N, rate) with rate <= alpha (= alpha up to the Monte Carlo p grid:
    p < 0.05 with n = 200 iterations means c <= 9, probability 10/201 = 0.0498;
    ties in cluster sizes only lower it). We accept the count inside the exact
    two-sided 99% binomial acceptance region for rate = alpha: a correct engine
    falls outside with probability < 1%. With N = 120 the region is [1, 13]
    (0.8% - 10.8%); a true rate of 0.20 would be rejected with probability > 0.99
    (0.15: 0.88). The KS tests above are the sharper check of the whole null.
    """
    n = len(null_fits)
    lo = stats.binom.ppf(0.005, n, ALPHA)
    hi = stats.binom.isf(0.005, n, ALPHA)
    assert stats.binom.cdf(hi, n, 0.20) < 0.01  # the region has power against 0.20
    for key in ("vfwe_hit", "cfwe_hit"):
        count = int(null_fits[key].sum())
        assert lo <= count <= hi, (key, count, (lo, hi))
    # the cluster table and the z_cfwe map agree on whether anything is significant
    assert null_fits["cfwe_hit"].equals(null_fits["cfwe_map_hit"])


# --------------------------------------------------------------------------------------
# 2. Invariances
# --------------------------------------------------------------------------------------


def _signal_records(grid, rng, n_null=8, n_signal=6):
    """Null experiments plus n_signal experiments with one focus near a common voxel."""
    recs = null_records(rng, grid, n_null, foci=(4, 8), subjects=(10, 30), prefix="null")
    centre = np.array(grid.shape) // 2 + np.array([3, -2, 1])
    ijk = []
    for _ in range(n_signal):
        extra = grid.mask_ijk[rng.integers(0, grid.n_voxels, size=rng.integers(2, 5))]
        ijk.append(np.vstack([centre + rng.integers(-1, 2, size=3), extra]))
    recs += records(grid, ijk, rng.integers(12, 25, size=n_signal), prefix="signal")
    return recs


def _assert_same_result(a, b, map_keys=None) -> None:
    keys = map_keys or sorted(a.maps)
    for key in keys:
        assert np.array_equal(a.maps[key], b.maps[key]), key
    for field in ("ale", "size", "mass"):
        assert np.array_equal(getattr(a.null_maxima, field), getattr(b.null_maxima, field)), field
    pd.testing.assert_frame_equal(a.clusters, b.clusters, check_exact=True)
    assert a.thresholds == b.thresholds


def test_invariant_to_experiment_and_focus_order(sphere):
    """Shuffling experiments (and the foci inside each) changes nothing, bit for bit."""
    rng = np.random.default_rng(3)
    recs = _signal_records(sphere, rng)
    ale = ALE(iterations=100, seed=11, mask=sphere, quiet=True)
    base = ale.fit(ExperimentSet.from_records(recs))
    assert len(base.clusters) >= 1  # the planted cluster is found, so the table is compared
    for _ in range(2):
        shuffled = [recs[i] for i in rng.permutation(len(recs))]
        shuffled = [dict(r, xyz=np.asarray(r["xyz"])[rng.permutation(len(r["xyz"]))]) for r in shuffled]
        other = ale.fit(ExperimentSet.from_records(shuffled))
        _assert_same_result(base, other)
        for key in ("ale", "p", "z", "z_cfwe"):
            assert np.array_equal(base.maps[key], other.maps[key])


def test_deterministic_across_jobs_and_seed_sensitive(sphere):
    """Same seed: identical nulls and maps for any thread count; another seed: another null."""
    rng = np.random.default_rng(4)
    exps = ExperimentSet.from_records(_signal_records(sphere, rng))
    n_iter = 100  # three full batches of 32 and a partial one
    one = ALE(iterations=n_iter, seed=5, jobs=1, mask=sphere, quiet=True).fit(exps)
    two = ALE(iterations=n_iter, seed=5, jobs=2, mask=sphere, quiet=True).fit(exps)
    three = ALE(iterations=n_iter, seed=5, jobs=3, mask=sphere, quiet=True).fit(exps)
    _assert_same_result(one, two)
    _assert_same_result(one, three)
    other = ALE(iterations=n_iter, seed=6, jobs=2, mask=sphere, quiet=True).fit(exps)
    assert np.array_equal(one.maps["ale"], other.maps["ale"])  # the observed data do not depend on the seed
    assert not np.array_equal(one.null_maxima.ale, other.null_maxima.ale)
    assert np.mean(one.null_maxima.ale != other.null_maxima.ale) > 0.9
    # a prefix of iterations does not depend on the total number (per-batch seeding)
    shorter = ALE(iterations=64, seed=5, jobs=2, mask=sphere, quiet=True).fit(exps)
    assert np.array_equal(shorter.null_maxima.ale, one.null_maxima.ale[:64])
    assert np.array_equal(shorter.null_maxima.size, one.null_maxima.size[:64])


# --------------------------------------------------------------------------------------
# 3. Optimized Monte Carlo engine == slow reference
# --------------------------------------------------------------------------------------


def reference_ale(ijk: np.ndarray, exp_offsets: np.ndarray, n_subjects, shape) -> np.ndarray:
    """Dense ALE over the whole grid: MA = voxel-wise max of kernels; ALE = 1 - prod(1 - MA)."""
    not_active = np.ones(shape)
    for e in range(len(exp_offsets) - 1):
        kernel = ale_kernel(int(n_subjects[e]))
        r = kernel.shape[0] // 2
        ma = np.zeros(shape)
        for focus in ijk[exp_offsets[e] : exp_offsets[e + 1]]:
            lo = np.maximum(focus - r, 0)
            hi = np.minimum(focus + r + 1, shape)
            klo = lo - (focus - r)
            khi = klo + (hi - lo)
            dst = ma[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            np.maximum(dst, kernel[klo[0] : khi[0], klo[1] : khi[1], klo[2] : khi[2]], out=dst)
        not_active *= 1.0 - ma
    return 1.0 - not_active


def reference_maxima(ale: np.ndarray, mask: np.ndarray, cut: float, connectivity: int) -> tuple[float, int, float]:
    """Max in-mask ALE, and the largest cluster size and mass of in-mask ALE > cut."""
    inside = np.where(mask, ale, 0.0)
    size, mass = _max_cluster(np.where(mask, ale, -np.inf), cut, connectivity)
    return float(inside.max()), size, mass


def _engine(draws, plan, prune=True, **paths):
    n = draws.shape[0]
    out = np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n)
    cpu.run_batch(draws, plan, cpu.Workspace(plan.n_grid, plan.n_blocks), *out, prune=prune, **paths)
    return out


def _extra_draws(plan, counts, rng) -> np.ndarray:
    """Hand-made iterations for paths random draws rarely hit."""
    n_foci = int(np.sum(counts))
    ijk = plan.mask_ijk
    rows = []
    # every focus on one voxel: maximal ALE, every multi-focus experiment fully overlapping
    rows.append(np.full(n_foci, plan.n_mask // 2))
    # foci on the mask's extreme voxels (grid faces where the mask touches them)
    extremes = np.concatenate([np.flatnonzero(ijk[:, a] == f(ijk[:, a])) for a in range(3) for f in (np.min, np.max)])
    rows.append(rng.choice(extremes, size=n_foci))
    # within each experiment, foci duplicated pairwise (max, not sum, of equal kernels)
    row = rng.integers(0, plan.n_mask, size=n_foci)
    row[1::2] = row[0:-1:2]
    rows.append(row)
    return np.asarray(rows, dtype=np.int64)


def _compare_engine_with_reference(mask, n_subjects, counts, cuts, n_random, seed):
    rng = np.random.default_rng(seed)
    exp_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    cubes = kernel_cubes(n_subjects)
    cube_of_exp = cubes.index(n_subjects)
    any_plan = make_plan(mask, exp_offsets, cube_of_exp, cubes, cuts[0], 6)
    draws = np.vstack(
        [batch_draws(seed, 0, n_random, any_plan.n_foci, any_plan.n_mask), _extra_draws(any_plan, counts, rng)]
    )
    ales = [reference_ale(any_plan.mask_ijk[row], exp_offsets, n_subjects, mask.shape) for row in draws]
    seen_sizes = set()
    windowed_iterations = []
    for cut in cuts:
        for connectivity in (6, 18, 26):
            plan = make_plan(mask, exp_offsets, cube_of_exp, cubes, cut, connectivity)
            out_ale, out_size, out_mass = _engine(draws, plan)
            ref = np.array([reference_maxima(a, mask, cut, connectivity) for a in ales])
            np.testing.assert_allclose(out_ale, ref[:, 0], rtol=0, atol=1e-12)
            np.testing.assert_array_equal(out_size, ref[:, 1].astype(np.int64))
            np.testing.assert_allclose(out_mass, ref[:, 2], rtol=0, atol=1e-9)
            seen_sizes.add((cut, connectivity, tuple(out_size)))
            # without block pruning: the same maxima. Max ALE and sizes are bit-identical;
            # masses may differ in the last bits because the flood fill visits the
            # supra-threshold voxels in another order (float sums are order-dependent).
            ale2, size2, mass2 = _engine(draws, plan, prune=False)
            assert np.array_equal(ale2, out_ale)
            assert np.array_equal(size2, out_size)
            np.testing.assert_allclose(mass2, out_mass, rtol=1e-13, atol=0)
            # the window path (separable bound, then eight-voxel windows) on every iteration
            # that has a supra-threshold voxel; the others fall back to the whole grid
            counts = np.zeros(3, dtype=np.int64)
            ale3, size3, mass3 = _engine(draws, plan, block_bound=False, window_share=1.0, path_counts=counts)
            assert np.array_equal(ale3, out_ale)
            assert np.array_equal(size3, out_size)
            np.testing.assert_allclose(mass3, out_mass, rtol=1e-13, atol=0)
            assert counts[0] == 0 and counts[1] == np.sum(out_size > 0) and counts[2] == np.sum(out_size == 0)
            windowed_iterations.append(counts[1])
    assert sum(windowed_iterations) > 0
    return seen_sizes


def test_engine_matches_reference_small_grid():
    """Small odd-shaped grid whose mask touches two pairs of grid faces; 6/18/26 connectivity.

    Cuts: a low one (many large, merging clusters), a typical one, and one above
    any ALE (no cluster: the engine falls back to a whole-grid pass for the max).
    Experiments with 1 focus (never overlapping) and many foci (overlapping kernels).
    """
    grid = ellipsoid_grid((27, 31, 25), (16, 14, 15))
    mask = grid.mask
    assert mask[0].any() and mask[-1].any() and mask[:, :, 0].any() and not mask[:, 0].any()
    n_subjects = np.array([8, 12, 20, 35, 60, 15, 15, 100])
    counts = np.array([1, 2, 5, 8, 3, 6, 1, 4])
    seen = _compare_engine_with_reference(mask, n_subjects, counts, (0.008, 0.014, 0.9), 24, seed=3)
    by_cut = {}
    for cut, connectivity, sizes in seen:
        by_cut.setdefault(cut, {})[connectivity] = np.array(sizes)
    # the comparisons are not vacuous: clusters exist, and connectivity matters for some draws
    assert np.all(by_cut[0.008][6] > 0)
    assert np.any(by_cut[0.014][6] > 0) and np.any(by_cut[0.014][6] == 0)
    assert np.any(by_cut[0.008][26] > by_cut[0.008][6])
    assert np.all(by_cut[0.9][6] == 0)


def test_engine_matches_reference_several_slabs():
    """A grid longer along z than two whole-grid tiles (``cpu.SLAB``) and not a multiple of
    their edges: foci whose kernel boxes straddle slab borders on every axis."""
    assert 205 > 2 * cpu.SLAB[2]
    grid = ellipsoid_grid((15, 19, 205), (8, 10, 103))
    n_subjects = np.array([8, 20, 12, 60, 15])
    counts = np.array([1, 9, 4, 14, 2])
    seen = _compare_engine_with_reference(grid.mask, n_subjects, counts, (0.004, 0.02), 8, seed=11)
    assert any(max(sizes) > 0 for cut, _, sizes in seen if cut == 0.004)


def test_engine_matches_reference_rows_past_the_grid_end():
    """A grid a little shorter along z than one slab (``cpu.SLAB``): kernel rows cut by the
    grid's end run on eight voxels at a time into the slab buffer's spare voxels, or (rows
    that would run past the buffer row) element by element; both must give the same maxima."""
    nz = cpu.SLAB[2] - 2
    grid = box_grid((9, 11, nz))  # every voxel in the mask: a value spilt into the next row shows
    n_subjects = np.array([1, 20, 9, 60])
    counts = np.array([3, 7, 2, 5])
    seen = _compare_engine_with_reference(grid.mask, n_subjects, counts, (0.004, 0.02), 6, seed=5)
    assert any(max(sizes) > 0 for cut, _, sizes in seen if cut == 0.004)


def test_engine_matches_reference_mni():
    """Real MNI152 2 mm mask, a few iterations."""
    mask = load_mni152_2mm().mask
    n_subjects = np.array([9, 14, 14, 22, 30, 45, 70, 16, 11, 25])
    counts = np.array([1, 6, 3, 10, 2, 7, 4, 12, 5, 8])
    seen = _compare_engine_with_reference(mask, n_subjects, counts, (0.006, 0.5), 3, seed=21)
    assert any(max(sizes) > 0 for cut, _, sizes in seen if cut == 0.006)


def test_engine_matches_reference_two_width_classes(monkeypatch):
    """The window path's bound with two classes of kernel widths (normally only from 10,000
    foci on; forced here on the small odd grid with 8-100 subjects)."""
    monkeypatch.setattr("alemap.inference.plan.SEPARATE_CLASSES_FROM_FOCI", 0)
    grid = ellipsoid_grid((27, 31, 25), (16, 14, 15))
    n_subjects = np.array([8, 12, 20, 35, 60, 15, 15, 100])
    counts = np.array([1, 2, 5, 8, 3, 6, 1, 4])
    cubes = kernel_cubes(n_subjects)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    assert make_plan(grid.mask, offsets, cubes.index(n_subjects), cubes, 0.01).window.env.shape[0] == 2
    seen = _compare_engine_with_reference(grid.mask, n_subjects, counts, (0.008, 0.014), 16, seed=4)
    assert any(max(sizes) > 0 for cut, _, sizes in seen if cut == 0.014)


@pytest.mark.parametrize("classes_from", [0, 10**9])
def test_separable_bound_bounds_the_sum_over_foci(monkeypatch, classes_from):
    """Every voxel whose sum over all foci of -log(1 - k) exceeds a cut is a candidate of the
    separable bound at that cut: 25 cuts across the range, on a box grid (foci on faces and
    corners), kernels of 1-100 subjects, in two classes of widths and in one."""
    monkeypatch.setattr("alemap.inference.plan.SEPARATE_CLASSES_FROM_FOCI", classes_from)
    from alemap.inference import windows

    grid = box_grid((21, 24, 19))
    rng = np.random.default_rng(8)
    n_subjects = np.array([1, 3, 8, 15, 30, 60, 100, 20])
    counts = np.array([3, 2, 6, 4, 5, 3, 4, 6])
    offsets = np.concatenate([[0], np.cumsum(counts)])
    cubes = kernel_cubes(n_subjects)
    plan = make_plan(grid.mask, offsets, cubes.index(n_subjects), cubes, 0.01)
    assert plan.window.env.shape[0] == (2 if classes_from == 0 else 1)
    work = cpu.Workspace(plan.n_grid, plan.n_blocks).windows_for(plan, 1.0)
    corners = np.array([[i, j, k] for i in (0, 20) for j in (0, 23) for k in (0, 18)])
    ratios = []
    for _ in range(3):
        ijk = plan.mask_ijk[rng.integers(0, plan.n_mask, plan.n_foci)]
        ijk[: len(corners)] = corners
        total = np.zeros(plan.n_grid)
        cpu._accumulate(ijk, np.arange(plan.n_foci + 1), plan.cube_of_focus, plan.log1m_k, plan.start, plan.width,
                        plan.shape, total, np.zeros(plan.n_grid))
        s = -total
        cand = np.empty(plan.n_grid, dtype=np.int64)
        for cut in np.quantile(s, np.linspace(0.02, 0.98, 25)):
            n = windows._separable_bound(ijk, plan.cube_of_focus, plan.width, plan.window.plane_rows,
                                         plan.window.plane_start, plan.window.env, plan.window.cube_class,
                                         np.float32(cut), plan.shape, plan.window.nzp, work.G, work.plane_lo,
                                         work.plane_hi, work.B, plan.mask_grid, cand, plan.n_grid, work.by_x,
                                         work.x_ptr)
            need = np.flatnonzero(s > cut * (1 + 1e-5))
            assert np.all(np.isin(need, cand[:n])), cut
            ratios.append(n / max(need.size, 1))
    # and not vacuous: candidates / voxels above the cut, median over the cuts (measured 1.4 with
    # two classes; the kernels of 1-100 subjects differ widely in width)
    assert np.median(ratios) < 2.0


def test_window_tables_bound_every_kernel():
    """The window path's separable bound: for every kernel cube (1 to 200 subjects: edges 31
    down to 13), ``-log(1 - k)`` at every offset is at most ``env(dx) * plane(dy, dz)`` as
    stored (float32, rounded up), and tight within 1 % at the peak for the largest samples."""
    sizes = [1, 2, 5, 8, 12, 20, 35, 60, 100, 200]
    cubes = kernel_cubes(sizes)
    foci = np.full(len(sizes), 1500)
    tables = window_tables(cubes.values, cubes.log1m, cubes.start, cubes.width, np.log1p(-0.01), foci, (91, 109, 91))
    assert tables.usable
    # two classes of widths holding equal numbers of foci: the narrow kernels (many subjects) first;
    # one class with fewer foci (a second pass along x would cost more than it saves)
    assert tables.env.shape[0] == 2 and list(tables.cube_class) == [1] * 5 + [0] * 5
    few = window_tables(cubes.values, cubes.log1m, cubes.start, cubes.width, np.log1p(-0.01), foci // 20, (9, 9, 9))
    assert few.env.shape[0] == 1 and not few.cube_class.any()
    R = int(cubes.width.max()) // 2
    for j, w in enumerate(int(x) for x in cubes.width):
        m = -cubes.log1m[cubes.start[j] : cubes.start[j] + w**3].reshape(w, w, w)
        rw = -(-w // 16) * 16
        rows = tables.plane_rows[tables.plane_start[j] : tables.plane_start[j] + w * rw].reshape(w, rw)
        assert np.all(rows[:, w:] == 0)  # the padding the sixteen-wide additions carry
        c = w // 2
        env = tables.env[tables.cube_class[j]].astype(np.float64)
        bound = env[R - c : R + c + 1, None, None] * rows[:, :w].astype(np.float64)[None]
        assert np.all(m <= bound), sizes[j]
    assert bound[c, c, c] <= m[c, c, c] * 1.01  # the last cube: 200 subjects
    # the float32 cut sits below the exact one by the summation margin (about 2 n u for n
    # terms, u = 2^-24), and not far below
    n = foci.sum() + 2 * 31
    assert -np.log1p(-0.01) * (1 - 3 * n * 2.0**-24) < tables.sep_cut < -np.log1p(-0.01) * (1 - n * 2.0**-24)


def test_window_tables_refuse_a_kernel_they_cannot_bound():
    """A cube with a zero in its centre row along x has no bound of this form: the window path
    is left unused (the engine then uses the block bound and the whole grid)."""
    cubes = kernel_cubes([10])
    values = cubes.values.copy()
    w = int(cubes.width[0])
    values.reshape(w, w, w)[0, w // 2, w // 2] = 0.0
    tables = window_tables(values, np.log1p(-values), cubes.start, cubes.width, np.log1p(-0.01), [100], (20, 20, 20))
    assert not tables.usable


# --------------------------------------------------------------------------------------
# 4. Foci at the grid edge or outside the mask
# --------------------------------------------------------------------------------------


def test_edge_foci_box_mask():
    """Mask = whole (odd-shaped) grid: observed foci and relocated foci sit on grid faces and corners."""
    grid = box_grid((21, 24, 19))
    corners = np.array([[i, j, k] for i in (0, 20) for j in (0, 23) for k in (0, 18)])
    rng = np.random.default_rng(9)
    ijk = [corners[:4], corners[4:], corners[[0, 0, 7]], np.array([[0, 12, 9], [10, 0, 9], [10, 12, 18]])]
    ijk += [grid.mask_ijk[rng.integers(0, grid.n_voxels, size=6)] for _ in range(6)]
    exps = ExperimentSet.from_records(records(grid, ijk, rng.integers(6, 40, size=len(ijk))))
    for connectivity in (6, 26):
        res = ALE(iterations=64, seed=2, mask=grid, quiet=True, connectivity=connectivity).fit(exps)
        _check_maps_in_range(res)
        assert res.experiments.n_experiments == len(ijk)
        # a corner focus gives the corner voxel at least its kernel peak
        assert res.maps["ale"][0] >= ale_kernel(int(exps.n_subjects[0])).max() - 1e-15


@pytest.mark.parametrize("outside_mask", ["keep", "drop"])
def test_foci_outside_mask_and_grid(sphere, outside_mask):
    """Foci outside the mask (in the grid corners), outside the grid, and an experiment
    with no focus left: no crash, maps in range, exclusions reported."""
    grid = sphere
    rng = np.random.default_rng(10)
    n = grid.shape[0]
    outside_mask_ijk = np.array([[0, 0, 0], [n - 1, n - 1, n - 1], [0, n - 1, 0]])  # grid corners, off the sphere
    recs = null_records(rng, grid, 8, foci=(3, 6), subjects=(10, 30))
    recs[0]["xyz"] = np.vstack([recs[0]["xyz"], grid.ijk_to_mm(outside_mask_ijk)])
    recs[1]["xyz"] = np.vstack([recs[1]["xyz"], grid.ijk_to_mm([[-1, 5, 5], [n, 5, 5], [5, 5, n + 40]])])
    # all foci off the sphere (a corner, far from every in-mask voxel) or off the grid
    recs[2]["xyz"] = grid.ijk_to_mm([[0, 0, 1], [-3, -3, -3]])
    # on the mask's boundary voxels
    extreme = grid.mask_ijk[[0, -1]]
    recs[3]["xyz"] = np.vstack([recs[3]["xyz"], grid.ijk_to_mm(extreme)])
    for r in recs:
        r["origins"] = [r["origins"][0]] * len(r["xyz"])
    exps = ExperimentSet.from_records(recs)
    res = ALE(iterations=64, seed=3, mask=grid, quiet=True, outside_mask=outside_mask).fit(exps)
    _check_maps_in_range(res)
    prov = res.provenance
    reasons = [f["reason"] for f in prov["excluded_foci"]]
    assert sum("bounding box" in s for s in reasons) == 4
    if outside_mask == "keep":
        assert res.experiments.n_experiments == 8
        assert sum("brain mask" in s for s in reasons) == 0
    else:
        assert sum("brain mask" in s for s in reasons) == 4
        assert [e["experiment"] for e in prov["excluded_experiments"]] == [recs[2]["name"]]
        assert res.experiments.n_experiments == 7


def test_all_ale_zero_does_not_crash():
    """One experiment whose only focus (in-grid, off-mask) is beyond kernel reach of the
    mask: ALE = 0 everywhere, p = 1, no cluster, and the engine still runs."""
    shape = (40, 40, 40)
    small = ellipsoid_grid(shape, (5, 5, 5))
    assert not small.mask[:10, :10, :10].any()  # kernel radius <= 8 voxels from the corner
    exps = ExperimentSet.from_records(records(small, [np.array([[0, 0, 0]])], [20]))
    res = ALE(iterations=32, seed=0, mask=small, quiet=True).fit(exps)
    _check_maps_in_range(res)
    assert np.all(res.maps["ale"] == 0) and np.all(res.maps["p"] == 1)
    assert np.all(res.null_maxima.ale > 0)  # relocated into the mask, the focus does count
    assert len(res.clusters) == 0


def test_float32_block_bounds_never_miss_a_candidate():
    """The float32 block bound (terms rounded down, threshold loosened by the
    rounding-error bound) selects every block whose float64 bound is below the cut."""
    from alemap.inference.plan import _bound_cut, _round_down_f32

    rng = np.random.default_rng(12)
    for n in (1, 7, 60, 700, 5000):
        terms = -rng.exponential(0.004, size=(400, n))
        exact = terms.sum(axis=1)  # float64
        t32 = _round_down_f32(terms.ravel()).reshape(terms.shape)
        assert np.all(t32.astype(np.float64) <= terms)
        b32 = np.zeros(400, dtype=np.float32)
        for j in range(n):  # sequential float32 accumulation, as the engine does
            b32 += t32[:, j]
        for cut in np.quantile(exact, [0.05, 0.5, 0.95]):
            assert np.all(b32[exact < cut] < _bound_cut(float(cut), n))


def test_bound_pass_equals_plain_float32_sums():
    """The engine's bound pass (rows added sixteen values at a time, rows cut by the grid's
    end value by value) equals adding each focus's clipped block-bound cube in focus order in
    float32, bit for bit; foci on every face of a box grid, kernels of several sizes."""
    grid = box_grid((23, 21, 19))
    n_subjects = np.array([1, 12, 40])
    counts = np.array([6, 9, 5])
    cubes = kernel_cubes(n_subjects)
    plan = make_plan(grid.mask, np.concatenate([[0], np.cumsum(counts)]), cubes.index(n_subjects), cubes, 0.01)
    rng = np.random.default_rng(4)
    shape = np.asarray(grid.shape)
    ijk = rng.integers(0, shape, size=(plan.n_foci, 3))
    ijk[:6] = [[0, 0, 0], [22, 20, 18], [0, 10, 18], [22, 0, 9], [11, 20, 0], [5, 5, 17]]
    ws = cpu.Workspace(plan.n_grid, plan.n_blocks)
    cpu._bound_pass(ijk, plan.cube_of_focus, plan.blog, plan.bstart, plan.bwidth, plan.dlo, plan.bshape, ws.bound)
    bshape = tuple(plan.bshape)
    ref = np.zeros(bshape, dtype=np.float32)
    for f, (i, j, k) in enumerate(ijk):
        c = plan.cube_of_focus[f]
        nb, lo = int(plan.bwidth[c]), int(plan.dlo[c])
        start = plan.bstart[8 * c + 4 * (i & 1) + 2 * (j & 1) + (k & 1)]
        cube = plan.blog[start : start + nb * nb * (nb + cpu.BOUND_PAD)].reshape(nb, nb, -1)[:, :, :nb]
        corner = np.array([i >> 1, j >> 1, k >> 1]) + lo
        lo_b, hi_b = np.maximum(corner, 0), np.minimum(corner + nb, bshape)
        sub = tuple(slice(a - c0, b - c0) for a, b, c0 in zip(lo_b, hi_b, corner))
        ref[tuple(slice(a, b) for a, b in zip(lo_b, hi_b))] += cube[sub]
    assert np.array_equal(ws.bound[: plan.n_blocks], ref.ravel())
    assert not ws.bound[plan.n_blocks :].any()  # the spare values past the grid receive zeros only
