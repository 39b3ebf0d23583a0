"""Designs layer: conjunctions, contrasts, C-SALE relocation, project runs with resume, the demo.

1. A conjunction is the voxel-wise minimum of its inputs' thresholded maps (exactly).
2. Contrast calibration under the null (slow): random splits of one pool of
   null experiments give permutation p-values that are uniform and a per-voxel
   false-positive rate at p < 0.05 of 0.05.
3. ``run_contrast`` is deterministic in its seed, finds a planted difference
   in the right direction, and only there.
4. Balanced contrasts: JALE's subsample size, and the size-imbalance note.
5. The C-SALE null relocates foci with the probabilities of the base-rate map.
6. A project interrupted in its second ALE resumes: finished analyses are
   skipped, the Monte Carlo null resumes from its checkpoint, and every output
   file equals that of an uninterrupted run (slow).
7. ``alemap demo`` writes every analysis of the embedded project (slow).

Everything is seeded, so every test is deterministic; statistical tolerances
are justified where they are set. Simulated foci sit on voxel centres of the
real MNI152 2 mm mask, so placement is exact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage, stats

import alemap.inference.checkpoint as checkpoint
import alemap.inference.montecarlo as montecarlo
from _projects import write_project
from alemap import ALE, ExperimentSet
from alemap.cli.main import main
from alemap.data import FocusOrigin
from alemap.designs import load_project
from alemap.designs.conjunction import conjunction
from alemap.designs.contrast import default_target_n, log1m_matrix, run_contrast
from alemap.designs.csale import _region, load_base_rate
from alemap.designs.runner import ALE_FILES, CHECKPOINT, CONJUNCTION_FILES, CONTRAST_FILES, CSALE_FILES, run_project
from alemap.inference.montecarlo import BATCH_SIZE, batch_draws
from alemap.inference.permutation import permutation_counts
from alemap.space import load_mni152_2mm
from alemap.statistics.base_rate import base_rate_map

ALPHA = 0.05


@pytest.fixture(scope="module")
def mni():
    return load_mni152_2mm()


# ------------------------------------------------------------------ simulated experiments
def _null_pool(grid, seed: int, n_experiments: int, foci=(8, 16), subjects=(10, 30), extra_ijk=None, n_extra=0):
    """Placed experiments with foci uniform over in-mask voxel centres.

    The first ``n_extra`` experiments also get a focus at voxel ``extra_ijk``
    (a planted effect). Returned in the order they were made (``ALE.place``
    orders experiments canonically; the order is restored here).
    """
    rng = np.random.default_rng(seed)
    mask_ijk = grid.mask_ijk
    records = []
    for e in range(n_experiments):
        ijk = mask_ijk[rng.integers(0, len(mask_ijk), int(rng.integers(foci[0], foci[1] + 1)))]
        if e < n_extra:
            ijk = np.vstack([ijk, np.asarray(extra_ijk)[None]])
        xyz = grid.ijk_to_mm(ijk)
        records.append({"name": f"exp{e:03d}", "study": f"study{e:03d}", "n_subjects": int(rng.integers(*subjects)),
                        "space": "MNI", "xyz": xyz, "origins": [FocusOrigin("sim", 0)] * len(xyz)})
    placed = ALE().place(ExperimentSet.from_records(records), grid)
    exps = placed.experiments
    order = np.argsort(np.array(exps.names, dtype=object), kind="stable")
    rows = np.concatenate([np.arange(exps.offsets[i], exps.offsets[i + 1]) for i in order])
    return SimpleNamespace(experiments=exps.select(order), ijk=placed.ijk[rows])


def _group(placed, grid, index, significant=None):
    """Stand-in for a fitted main effect (what ``run_contrast`` reads): the experiments
    ``index`` of ``placed`` and a ``z_cfwe`` map that is 1 on ``significant`` voxels."""
    index = np.asarray(index, dtype=np.int64)
    exps = placed.experiments
    rows = np.concatenate([np.arange(exps.offsets[i], exps.offsets[i + 1]) for i in index])
    z = np.zeros(grid.n_voxels)
    if significant is not None:
        z[significant] = 1.0
    return SimpleNamespace(grid=grid, experiments=exps.select(index), ijk=placed.ijk[rows], maps={"z_cfwe": z})


def _ball(grid, centre_ijk, radius_vox: float) -> np.ndarray:
    """In-mask voxel numbers within ``radius_vox`` of ``centre_ijk``."""
    d = np.linalg.norm(grid.mask_ijk - np.asarray(centre_ijk)[None], axis=1)
    return np.flatnonzero(d <= radius_vox)


def _nearest_mask_voxel(grid, xyz_mm):
    ijk = np.rint(grid.mm_to_continuous_ijk(xyz_mm)[0])
    v = int(np.argmin(np.linalg.norm(grid.mask_ijk - ijk, axis=1)))
    return v, grid.mask_ijk[v]


# ================================================================== 1. conjunction
def test_conjunction_is_the_voxelwise_minimum(mni):
    rng = np.random.default_rng(1)
    centre = np.array([60, 60, 45])  # MNI (-30, -6, 18): every voxel of the boxes below is in the mask
    vols = []
    for shift in ((0, 0, 0), (2, 1, 0), (1, 2, 1)):
        vol = np.zeros(mni.shape)
        lo = centre + np.array(shift) - 4
        vol[lo[0]:lo[0] + 8, lo[1]:lo[1] + 8, lo[2]:lo[2] + 8] = rng.uniform(3.1, 6.0, (8, 8, 8))
        vols.append(vol)
    vols[0][30, 60, 45] = vols[1][30, 60, 45] = vols[2][30, 60, 45] = 4.0  # a one-voxel overlap elsewhere
    assert all(mni.mask[v > 0].all() for v in vols)
    maps = [v.ravel()[mni.mask_flat] for v in vols]
    stack = np.vstack(maps)
    expected = np.where(np.all(stack > 0, axis=0), stack.min(axis=0), 0.0)
    assert np.count_nonzero(expected) > 100

    z, table = conjunction(maps, mni)
    assert np.array_equal(z, expected)  # exact: no arithmetic, only selection
    assert len(table) == 2 and table["voxels"].sum() == np.count_nonzero(expected)
    assert table["peak_stat_z"].max() == expected.max()

    # order of the inputs does not matter; two inputs work as well
    assert np.array_equal(conjunction(maps[::-1], mni)[0], expected)
    assert np.array_equal(conjunction(maps[:2], mni)[0],
                          np.where((maps[0] > 0) & (maps[1] > 0), np.minimum(maps[0], maps[1]), 0.0))

    # clusters smaller than min_volume_mm3 are removed (one voxel = 8 mm3)
    z9, table9 = conjunction(maps, mni, min_volume_mm3=9.0)
    single = np.ravel_multi_index((30, 60, 45), mni.shape)
    assert z9[np.searchsorted(mni.mask_flat, single)] == 0.0 and len(table9) == 1
    keep = z9 > 0
    assert np.array_equal(z9[keep], expected[keep]) and np.count_nonzero(expected) - np.count_nonzero(z9) == 1


def test_cluster_of_exactly_min_volume_is_kept(mni):
    z = np.zeros(mni.n_voxels)
    z[np.searchsorted(mni.mask_flat, np.ravel_multi_index((30, 60, 45), mni.shape))] = 4.0
    assert len(conjunction([z, z], mni, min_volume_mm3=8.0)[1]) == 1  # "smaller than 8 mm3 are removed"


# ------------------------------------------------------------------ one small project, run once
PROJECT = """
name: designs test project
inputs: [motor_learning.tsv]
defaults: {iterations: 128, seed: 3}
min_experiments: 10
groups:
  all: {}
  sequence: {tags: {paradigm: sequence}}
  sensorimotor: {tags: {paradigm: sensorimotor}}
