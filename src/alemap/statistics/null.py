"""The analytic ALE null distribution (Eickhoff et al. 2012).

Eickhoff SB, Bzdok D, Laird AR, Kurth F, Fox PT (2012). Activation likelihood
estimation meta-analysis revisited. NeuroImage 59:2349-2361.

Under the null every experiment's MA values are spatially independent, so the
distribution of ALE is that of ``1 - prod_i (1 - X_i)`` with ``X_i`` drawn
from experiment ``i``'s histogram of MA values over *all* mask voxels (zeros
included). Histograms live on a grid of bin centres ``0, 1e-5, 2e-5, ...``;
values go to the nearest centre (ties away from zero, as NiMARE 0.22) and
experiments are folded in one at a time: for every pair of occupied bins
``(a, b)`` the mass ``P_a P_b`` goes to the bin of ``1 - (1 - a)(1 - b)``.

The p-value of an ALE value is the upper-tail mass of its bin, clipped below
at the smallest non-zero tail mass; ALE <= 0 has p = 1.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np

from alemap.statistics.ale import MAMaps

__all__ = ["BIN_WIDTH", "AnalyticNull", "MAHistograms", "analytic_null", "null_from_histograms"]

#: Width of the null histogram's bins (NiMARE and CBIG MATLAB: 1e-5).
BIN_WIDTH = 1e-5
_INV = 100000.0


@numba.njit(cache=True, inline="always")
def _nearest_bin(value, n_bins):
    scaled = value * _INV
    fl = np.floor(scaled)
    idx = int(fl) + (1 if scaled - fl >= 0.5 else 0)
    if idx < 0:
        return 0
    if idx >= n_bins:
        return n_bins - 1
    return idx


@numba.njit(cache=True, nogil=True)
def _close_histogram(counts, n_voxels, e, ptr, parts_b, parts_p):
    """Experiment e's histogram from its integer bin counts (all mask voxels
    counted): occupied bins and probabilities appended to the parts, counts
    cleared, ``ptr[e + 1]`` set."""
    occupied = np.flatnonzero(counts)
    parts_b.append(occupied)
    parts_p.append(counts[occupied] / n_voxels)
    for t in range(occupied.shape[0]):
        counts[occupied[t]] = 0
    ptr[e + 1] = ptr[e] + occupied.shape[0]


@numba.njit(cache=True, nogil=True)
def _concat_histograms(ptr, parts_b, parts_p):
    """The parts as one CSR pair ``(bins, p)`` over ``ptr``."""
    out_bins = np.empty(ptr[-1], dtype=np.int64)
    out_p = np.empty(ptr[-1])
    for e in range(ptr.shape[0] - 1):
        b, p = parts_b[e], parts_p[e]
        for t in range(b.shape[0]):  # element loops: a slice assignment compiles numba's shape-error formatting
            out_bins[ptr[e] + t] = b[t]
            out_p[ptr[e] + t] = p[t]
    return out_bins, out_p


@numba.njit(cache=True, nogil=True)
def _histograms(indptr, vals, n_voxels, n_bins):
    """Each experiment's histogram of MA values over all mask voxels (zeros
    included): occupied bins (ascending) and their probabilities, CSR."""
    n_exp = indptr.shape[0] - 1
    counts = np.zeros(n_bins, dtype=np.int64)
    ptr = np.zeros(n_exp + 1, dtype=np.int64)
    parts_b = [np.empty(0, dtype=np.int64) for _ in range(0)]
    parts_p = [np.empty(0) for _ in range(0)]
    for e in range(n_exp):
        a, b = indptr[e], indptr[e + 1]
        for t in range(a, b):
            counts[_nearest_bin(vals[t], n_bins)] += 1
        counts[0] += n_voxels - (b - a)
        _close_histogram(counts, n_voxels, e, ptr, parts_b, parts_p)
    out_bins, out_p = _concat_histograms(ptr, parts_b, parts_p)
    return ptr, out_bins, out_p


@numba.njit(cache=True, nogil=True, inline="always")
def _target(one_minus_b, k, centres, n_bins):
    """Bin of ``1 - (1 - b)(1 - c_k)``: where the mass of null bin ``k`` goes
    when it meets an experiment's MA value ``b``."""
    return _nearest_bin(1.0 - one_minus_b * (1.0 - centres[k]), n_bins)


