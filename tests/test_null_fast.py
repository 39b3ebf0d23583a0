"""The fit's fast paths against slow, obviously correct references.

* :func:`alemap.statistics.onepass.ale_and_histograms` (ALE and the MA
  histograms without storing MA maps) gives the same bits as
  ``ma_maps`` -> ``ale_from_ma`` and the histogramming of ``analytic_null``,
  for any number of threads.
* The run-based, pipelined fold of the analytic null equals a direct fold of
  the definition (Eickhoff et al. 2012: every pair of occupied bins sends
  ``P_a P_b`` to the bin of ``1 - (1 - a)(1 - b)``), and gives the same bits
  for any number of threads.
"""

import numpy as np
import pytest

from alemap.kernels.gaussian import kernel_cubes
from alemap.statistics import ale_from_ma, analytic_null, ma_maps
from alemap.statistics import null as null_mod
from alemap.statistics.null import MAHistograms, null_from_histograms
from alemap.statistics.onepass import ale_and_histograms


def _data(seed, n_exp=60, shape=(30, 34, 28), hole=True):
    rng = np.random.default_rng(seed)
    mask = np.ones(shape, dtype=bool)
    if hole:  # a mask with holes and a cut-off side, as a brain mask has
        mask &= rng.random(shape) > 0.15
        mask[:, :, :3] = False
    counts = rng.integers(1, 12, size=n_exp)
    # foci cluster in the middle (overlapping kernels, a wide null) and some leave the grid
    ijk = rng.normal(np.array(shape) / 2, 5, size=(int(counts.sum()), 3)).round().astype(np.int64)
    ijk[rng.random(len(ijk)) < 0.05] += 40
    offsets = np.concatenate([[0], np.cumsum(counts)])
    n_subjects = rng.choice([6, 12, 25, 60], size=n_exp)
    cubes = kernel_cubes(n_subjects)
    return ijk, offsets, cubes.index(n_subjects), cubes, mask


def _reference_fold(hist: MAHistograms, centres: np.ndarray) -> np.ndarray:
    """The definition: for every occupied bin ``b`` of the experiment, every
    occupied null bin ``k`` sends ``P_b h_k`` to the nearest bin of
    ``1 - (1 - b)(1 - c_k)`` (ties up, clipped to the last bin)."""
    n_bins = len(centres)
    h = np.zeros(n_bins)
    h[0] = 1.0
    for e in range(len(hist.ptr) - 1):
        bins = np.minimum(hist.bins[hist.ptr[e]:hist.ptr[e + 1]], n_bins - 1)
        probs = hist.p[hist.ptr[e]:hist.ptr[e + 1]]
        k = np.flatnonzero(h)
        new = np.zeros(n_bins)
        for b, pb in zip(bins, probs):
            s = (1.0 - (1.0 - centres[b]) * (1.0 - centres[k])) * 100000.0
            fl = np.floor(s)
            m = np.clip(fl.astype(np.int64) + (s - fl >= 0.5), 0, n_bins - 1)
            np.add.at(new, m, pb * h[k])
        h = new
    return h


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_one_pass_equals_ma_maps(seed, jobs):
    args = _data(seed)
    ma = ma_maps(*args)
    ale, hist = ale_and_histograms(*args, jobs=jobs)
    assert np.array_equal(ale, ale_from_ma(ma))
    n_ma_bins = int(np.ceil(ma.max_per_experiment().max() * 1e5)) + 2
    ptr, bins, p = null_mod._histograms(ma.indptr, ma.vals, ma.n_voxels, n_ma_bins)
    assert np.array_equal(hist.ptr, ptr)
    assert np.array_equal(hist.bins, bins)
    assert np.array_equal(hist.p, p)
    assert np.array_equal(hist.max_ma, ma.max_per_experiment())
    # the null of the fit is the null of the MA maps
    assert np.array_equal(null_from_histograms(hist).weights, analytic_null(ma).weights)


def test_one_pass_experiment_without_mask_voxels():
    ijk, offsets, coe, cubes, mask = _data(3, n_exp=5)
    ijk[offsets[2]:offsets[3]] = [-100, -100, -100]  # experiment 2: far outside the grid
    ale, hist = ale_and_histograms(ijk, offsets, coe, cubes, mask, jobs=2)
    e2 = slice(hist.ptr[2], hist.ptr[3])
    assert hist.bins[e2].tolist() == [0] and hist.p[e2].tolist() == [1.0] and hist.max_ma[2] == 0.0
    assert np.array_equal(ale, ale_from_ma(ma_maps(ijk, offsets, coe, cubes, mask)))


@pytest.mark.parametrize("upto", [None, "max"])
def test_fold_equals_the_definition(upto):
    args = _data(5, n_exp=12, shape=(20, 20, 20), hole=False)
    ale, hist = ale_and_histograms(*args)
    cap = float(ale.max()) if upto else None
    null = null_from_histograms(hist, upto=cap)
    ref = _reference_fold(hist, null.centres)
    assert np.array_equal(null.weights, ref)  # same pairs, same order of the sums
    assert null.weights.sum() == pytest.approx(1.0, abs=1e-12)


def test_fold_gives_the_same_bits_for_any_number_of_threads(monkeypatch):
    """Small chunks and batches so that a small null is shared by several threads."""
    monkeypatch.setattr(null_mod, "CHUNK", 64)
    monkeypatch.setattr(null_mod, "BATCH", 2)
    args = _data(7, n_exp=80)
    ale, hist = ale_and_histograms(*args)
    calls = []
    span_fn = null_mod._fold_span

    def spy(*a):
        calls.append((a[6], a[7]))  # c_lo, c_hi: the thread's chunks
        return span_fn(*a)

    monkeypatch.setattr(null_mod, "_fold_span", spy)
    results = {}
    for jobs in (1, 2, 3, 5):
        calls.clear()
        results[jobs] = null_from_histograms(hist, upto=float(ale.max()), jobs=jobs).weights
        assert len({c for c in calls}) == min(jobs, 5)  # the pipeline really ran on `jobs` threads
    for jobs in (2, 3, 5):
        assert np.array_equal(results[jobs], results[1])
    ref = _reference_fold(hist, null_from_histograms(hist, upto=float(ale.max())).centres)
    assert np.array_equal(results[1], ref)


def test_a_failing_fold_thread_stops_the_others(monkeypatch):
    monkeypatch.setattr(null_mod, "CHUNK", 64)
    monkeypatch.setattr(null_mod, "BATCH", 2)
    args = _data(7, n_exp=80)
    _, hist = ale_and_histograms(*args)
    span_fn = null_mod._fold_span

    def broken(*a):
        if a[6] > 0:  # every thread but the first
            raise MemoryError("boom")
        return span_fn(*a)

    monkeypatch.setattr(null_mod, "_fold_span", broken)
    with pytest.raises(MemoryError, match="boom"):
        null_from_histograms(hist, jobs=3)