analyses:
  all: {group: all}
  sequence: {group: sequence}
  sensorimotor: {group: sensorimotor}
  seq_vs_sm:
    type: contrast
    analyses: [sequence, sensorimotor]
    permutations: 300
    min_volume_mm3: 100
  all_and_seq: {type: conjunction, analyses: [all, sequence]}
  cerebellum: {type: csale, group: all, iterations: 64, p: 0.05, k: 5}
"""
ALE_NAMES = ("all", "sequence", "sensorimotor")
FILES = {"all": ALE_FILES, "sequence": ALE_FILES, "sensorimotor": ALE_FILES, "seq_vs_sm": CONTRAST_FILES,
         "all_and_seq": CONJUNCTION_FILES, "cerebellum": CSALE_FILES}


@pytest.fixture(scope="module")
def project_a(tmp_path_factory):
    """The project above, run uninterrupted into ``out_a``."""
    folder = tmp_path_factory.mktemp("designs_project")
    path = write_project(folder, PROJECT)
    out = folder / "out_a"
    run = run_project(load_project(path), out, jobs=2, quiet=True)
    return SimpleNamespace(folder=folder, path=path, out=out, run=run)


def _z(path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def test_project_conjunction_is_the_minimum_of_its_inputs(project_a):
    out = project_a.out
    z_all, z_seq = _z(out / "all" / "z_cfwe.nii.gz"), _z(out / "sequence" / "z_cfwe.nii.gz")
    z_conj = _z(out / "all_and_seq" / "z_conjunction.nii.gz")
    expected = np.where((z_all > 0) & (z_seq > 0), np.minimum(z_all, z_seq), 0)
    assert np.count_nonzero(expected) > 0  # the two overlap: the test is not vacuous
    assert np.array_equal(z_conj, expected)
    table = (out / "all_and_seq" / "clusters.tsv").read_text().splitlines()
    labels, n = ndimage.label(expected > 0)  # 6-connectivity, as the conjunction uses
    assert len(table) - 1 == n
    prov = json.loads((out / "all_and_seq" / "provenance.json").read_text())
    assert prov["inputs"] == ["all", "sequence"] and prov["map"] == "z_cfwe"


# ================================================================== 2. contrast calibration
@pytest.fixture(scope="module")
def calibration_pool(mni):
    """30 null experiments with 80-120 foci each, their log1p(-MA) matrix, and 40 test voxels.

    Many foci per experiment make every voxel covered by many experiments, so the
    ALE difference takes (practically) continuous values over reassignments and
    permutation p-values have no ties. The voxels are >= 22 mm apart (Chebyshev),
    beyond the kernels' reach, so their tests are nearly independent.
    """
    placed = _null_pool(mni, seed=11, n_experiments=30, foci=(80, 120))
    log1m = log1m_matrix(_group(placed, mni, range(15)), _group(placed, mni, range(15, 30)))
    coverage = np.asarray((log1m != 0).sum(axis=0)).ravel()
    rng = np.random.default_rng(5)
    ijk = mni.mask_ijk.astype(np.int64)
    chosen: list[int] = []
    for v in rng.permutation(mni.n_voxels):
        if coverage[v] >= 15 and all(np.abs(ijk[v] - ijk[c]).max() > 10 for c in chosen):
            chosen.append(int(v))
            if len(chosen) == 40:
                break
    cols = np.sort(np.array(chosen))
    return SimpleNamespace(placed=placed, dense=log1m[:, cols].toarray(), cols=cols)


def _gated_p(counts, n):
    """One-sided p-values exactly as the gingerale method forms them (all voxels 'significant')."""
    d = counts.observed
    p_ab = np.where(d > 0, np.maximum(counts.upper, 1) / n, 1.0)
    p_ba = np.where(d < 0, np.maximum(counts.lower, 1) / n, 1.0)
    return p_ab, p_ba


@pytest.mark.slow
@pytest.mark.parametrize("n_a", [15, 20])
def test_contrast_null_calibration(mni, calibration_pool, n_a):
    """Random splits of one pool: p-values uniform, per-voxel false-positive rate 0.05.

    Given the pool, the observed split and the ``n`` permuted ones are ``n + 1``
    independent uniformly random splits, so (without ties) the number of permuted
    differences >= the observed one is uniform on {0, ..., n} and
    P(p < 0.05) = P(count <= 9) = 10/201 for n = 200 (the 1/n floor changes nothing
    below 0.05). Repetitions are exactly independent; voxels nearly so (checked).
    """
    pool, n_perm, reps = calibration_pool, 200, 1000
    n_total, m = pool.dense.shape[0], pool.cols.size
    expected = 10 / (n_perm + 1)
    upper = np.zeros((reps, m), dtype=np.int64)
    lower = np.zeros((reps, m), dtype=np.int64)
    fp_ab = np.zeros((reps, m), dtype=bool)
    fp_ba = np.zeros((reps, m), dtype=bool)
    for r in range(reps):
        order = np.random.default_rng([n_a, r]).permutation(n_total)  # a random split: first n_a are group A
        counts = permutation_counts(pool.dense[order], n_a, n_perm, seed=r)
        upper[r], lower[r] = counts.upper, counts.lower
        p_ab, p_ba = _gated_p(counts, n_perm)
        fp_ab[r], fp_ba[r] = p_ab < ALPHA, p_ba < ALPHA
        if r < 1:  # run_contrast forms the very same p-values (stand-ins: significant = the test voxels)
            res = run_contrast(_group(pool.placed, mni, order[:n_a], pool.cols),
                               _group(pool.placed, mni, order[n_a:], pool.cols),
                               permutations=n_perm, seed=r, p=ALPHA)
            assert np.array_equal(res.maps["p_AgtB"][pool.cols], p_ab)
            assert np.array_equal(res.maps["p_BgtA"][pool.cols], p_ba)
            assert np.array_equal(res.maps["z_AgtB"][pool.cols] > 0, fp_ab[r])
            assert res.params["tested_voxels"] == m

    tests = reps * m
    sd = np.sqrt(expected * (1 - expected) / tests)
    if n_a == 15:
        # Equal groups: the gate (A>B only where the difference is positive) costs nothing, because a
        # difference in the top 5 % of a distribution symmetric about 0 is positive.
        rates = {"A>B": fp_ab, "B>A": fp_ba}
    else:
        # Unequal groups: the difference is not centred on 0, so only the ungated tails are exactly uniform.
        rates = {"upper": upper <= 9, "lower": lower <= 9}
    for label, fp in rates.items():
        # 4.5 binomial sd of 40,000 tests (+-0.0049): a correct test misses with probability < 1e-5 if the tests
        # are independent; they nearly are: the spread of the per-repetition rates matches the binomial one.
        assert abs(fp.mean() - expected) < 4.5 * sd, (label, fp.mean())
        rep_se = fp.mean(axis=1).std(ddof=1) / np.sqrt(reps)
        assert rep_se < 1.5 * sd, (label, rep_se, sd)
        # every voxel on its own (1,000 independent repetitions; 4.5 sd = +-0.031; 80 voxel tests in all)
        per_voxel = fp.mean(axis=0)
        assert np.all(np.abs(per_voxel - expected) < 4.5 * np.sqrt(expected * (1 - expected) / reps)), (label, per_voxel)

    # p-values ~ uniform: counts on {0..200} in 10 bins, expected frequencies from the discrete uniform
    edges = np.linspace(0, n_perm + 1, 11).astype(int)
    width = np.diff(edges) / (n_perm + 1)
    for counts in (upper, lower):
        for j in range(m):  # per voxel, Bonferroni over 2 x 40 tests at 1e-4: family false alarm < 0.01
            hist = np.histogram(counts[:, j], bins=edges)[0]
            assert stats.chisquare(hist, width * reps).pvalue > 1e-4
        hist = np.histogram(counts.ravel(), bins=edges)[0]
        assert stats.chisquare(hist, width * tests).pvalue > 1e-3


# ================================================================== 3. run_contrast: determinism, direction
@pytest.fixture(scope="module")
def planted(mni):
    """20 null experiments; the first 10 (group A) all report a focus at one voxel of left M1."""
    v0, ijk0 = _nearest_mask_voxel(mni, [-38, -22, 56])
    placed = _null_pool(mni, seed=21, n_experiments=20, foci=(10, 20), extra_ijk=ijk0, n_extra=10)
    region = _ball(mni, ijk0, 6.0)  # both main effects "significant" within 12 mm
    a = _group(placed, mni, range(10), region)
    b = _group(placed, mni, range(10, 20), region)
    return SimpleNamespace(v0=v0, region=region, a=a, b=b)


def test_contrast_deterministic_and_seeded(planted):
    kw = dict(permutations=500, p=ALPHA, min_volume_mm3=0.0)
    r1 = run_contrast(planted.a, planted.b, seed=1, **kw)
    r1b = run_contrast(planted.a, planted.b, seed=1, **kw)
    r2 = run_contrast(planted.a, planted.b, seed=2, **kw)
    assert r1.maps.keys() == r1b.maps.keys() == {"diff", "p_AgtB", "p_BgtA", "z_AgtB", "z_BgtA", "z_contrast"}
    for key in r1.maps:
        assert np.array_equal(r1.maps[key], r1b.maps[key]), key
    assert r1.clusters.equals(r1b.clusters)
    assert np.array_equal(r1.maps["diff"], r2.maps["diff"])  # the observed difference has no randomness
    assert not np.array_equal(r1.maps["p_AgtB"], r2.maps["p_AgtB"])
    assert not np.array_equal(r1.maps["p_BgtA"], r2.maps["p_BgtA"])
    outside = np.setdiff1d(np.arange(r1.maps["diff"].size), planted.region)
    for key in ("p_AgtB", "p_BgtA"):  # only voxels significant in a main effect are tested
        assert np.all(r1.maps[key][outside] == 1.0)
        assert np.all((r1.maps[key] >= 1 / 500) & (r1.maps[key] <= 1.0))
    assert r1.params == {"method": "gingerale", "permutations": 500, "p": ALPHA, "min_volume_mm3": 0.0, "seed": 1,
                         "n_a": 10, "n_b": 10, "tested_voxels": planted.region.size}


def test_contrast_finds_a_planted_difference_in_its_direction(planted):
    v0 = planted.v0
    res = run_contrast(planted.a, planted.b, permutations=500, seed=1, p=ALPHA, min_volume_mm3=0.0)
    assert res.maps["diff"][v0] > 0
    # only the observed split puts all ten planted experiments in A: nothing reaches it, p is the floor 1/n
    assert res.maps["p_AgtB"][v0] == 1 / 500 and res.maps["p_BgtA"][v0] == 1.0
    assert res.maps["z_AgtB"][v0] > 2.8 and res.maps["z_BgtA"][v0] == 0.0
    assert res.maps["z_contrast"][v0] == res.maps["z_AgtB"][v0]
    a_gt_b = res.clusters[res.clusters["direction"] == "A>B"]
    assert len(a_gt_b) >= 1 and a_gt_b["peak_stat_z"].max() == res.maps["z_AgtB"].max()
    # the same contrast the other way round: B>A there, with the same z
    rev = run_contrast(planted.b, planted.a, permutations=500, seed=1, p=ALPHA, min_volume_mm3=0.0)
    assert rev.maps["diff"][v0] == pytest.approx(-res.maps["diff"][v0], rel=1e-12)
    assert rev.maps["z_BgtA"][v0] == res.maps["z_AgtB"][v0] and rev.maps["z_AgtB"][v0] == 0.0
    # the subtraction method agrees in sign and rejects there too
    sub = run_contrast(planted.a, planted.b, method="subtraction", permutations=200, seed=1, p=0.01)
    assert sub.maps["z_subtraction"][v0] > 0 and sub.maps["z_AgtB"][v0] > 0 and sub.maps["z_BgtA"][v0] == 0


def test_contrast_with_nothing_significant_tests_nothing(planted):
    a = SimpleNamespace(**{**vars(planted.a), "maps": {"z_cfwe": np.zeros_like(planted.a.maps["z_cfwe"])}})
    b = SimpleNamespace(**{**vars(planted.b), "maps": {"z_cfwe": np.zeros_like(planted.b.maps["z_cfwe"])}})
    res = run_contrast(a, b, permutations=100)
    assert res.params["tested_voxels"] == 0 and len(res.clusters) == 0
    assert np.all(res.maps["p_AgtB"] == 1.0) and not np.any(res.maps["z_contrast"])
    assert res.notes == ["No voxel was tested: neither main effect has a significant cluster."]


# ================================================================== 4. balanced contrast
@pytest.mark.parametrize(
    "n_a, n_b, expected",
    # JALE: min(floor(mean(min(nA, nB), 17)), min(nA, nB) - 2), worked by hand
    [(30, 10, 8),    # min 10: floor(13.5) = 13, 10 - 2 = 8
     (10, 30, 8),
     (20, 25, 18),   # min 20: floor(18.5) = 18, 18
     (17, 40, 15),   # min 17: 17, 15
     (19, 19, 17),   # min 19: 18, 17
     (50, 60, 33),   # min 50: floor(33.5) = 33, 48
     (5, 3, 1)],     # min 3: 10, 1
)
def test_default_target_n_is_jales_rule(n_a, n_b, expected):
    assert default_target_n(n_a, n_b) == expected


@pytest.fixture(scope="module")
def unequal(mni):
    """40 null experiments as groups of 30 and 10, both 'significant' in a 12 mm ball."""
    v0, ijk0 = _nearest_mask_voxel(mni, [0, -60, -30])
    placed = _null_pool(mni, seed=31, n_experiments=40, foci=(10, 20))
    region = _ball(mni, ijk0, 6.0)
    return SimpleNamespace(placed=placed, region=region,
                           a=_group(placed, mni, range(30), region), b=_group(placed, mni, range(30, 40), region))


def test_balanced_contrast_and_size_note(mni, unequal):
    size_note = "The groups differ a lot in size (30 vs 10 experiments)"
    bal = run_contrast(unequal.a, unequal.b, method="balanced", permutations=40, subsamples=10, seed=4)
    assert bal.params["target_n"] == default_target_n(30, 10) == 8 and bal.params["subsamples"] == 10
    assert not any("differ a lot in size" in n for n in bal.notes)
    assert np.all((bal.maps["p_AgtB"] >= 1 / 40) & (bal.maps["p_AgtB"] <= 1.0))
    again = run_contrast(unequal.a, unequal.b, method="balanced", permutations=40, subsamples=10, seed=4)
    for key in bal.maps:
        assert np.array_equal(bal.maps[key], again.maps[key]), key
    assert run_contrast(unequal.a, unequal.b, method="balanced", permutations=5, subsamples=3,
                        target_n=5).params["target_n"] == 5

    ging = run_contrast(unequal.a, unequal.b, method="gingerale", permutations=100, seed=4)
    assert any(n.startswith(size_note) and "Consider 'method: balanced'" in n for n in ging.notes)
    sub = run_contrast(unequal.b, unequal.a, method="subtraction", permutations=20, seed=4)
    assert any(n.startswith("The groups differ a lot in size (10 vs 30 experiments)") for n in sub.notes)
    similar = run_contrast(_group(unequal.placed, mni, range(15), unequal.region),
                           _group(unequal.placed, mni, range(15, 25), unequal.region), permutations=20)
    assert not any("differ a lot in size" in n for n in similar.notes)  # 15 vs 10: ratio 1.5 < 2


# ================================================================== 5. C-SALE relocation
def _binned_chisquare(draws, probs, n_bins):
    """Chi-square p of draws (voxel numbers) in bins of about equal probability mass."""
    start = np.cumsum(probs) - probs  # each voxel goes to the bin where its mass starts
    bin_of = np.minimum((start * n_bins).astype(int), n_bins - 1)
    observed = np.bincount(bin_of[draws.ravel()], minlength=n_bins)
    expected = np.bincount(bin_of, weights=probs, minlength=n_bins) * draws.size
    return stats.chisquare(observed, expected).pvalue, observed, expected


def test_csale_relocation_follows_the_base_rate(mni):
    core, amask = _region(mni, "cerebellum", 6.0)
    a_flat = np.flatnonzero(amask.ravel())
    density = np.zeros(mni.mask.size)
    density[mni.mask_flat] = load_base_rate("neurosynth", mni)
    probs = base_rate_map(density[a_flat])
    cdf = np.cumsum(probs)
    n_batches, n_foci = 20, 500
    draws = np.vstack([batch_draws(7, b, BATCH_SIZE, n_foci, a_flat.size, cdf) for b in range(n_batches)])
    assert draws.shape == (n_batches * BATCH_SIZE, n_foci) and draws.min() >= 0 and draws.max() < a_flat.size
    # 25 bins of ~4 % mass: ~12,800 expected draws each; a correct sampler fails p > 1e-3 once in 1,000 seeds
    p, observed, expected = _binned_chisquare(draws, probs, 25)
    assert p > 1e-3, (observed, expected)
    # the base rate is far from uniform over the region, so the test has power against a uniform sampler
    uniform = np.full(a_flat.size, 1.0 / a_flat.size)
    assert _binned_chisquare(draws, uniform, 25)[0] < 1e-12
    # seeded: the same batch gives the same draws, another batch others
    assert np.array_equal(draws[:BATCH_SIZE], batch_draws(7, 0, BATCH_SIZE, n_foci, a_flat.size, cdf))
    assert not np.array_equal(draws[:BATCH_SIZE], draws[BATCH_SIZE:2 * BATCH_SIZE])


def test_csale_on_the_array_engine_equals_the_cpu_engine(project_a, monkeypatch):
    """C-SALE's voxel-wise null on the GPU engine's code (run here with NumPy) gives the CPU's
    counts, so the same maps and table; the project's C-SALE provenance names its engine."""
    import alemap.designs.csale as csale

    prov = json.loads((project_a.out / "cerebellum" / "provenance.json").read_text())
    assert prov["backend"] == "cpu-numba"
    from alemap.io import load_experiments

    project = load_project(project_a.path)
    est = ALE(quiet=True)
    placed, grid = est.place(load_experiments([str(project_a.folder / "motor_learning.tsv")])), est._grid()
    kw = dict(iterations=64, p=0.05, k=5, seed=3, quiet=True)
    cpu = csale.run_csale(placed, grid, backend="cpu", **kw)
    monkeypatch.setattr(csale, "resolve_backend", lambda name: "numpy")
    monkeypatch.setattr(csale, "backend_label", lambda engine: f"{engine}-array")
    arr = csale.run_csale(placed, grid, backend="gpu", **kw)
    assert (cpu.backend, arr.backend) == ("cpu-numba", "numpy-array")
    assert len(cpu.clusters) > 0 and 0 < np.count_nonzero(cpu.maps["p"] < 1) < cpu.maps["p"].size
    for key in cpu.maps:
        assert np.array_equal(cpu.maps[key], arr.maps[key]), key
    assert cpu.clusters.equals(arr.clusters)
    assert project.analyses["cerebellum"]["type"] == "csale"