@numba.njit(cache=True, nogil=True)
def _runs_pass(values, centres, n_bins, ptr, k0, m0, fill):
    """Count (``fill=False``, into ``ptr``) or write the runs of every MA bin."""
    n = 0
    for u in range(values.shape[0]):
        om = 1.0 - centres[values[u]]
        prev = -2
        for k in range(n_bins):
            m = _target(om, k, centres, n_bins)
            if m != prev + 1:
                if fill:
                    k0[n] = k
                    m0[n] = m
                n += 1
            prev = m
        ptr[u + 1] = n


def _runs(values, centres, n_bins):
    """For each MA bin ``values[u]``, the map ``k -> _target(k)`` cut into runs
    on which it is a shift: run ``r`` covers ``k0[r] <= k < k0[r + 1]`` (the
    last one up to ``n_bins``) and sends ``k`` to ``m0[r] + k - k0[r]``. The map
    is non-decreasing (every float step is monotone) and advances by 0 or 1,
    so runs are long (~1/b bins) and a fold is a few vector AXPYs."""
    ptr = np.zeros(values.shape[0] + 1, dtype=np.int64)
    empty = np.empty(0, dtype=np.int32)
    _runs_pass(values, centres, n_bins, ptr, empty, empty, False)
    k0 = np.empty(int(ptr[-1]), dtype=np.int32)
    m0 = np.empty(int(ptr[-1]), dtype=np.int32)
    _runs_pass(values, centres, n_bins, ptr, k0, m0, True)
    return ptr, k0, m0


@numba.njit(cache=True, nogil=True)
def _fold_chunks(h, n_src, out, n_dst, c_lo, c_hi, chunk, us, p, ptr, k0, m0, n_bins):
    """One experiment folded into the target bins of chunks ``c_lo..c_hi-1``.

    ``out[m]`` is the sum of ``p_t * h[k]`` over the experiment's bins ``t``
    (ascending) and then ``k`` (ascending) with ``_target(k, t) == m``: the
    same order whatever the chunks, so any split over threads gives the same
    bits."""
    for c in range(c_lo, c_hi):
        a = c * chunk
        z = min(a + chunk, n_dst)
        for m in range(a, z):
            out[m] = 0.0
        for t in range(us.shape[0]):
            u = us[t]
            pt = p[t]
            r_lo, r_hi = ptr[u], ptr[u + 1]
            # the run holding target a: the one before the first starting at or after a
            r = max(r_lo, r_lo + np.searchsorted(m0[r_lo:r_hi], a) - 1)
            while r < r_hi:
                ms = m0[r]
                if ms >= z:
                    break
                ks = k0[r]
                ke = min(k0[r + 1] if r + 1 < r_hi else n_bins, n_src)
                lo = ks + (a - ms) if ms < a else ks
                hi = min(ke, ks + (z - ms))
                if hi > lo:
                    # unsigned indices: no negative-index wrap-around, so the loop vectorises
                    d0 = np.uint64(lo + ms - ks)
                    s0 = np.uint64(lo)
                    for i in range(np.uint64(hi - lo)):
                        out[d0 + i] += pt * h[s0 + i]
                r += 1


#: Target bins per unit of work (read at each call: tests shrink it).
CHUNK = 2048
#: Experiments a thread folds between two hand-overs to the next thread.
BATCH = 16


@numba.njit(cache=True, nogil=True)
def _fold_span(ptr, us, p, n_src, e_lo, e_hi, c_lo, c_hi, chunk, h, out, ring_in, ring_out, m_lo, m_hi, span,
               run_ptr, k0, m0, n_bins):
    """Experiments ``e_lo..e_hi-1`` folded into the target chunks ``c_lo..c_hi-1``
    (bins ``m_lo..m_hi-1``).

    A target never lies below its source (``1 - (1 - a)(1 - b) >= a``) nor more
    than ``span`` bins above it, so the bins below ``m_lo`` that this range
    needs are the ``span`` bins under it: they come from the thread below
    through ``ring_in`` (one row per experiment), and this range hands its own
    top ``span`` bins to the thread above through ``ring_out``. The latest
    histogram is left in ``h``.
    """
    for e in range(e_lo, e_hi):
        if ring_in.shape[0] > 0 and e > 0:
            # element loops here and below: an array-to-slice assignment would compile numba's
            # shape-error message formatting (seconds on the first run)
            row = (e - 1) % ring_in.shape[0]
            for t in range(span):
                h[m_lo - span + t] = ring_in[row, t]
        a, b = ptr[e], ptr[e + 1]
        _fold_chunks(h, n_src[e], out, n_src[e + 1], c_lo, c_hi, chunk, us[a:b], p[a:b], run_ptr, k0, m0, n_bins)
        if ring_out.shape[0] > 0:
            row = e % ring_out.shape[0]
            for t in range(span):
                ring_out[row, t] = out[m_hi - span + t]
        h, out = out, h
    if (e_hi - e_lo) % 2 == 1:
        for t in range(m_lo, m_hi):  # the caller's h holds the result
            out[t] = h[t]


