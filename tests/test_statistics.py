"""ALE union, analytic null and p<->z against the spec's test vectors (section 8, items 3-5)."""

import numpy as np
import pytest

from alemap.kernels.gaussian import kernel_cubes
from alemap.statistics import ale_from_ma, analytic_null, ma_maps, p_to_z, z_to_p
from alemap.statistics.ale import MAMaps


def _ale_at_centre(foci_per_exp, n=10):
    mask = np.ones((41, 41, 41), dtype=bool)
    ijk = np.array([f for exp in foci_per_exp for f in exp])
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in foci_per_exp])])
    cubes = kernel_cubes([n])
    ma = ma_maps(ijk, offsets, np.zeros(len(foci_per_exp), dtype=np.int64), cubes, mask)
    ale = ale_from_ma(ma)
    return ale.reshape(mask.shape)[20, 20, 20], ma


def test_single_focus_ale_equals_kernel_peak():
    v, _ = _ale_at_centre([[(20, 20, 20)]])
    assert v == pytest.approx(0.00662871, abs=5e-9)


def test_two_foci_same_voxel_same_experiment_is_max_not_sum():
    v, ma = _ale_at_centre([[(20, 20, 20), (20, 20, 20)]])
    assert v == pytest.approx(0.00662871, abs=5e-9)
    assert ma.vals.max() == pytest.approx(0.00662871, abs=5e-9)


@pytest.mark.parametrize("k,expected", [(2, 0.013213474), (3, 0.019754593)])
def test_union_of_experiments(k, expected):
    v, _ = _ale_at_centre([[(20, 20, 20)]] * k)
    assert v == pytest.approx(expected, abs=1e-9)


def test_toy_analytic_null():
    # two experiments, MA 0.5 in one voxel of a 4-voxel mask
    ma = MAMaps(indptr=np.array([0, 1, 2]), cols=np.array([0, 1]), vals=np.array([0.5, 0.5]), n_voxels=4)
    null = analytic_null(ma)
    w = null.weights / null.weights.sum()
    idx = {c: i for i, c in enumerate(np.round(null.centres, 5))}
    assert w[idx[0.0]] == pytest.approx(0.5625)
    assert w[idx[0.5]] == pytest.approx(0.375)
    assert w[idx[0.75]] == pytest.approx(0.0625)
    assert null.p_values(np.array([0.75, 0.5, 0.0])) == pytest.approx([0.0625, 0.4375, 1.0])


def test_threshold_rule():
    ma = MAMaps(indptr=np.array([0, 1, 2]), cols=np.array([0, 1]), vals=np.array([0.5, 0.5]), n_voxels=4)
    null = analytic_null(ma)
    # the first bin whose tail mass is <= 0.1 is the one just above 0.5 (tail 0.0625),
    # so the cut is 0.5: ALE > 0.5 keeps exactly the voxels with p <= 0.1
    assert null.threshold(0.1) == pytest.approx(0.5, abs=1e-12)
    assert null.threshold(0.5) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("p,z", [(0.001, 3.090232), (0.01, 2.326348), (0.05, 1.644854), (1 / 228483, 4.445877)])
def test_p_to_z(p, z):
    assert p_to_z(p) == pytest.approx(z, abs=1e-6)
    assert z_to_p(z) == pytest.approx(p, rel=1e-5)


def test_p_to_z_is_finite_and_one_sided():
    z = p_to_z(np.array([0.0, 1e-320, 0.7, 1.0]))
    assert np.all(np.isfinite(z))
    assert z[2] == 0.0 and z[3] == 0.0


def test_null_capped_at_the_observed_maximum_is_exact_below_it():
    """analytic_null(ma, upto): bins below the cap are folded exactly as without it."""
    rng = np.random.default_rng(4)
    shape = (24, 24, 24)
    mask = np.ones(shape, dtype=bool)
    counts = rng.integers(2, 9, size=40)
    ijk = rng.integers(0, 24, size=(int(counts.sum()), 3))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    n_subjects = rng.integers(8, 30, size=40)
    cubes = kernel_cubes(n_subjects)
    ma = ma_maps(ijk, offsets, cubes.index(n_subjects), cubes, mask)
    ale = ale_from_ma(ma)
    full = analytic_null(ma)
    cap = analytic_null(ma, upto=float(ale.max()))
    assert len(cap.centres) < len(full.centres)
    assert np.array_equal(cap.centres, full.centres[: len(cap.centres)])
    # the folded weights below the merged last bin are bit-identical
    assert np.array_equal(cap.weights[:-1], full.weights[: len(cap.weights) - 1])
    np.testing.assert_allclose(cap.p_values(ale), full.p_values(ale), rtol=1e-13, atol=0)
    for p in (0.05, 0.01, 0.001):
        assert cap.threshold(p) == full.threshold(p)
    # above the cap p is an upper bound (the merged tail)
    above = np.array([cap.centres[-1] + 0.01])
    assert cap.p_values(above)[0] >= full.p_values(above)[0]