def test_weighted_draws_synthetic_and_uniform():
    k = 40
    weights = np.arange(k, dtype=float) % 7  # zeros at 0, 7, 14, ...: never drawn
    weights[-1] = 0.0  # and at the very end
    probs = weights / weights.sum()
    draws = batch_draws(3, 0, 100, 2000, k, np.cumsum(probs))
    counts = np.bincount(draws.ravel(), minlength=k)
    assert counts[weights == 0].sum() == 0
    nz = weights > 0
    assert stats.chisquare(counts[nz], probs[nz] * draws.size).pvalue > 1e-3
    # a cumulative sum that does not end at 1 is scaled (u * cdf[-1])
    draws7 = batch_draws(3, 1, 100, 2000, k, 7.0 * np.cumsum(probs))
    assert stats.chisquare(np.bincount(draws7.ravel(), minlength=k)[nz], probs[nz] * draws7.size).pvalue > 1e-3
    # uniform: no cdf, or a flat one
    for cdf in (None, np.cumsum(np.full(k, 1.0 / k))):
        d = batch_draws(5, 0, 100, 2000, k, cdf)
        assert stats.chisquare(np.bincount(d.ravel(), minlength=k)).pvalue > 1e-3


# ================================================================== 6. resume of a project
class _Stop(Exception):
    pass