class _Aborted(RuntimeError):
    pass


def _fold(ptr, bins, p, centres, jobs):
    """Fold every experiment's histogram into the null, ``jobs`` threads each
    owning a fixed range of target bins (a pipeline: thread ``j`` folds
    experiment ``e`` once thread ``j - 1`` has folded ``e - 1``). Every bin is
    summed in the same order whatever ``jobs``: identical bits."""
    n_bins = centres.shape[0]
    n_exp = ptr.shape[0] - 1
    values = np.unique(bins)
    run_ptr, k0, m0 = _runs(values, centres, n_bins)
    us = np.searchsorted(values, bins)
    n_src = np.ones(n_exp + 1, dtype=np.int64)  # support of the null after e experiments
    for e in range(n_exp):
        top = _target(1.0 - centres[bins[ptr[e + 1] - 1]], n_src[e] - 1, centres, n_bins)
        n_src[e + 1] = min(n_bins, top + 1)
    span = int(bins.max(initial=0)) + 2
    n_chunks = -(-n_bins // CHUNK)
    n_threads = max(1, min(int(jobs), n_chunks // -(-span // CHUNK), n_exp // BATCH))
    c_edges = np.linspace(0, n_chunks, n_threads + 1).astype(np.int64)
    m_edges = np.minimum(c_edges * CHUNK, n_bins)
    h = [np.zeros(n_bins) for _ in range(n_threads)]
    out = [np.zeros(n_bins) for _ in range(n_threads)]
    for hj in h:
        hj[0] = 1.0
    # thread j hands its top `span` bins of each experiment to thread j + 1 through rings[j]
    rings = [np.zeros((3 * BATCH, span)) for _ in range(n_threads - 1)]
    no_ring = np.zeros((0, span))
    ready = [threading.Semaphore(0) for _ in rings]  # batches thread j has folded, for j + 1
    free = [threading.Semaphore(2) for _ in rings]  # batches thread j + 1 has read, so j may overwrite
    abort = threading.Event()
    last = n_threads - 1

    def wait(sem):
        while not sem.acquire(timeout=0.05):
            if abort.is_set():
                raise _Aborted("another fold thread failed")

    def thread(j):
        ring_in = rings[j - 1] if j > 0 else no_ring
        ring_out = rings[j] if j < last else no_ring
        try:
            for e_lo in range(0, n_exp, BATCH):
                if j > 0:
                    wait(ready[j - 1])
                if j < last:
                    wait(free[j])
                _fold_span(ptr, us, p, n_src, e_lo, min(n_exp, e_lo + BATCH), c_edges[j], c_edges[j + 1], CHUNK,
                           h[j], out[j], ring_in, ring_out, m_edges[j], m_edges[j + 1], span, run_ptr, k0, m0,
                           n_bins)
                if j < last:
                    ready[j].release()
                if j > 0:
                    free[j - 1].release()
        except BaseException:
            abort.set()
            raise

    if n_threads == 1:
        thread(0)
    else:
        with ThreadPoolExecutor(n_threads) as pool:
            futures = [pool.submit(thread, j) for j in range(n_threads)]
            errors = [f.exception() for f in futures]
        # the failure itself, not the threads stopped because of it
        for err in sorted((x for x in errors if x is not None), key=lambda x: isinstance(x, _Aborted)):
            raise err
    weights = np.empty(n_bins)
    for j in range(n_threads):
        weights[m_edges[j]:m_edges[j + 1]] = h[j][m_edges[j]:m_edges[j + 1]]
    return weights


@dataclass(frozen=True)
class MAHistograms:
    """Experiment ``e``'s MA histogram over all mask voxels (zeros included):
    occupied bins ``bins[ptr[e]:ptr[e+1]]`` (ascending, width 1e-5) and their
    probabilities ``p[...]``; ``max_ma[e]`` is its largest MA value."""

    ptr: np.ndarray
    bins: np.ndarray
    p: np.ndarray
    max_ma: np.ndarray


@dataclass(frozen=True)
class AnalyticNull:
    """Null histogram of ALE on a fixed grid of bin centres.

    ``survival[k]`` is P(ALE >= centres[k]) under the null.
    """

    centres: np.ndarray
    weights: np.ndarray

    @property
    def survival(self) -> np.ndarray:
        """Upper-tail probability at each bin centre (survival[0] = 1)."""
        tail = np.cumsum(self.weights[::-1])[::-1]
        return tail / tail[0]

    def p_values(self, ale: np.ndarray) -> np.ndarray:
        """One-tailed p of ALE values (p = 1 where ALE <= 0)."""
        ale = np.asarray(ale, dtype=np.float64)
        surv = self.survival
        floor = surv[surv > 0].min()
        scaled = ale * _INV
        fl = np.floor(scaled)
        idx = (fl + (scaled - fl >= 0.5)).astype(np.int64)
        idx = np.clip(idx, 0, surv.shape[0] - 1)
        p = np.where(ale > 0, surv[idx], 1.0)
        return np.clip(p, floor, 1.0)

    def threshold(self, p: float) -> float:
        """ALE cluster-forming threshold for a voxel-wise p.

        The centre of the bin just below the first bin whose tail mass is <= p,
        so that ``ALE > threshold`` keeps voxels with p <= p (NiMARE's rule).
        """
        surv = self.survival
        below = np.flatnonzero(surv <= p)
        if below.size == 0:
            return float(self.centres[-1])
        return float(self.centres[max(0, below[0] - 1)])


def analytic_null(ma: MAMaps, upto: float | None = None, jobs: int = 1) -> AnalyticNull:
    """Fold the experiments' MA histograms into the null of ALE (see
    :func:`null_from_histograms`)."""
    max_ma = ma.max_per_experiment()
    n_ma_bins = int(np.ceil(max_ma.max(initial=0.0) * _INV)) + 2
    ptr, bins, p = _histograms(ma.indptr, ma.vals, ma.n_voxels, n_ma_bins)
    return null_from_histograms(MAHistograms(ptr=ptr, bins=bins, p=p, max_ma=max_ma), upto, jobs)


def null_from_histograms(hist: MAHistograms, upto: float | None = None, jobs: int = 1) -> AnalyticNull:
    """Fold the experiments' MA histograms into the null of ALE.

    ``upto``: the largest ALE value whose p-value will be asked for (the
    observed maximum). Bins above it (plus two) are merged into one last bin.
    Because ``1 - (1 - a)(1 - b) >= max(a, b)``, mass never leaves that bin
    and every bin below it receives exactly the same contributions, in the
    same order, as without the cap: p-values up to ``upto`` are unchanged (to
    the last bits of the normalising sum) and the fold skips the far tail,
    which for hundreds of experiments is most of the support (a 1,000-experiment
    null reaches ALE ~1 in 1e-5 bins, its observed maximum ~0.3). p-values
    above ``upto`` are upper bounds (the tail mass of the merged bin).

    ``jobs`` threads share each experiment's fold by fixed ranges of target
    bins; every bin is summed in the same order whatever ``jobs`` (identical
    bits).
    """
    max_ma = np.ceil(hist.max_ma * _INV) / _INV
    max_ale = 1.0 - np.prod(1.0 - max_ma)
    if upto is not None:
        max_ale = min(max_ale, float(upto) + 2 * BIN_WIDTH)
    centres = np.round(np.arange(0.0, max_ale + 1.5 * BIN_WIDTH, BIN_WIDTH), 5)
    # an MA bin beyond the null's support (a capped null): its mass goes to the last bin
    bins = np.minimum(hist.bins, centres.shape[0] - 1)
    weights = _fold(hist.ptr, bins, hist.p, centres, max(1, int(jobs)))
    return AnalyticNull(centres=centres, weights=weights)