def _files(folder: Path) -> set:
    return {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()}


def _without_times(prov: dict) -> dict:
    return {k: v for k, v in prov.items() if k not in ("created", "runtime_seconds")}


@pytest.mark.slow
def test_interrupted_project_resumes_to_identical_outputs(project_a, monkeypatch):
    a, b = project_a.out, project_a.folder / "out_b"
    project = load_project(project_a.path)
    assert set(project_a.run.status) == set(FILES)

    # interrupt the second ALE analysis ('sequence') after two of its four batches (of 32 iterations)
    monkeypatch.setattr(checkpoint, "CHECKPOINT_EVERY_S", 0.0)
    original = checkpoint.NullCheckpoint.on_batch
    seen = {"n": 0}

    def stop_in_sequence(self, batch, maxima):
        original(self, batch, maxima)
        if self.path.parent.name == "sequence":
            seen["n"] += 1
            if seen["n"] == 2:
                raise _Stop

    monkeypatch.setattr(checkpoint.NullCheckpoint, "on_batch", stop_in_sequence)
    with pytest.raises(_Stop):
        run_project(project, b, jobs=2, quiet=True)
    assert (b / "sequence" / CHECKPOINT).is_file()
    assert not (b / "sequence" / "provenance.json").exists() and not (b / "project.json").exists()
    assert (b / "all" / "provenance.json").is_file() and not (b / "sensorimotor").exists()
    monkeypatch.setattr(checkpoint.NullCheckpoint, "on_batch", original)

    # rerun: 'all' is skipped untouched, 'sequence' resumes (2 of 4 batches left), the rest runs
    mtimes = {p: p.stat().st_mtime_ns for p in (b / "all").iterdir()}
    ran = []
    real = montecarlo.batch_draws

    def counting(seed, batch, n_iter, n_foci, n_mask, cdf=None):
        if cdf is None:  # the ALE Monte Carlo (C-SALE draws with a cdf)
            ran.append(batch)
        return real(seed, batch, n_iter, n_foci, n_mask, cdf)

    monkeypatch.setattr(montecarlo, "batch_draws", counting)
    rerun = run_project(project, b, jobs=2, quiet=True)
    n_batches = -(-128 // BATCH_SIZE)
    assert len(ran) == (n_batches - 2) + n_batches
    assert rerun.status["all"] == "skipped (complete)"
    assert {p: p.stat().st_mtime_ns for p in (b / "all").iterdir()} == mtimes
    for name in FILES:
        if name != "all":
            assert rerun.status[name] == project_a.run.status[name], name

    # every output equals the uninterrupted run's, byte for byte (provenance: all but its times)
    assert _files(b) == _files(a)
    for name, expected in FILES.items():
        assert set(expected) | {"provenance.json"} <= {p.name for p in (b / name).iterdir()}, name
    for rel in sorted(_files(a), key=str):
        if rel.name == "provenance.json":
            pa, pb = (json.loads((root / rel).read_text()) for root in (a, b))
            assert _without_times(pa) == _without_times(pb), rel
        elif rel.name == "project.json":
            pa, pb = (json.loads((root / rel).read_text()) for root in (a, b))
            pb["analyses"]["all"]["status"] = pa["analyses"]["all"]["status"]
            assert pa == pb
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel

    # and a third run skips everything
    again = run_project(project, b, quiet=True)
    assert set(again.status.values()) == {"skipped (complete)"}


def test_vfwe_conjunction_after_skipped_main_effects(project_a, tmp_path):
    path = write_project(project_a.folder, PROJECT + "  both_vfwe: {type: conjunction, analyses: [all, sequence], "
                         "map: z_vfwe}\n", name="with_vfwe.yaml", table=None)
    out = tmp_path / "out"
    shutil.copytree(project_a.out, out)
    run = run_project(load_project(path), out, quiet=True)
    assert run.status["all"] == run.status["sequence"] == "skipped (complete)"
    z_all, z_seq = _z(out / "all" / "z_vfwe.nii.gz"), _z(out / "sequence" / "z_vfwe.nii.gz")
    expected = np.where((z_all > 0) & (z_seq > 0), np.minimum(z_all, z_seq), 0)
    assert np.array_equal(_z(out / "both_vfwe" / "z_conjunction.nii.gz"), expected)


def test_contrast_seed_from_defaults_is_part_of_its_key(project_a, tmp_path):
    text = PROJECT.replace("defaults: {iterations: 128, seed: 3}", "defaults: {iterations: 128, seed: 4}")
    text = text.replace("{group: all}", "{group: all, seed: 3}").replace("{group: sequence}", "{group: sequence, seed: 3}")
    text = text.replace("{group: sensorimotor}", "{group: sensorimotor, seed: 3}").replace("k: 5}", "k: 5, seed: 3}")
    path = write_project(project_a.folder, text, name="explicit_seeds.yaml", table=None)
    out = tmp_path / "out"
    shutil.copytree(project_a.out, out)
    run = run_project(load_project(path), out, quiet=True)
    assert all(run.status[n] == "skipped (complete)" for n in ALE_NAMES)  # same main effects: same keys
    assert json.loads((out / "seq_vs_sm" / "provenance.json").read_text())["parameters"]["seed"] == 4


# ================================================================== 7. the demo
@pytest.mark.slow
def test_demo_writes_every_analysis(tmp_path, capsys):
    from alemap.cli.demo import project_path

    out = tmp_path / "demo"
    with pytest.warns(UserWarning, match="analysis 'sensorimotor': only 16 experiments"):
        assert main(["demo", "-o", str(out), "--iterations", "200", "--quiet"]) == 0
    assert capsys.readouterr().err == ""  # --quiet
    project = load_project(project_path())
    expected = {"ale": ALE_FILES, "contrast": CONTRAST_FILES, "conjunction": CONJUNCTION_FILES, "csale": CSALE_FILES}
    summary = json.loads((out / "project.json").read_text())
    assert list(summary["analyses"]) == [n for n, a in project.analyses.items() if a["type"] == "ale"] + \
        [n for n, a in project.analyses.items() if a["type"] != "ale"]
    for name, spec in project.analyses.items():
        folder = out / name
        names = {p.name for p in folder.iterdir()}
        assert set(expected[spec["type"]]) | {"provenance.json"} <= names, name
        assert not any(n.startswith(".tmp-") or n == CHECKPOINT for n in names), name
        prov = json.loads((folder / "provenance.json").read_text())
        assert prov.get("analysis", name) == name and len(prov["analysis_key"]) == 64
        assert summary["analyses"][name]["type"] == spec["type"]
        if spec["type"] in ("ale", "csale"):
            assert prov["parameters"]["iterations"] == 200  # --iterations reaches every Monte Carlo
    assert set(project.analyses) | {"project.json", "report.html"} <= {p.name for p in out.iterdir()}
    assert _z(out / "global" / "z_cfwe.nii.gz").max() > 3  # the motor network converges
    # a second demo into the same folder is complete already (the report is not rewritten: it is slow)
    with pytest.warns(UserWarning):
        assert main(["demo", "-o", str(out), "--iterations", "200", "--quiet", "--no-report"]) == 0
    statuses = {a["status"] for a in json.loads((out / "project.json").read_text())["analyses"].values()}
    assert statuses == {"skipped (complete)"}
