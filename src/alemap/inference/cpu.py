"""Compiled CPU engine for the Monte Carlo null of ALE.

One Monte Carlo iteration relocates every focus to a random in-mask voxel,
rebuilds the ALE map and records three maxima: the largest ALE (voxel-level
FWE), and the largest cluster size and cluster mass above the cluster-forming
threshold (cluster-level FWE; Eickhoff et al. 2012, 2016).

How an iteration is computed:

1. ``log(1 - ALE)`` is the sum over experiments of ``log(1 - MA)``; kernels
   are stored as cubes of ``log1p(-k)``, and an experiment with several foci
   reaching a voxel contributes their minimum (= the maximum of MA,
   Turkeltaub 2012). Every path below adds, at every voxel, the same values in
   the same order (experiment order) as this plain accumulation
   (``_accumulate``), so all paths give the same bits.
2. Slabs (``_tiled``): foci are binned into tiles narrow across and long
   along the grid's fastest axis (so the innermost loops run over whole
   kernel rows), and each tile is accumulated in a cache-resident buffer,
   experiment by experiment (an experiment with several foci in the tile is
   combined by minimum in a second buffer, then added box by box). Kernel
   rows are zero-padded so each row is a few eight-wide vector operations
   (``simd``) rather than a loop with its own setup.
3. Pruned path (``_pruned``): an upper bound of ALE per 2x2x2-voxel block
   (the product of the kernels' block maxima over all foci, float32 with a
   rigorous rounding margin) selects the candidate blocks that could exceed
   the cluster-forming threshold; only the ``SPARSE_SLAB`` tiles holding
   candidates are computed, each over the z-range its candidates span and
   from the foci that reach it. If no voxel exceeds the threshold the
   iteration is recomputed on the whole grid, so the maximum ALE is always
   exact. When more than ``MAX_CANDIDATE_SHARE_BEFORE_WINDOWS`` of the blocks
   are candidates (about 80 experiments and more) the window path takes over.
4. Window path (:mod:`alemap.inference.windows`): a per-voxel bound from the
   kernels' separable Gaussian factors selects candidate voxels, and exact
   values are computed on the eight-voxel windows along z that hold them, in
   the same order as above. Above ``windows.MAX_WINDOW_SHARE`` candidate voxels
   (or without the window path, above ``MAX_CANDIDATE_SHARE`` candidate blocks)
   the whole grid is computed on ``SLAB`` tiles.
5. The supra-threshold voxels are labelled by flood fill with 6-, 18- or
   26-connectivity; cluster size is the voxel count and cluster mass the sum of
   ``ALE - threshold``.

Work arrays are per thread; the function releases the GIL so threads run
batches in parallel. ``tests/test_properties.py`` holds a slow, plainly
written version of the same iteration that the engine is tested against.
"""

from __future__ import annotations

import numba
import numpy as np

from alemap.inference.simd import LANES, LANES_F32, add8, add16f, flush8, min8
from alemap.inference.supra import keep_if_supra
from alemap.inference.windows import MAX_WINDOW_SHARE, WindowWork, windowed

__all__ = ["Workspace", "run_batch", "neighbour_offsets"]

#: Above this share of candidate blocks the pruned path (bound pass, then the slabs holding
#: candidates) costs more than the whole grid (one thread, session 5, Neurosynth tables: share
#: 0.064 at 100 tables 7.6 vs 12.2 ms, 0.10 at 150 tables 15.3 vs 13.5 ms).
MAX_CANDIDATE_SHARE = 0.08
#: The same limit when the window path (``windows``) is the alternative: it overtakes the block
#: bound at ~4.5 % candidate blocks (one thread, session 6: 70 tables, share 0.040, 3.9 ms
#: against 4.4 ms by windows; 100 tables, share 0.062, 5.9 against 3.6).
MAX_CANDIDATE_SHARE_BEFORE_WINDOWS = 0.045
#: Iterations to skip a bound (the block bound, or the window path's) after it did not pay
#: (results are identical either way).
PRUNE_BACKOFF = 15
#: Tiles of the whole-grid path (voxels along x, y, z): whole kernel rows along z fit in one
#: (17 voxels for 20 subjects on the 2 mm grid), and the two float64 buffers (48 KiB) stay in
#: L1/L2. Measured against 8^3 tiles (Neurosynth tables, one thread, same bits): 1,000 tables
#: ~30 % less time, 100-300 tables 30-40 % (docs/dev-notes/session-4.md).
SLAB = (4, 8, 96)
#: Tiles of the pruned path: narrower across, so that the slabs holding candidate blocks cover
#: less of the grid (one thread, session 5: finger set 0.97 ms vs 1.28 with ``SLAB``, 100
#: Neurosynth tables 6.3 vs 7.0; for the whole grid ``SLAB`` is 10-15 % faster).
SPARSE_SLAB = (4, 4, 96)
# Both reach the compiled functions as arguments from Python (``run_batch``): a global tuple
# would be typed by its literal values, and ``_tiled``, ``_bin_foci`` and ``_bin_pass`` compiled
# once per tiling (first run after installing: 47 s of compilation instead of 56; same speed).
#: Zeros after each kernel row (``MonteCarloPlan.log1m_rows``) and spare elements after the
#: slab buffers: the whole-grid path adds rows eight voxels at a time (``simd``).
ROW_PAD = LANES
#: Zeros after each row of the block bounds (``MonteCarloPlan.blog``) and spare elements after
#: the bound grid: the bound pass adds rows sixteen float32 values at a time.
BOUND_PAD = LANES_F32
#: Voxels of the larger slab (the buffers hold either).
SLAB_VOXELS = max(SLAB[0] * SLAB[1] * SLAB[2], SPARSE_SLAB[0] * SPARSE_SLAB[1] * SPARSE_SLAB[2])


def neighbour_offsets(connectivity: int) -> np.ndarray:
    """(n, 3) voxel offsets of the neighbours for 6-, 18- or 26-connectivity."""
    rank = {6: 1, 18: 2, 26: 3}[connectivity]
    offs = [
        (a, b, c)
        for a in (-1, 0, 1)
        for b in (-1, 0, 1)
        for c in (-1, 0, 1)
        if 0 < abs(a) + abs(b) + abs(c) <= rank
    ]
    return np.asarray(offs, dtype=np.int64)


class Workspace:
    """Per-thread work arrays for :func:`run_batch`."""

    def __init__(self, n_grid: int, n_blocks: int):
        self.combine = np.zeros(n_grid)
        self.label = np.zeros(n_grid, dtype=np.int32)
        self.supra = np.empty(n_grid, dtype=np.int64)
        self.stack = np.empty(n_grid, dtype=np.int64)
        self.bound = np.zeros(n_blocks + BOUND_PAD, dtype=np.float32)
        self.cand_list = np.empty(n_blocks, dtype=np.int64)
        self.tile_acc = np.zeros(SLAB_VOXELS + ROW_PAD)
        self.tile_comb = np.zeros(SLAB_VOXELS + ROW_PAD)
        self.slab_ptr = np.zeros(1, dtype=np.int64)
        self.sparse_ptr = np.zeros(1, dtype=np.int64)
        self.sparse_z = np.zeros((0, 2), dtype=np.int64)
        self.tile_list = np.empty(0, dtype=np.int32)
        self.windows = None

    def windows_for(self, plan, share: float = MAX_WINDOW_SHARE) -> WindowWork:
        """Work arrays of the window path for ``plan`` (allocated on first use)."""
        if self.windows is None or not self.windows.fits(plan, share):
            self.windows = WindowWork(plan, share)
        return self.windows

    def tiles_for(self, plan):
        """Bin pointers of both tilings (``SLAB``, ``SPARSE_SLAB``), the z-ranges of the
        pruned path's slabs and the shared bin list, sized for ``plan`` (allocated on first
        use)."""
        if self.slab_ptr.shape[0] != plan.n_slabs + 1:
            self.slab_ptr = np.zeros(plan.n_slabs + 1, dtype=np.int64)
        if self.sparse_ptr.shape[0] != plan.n_sparse_slabs + 1:
            self.sparse_ptr = np.zeros(plan.n_sparse_slabs + 1, dtype=np.int64)
            self.sparse_z = np.zeros((plan.n_sparse_slabs, 2), dtype=np.int64)
        need = plan.n_foci * plan.max_tiles_per_focus
        if self.tile_list.shape[0] < need:
            self.tile_list = np.empty(need, dtype=np.int32)
        return self.slab_ptr, self.sparse_ptr, self.sparse_z, self.tile_list


@numba.njit(cache=True, nogil=True, inline="always")
def _add_box(dst, log1m_k, s0, w, ci, cj, ck, nx, ny, nz):
    r = w // 2
    for a in range(max(0, ci - r), min(nx, ci + r + 1)):
        for b in range(max(0, cj - r), min(ny, cj + r + 1)):
            base = (a * ny + b) * nz
            kbase = s0 + ((a - ci + r) * w + (b - cj + r)) * w - ck + r
            for c in range(max(0, ck - r), min(nz, ck + r + 1)):
                dst[base + c] += log1m_k[kbase + c]


@numba.njit(cache=True, nogil=True, inline="always")
def _min_box(dst, log1m_k, s0, w, ci, cj, ck, nx, ny, nz):
    r = w // 2
    for a in range(max(0, ci - r), min(nx, ci + r + 1)):
        for b in range(max(0, cj - r), min(ny, cj + r + 1)):
            base = (a * ny + b) * nz
            kbase = s0 + ((a - ci + r) * w + (b - cj + r)) * w - ck + r
            for c in range(max(0, ck - r), min(nz, ck + r + 1)):
                k = log1m_k[kbase + c]
                if k < dst[base + c]:
                    dst[base + c] = k


@numba.njit(cache=True, nogil=True, inline="always")
def _flush_box(dst, src, w, ci, cj, ck, nx, ny, nz):
    r = w // 2
    for a in range(max(0, ci - r), min(nx, ci + r + 1)):
        for b in range(max(0, cj - r), min(ny, cj + r + 1)):
            base = (a * ny + b) * nz
            for c in range(max(0, ck - r), min(nz, ck + r + 1)):
                dst[base + c] += src[base + c]
                src[base + c] = 0.0


@numba.njit(cache=True, nogil=True, inline="always")
def _isolated(ijk, a, b, f, w):
    """True when no other focus of the experiment (rows a..b) has a kernel box overlapping f's."""
    for g in range(a, b):
        if g != f and abs(ijk[g, 0] - ijk[f, 0]) < w and abs(ijk[g, 1] - ijk[f, 1]) < w \
                and abs(ijk[g, 2] - ijk[f, 2]) < w:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _accumulate(ijk, exp_offsets, cube_of_exp, log1m_k, start, width, shape, log1m, combine):
    """log(1 - ALE) on the whole grid.

    Non-additive MA (Turkeltaub 2012): a focus whose kernel box overlaps no
    other focus of its experiment is added straight in; the overlapping foci
    of an experiment are first combined by voxel-wise minimum of log(1 - k)
    in ``combine`` and then added once. Either way each voxel receives the
    experiment's minimum exactly once."""
    nx, ny, nz = shape[0], shape[1], shape[2]
    for e in range(exp_offsets.shape[0] - 1):
        j = cube_of_exp[e]
        w = width[j]
        s0 = start[j]
        a, b = exp_offsets[e], exp_offsets[e + 1]
        any_overlap = False
        for f in range(a, b):
            if _isolated(ijk, a, b, f, w):
                _add_box(log1m, log1m_k, s0, w, ijk[f, 0], ijk[f, 1], ijk[f, 2], nx, ny, nz)
            else:
                any_overlap = True
                _min_box(combine, log1m_k, s0, w, ijk[f, 0], ijk[f, 1], ijk[f, 2], nx, ny, nz)
        if any_overlap:
            for f in range(a, b):
                if not _isolated(ijk, a, b, f, w):
                    _flush_box(log1m, combine, w, ijk[f, 0], ijk[f, 1], ijk[f, 2], nx, ny, nz)


@numba.njit(cache=True, nogil=True)
def _clusters(supra, n_supra, values, label, stack, shape, nbr):
    """Largest cluster size and mass among the supra-threshold voxels.

    ``values[v]`` holds ALE - threshold for supra voxels (written by caller).
    The voxels are sorted first, so the flood fill (and the float sum of the
    mass) runs in the same order whichever path found them."""
    nx, ny, nz = shape[0], shape[1], shape[2]
    supra[:n_supra].sort()  # in place (a copy assigned back would compile numba's shape-error formatting)
    best_size = 0
    best_mass = 0.0
    for t in range(n_supra):
        seed = supra[t]
        if label[seed] != -1:
            continue
        label[seed] = 1
        top = 0
        stack[top] = seed
        top += 1
        size = 0
        mass = 0.0
        while top > 0:
            top -= 1
            v = stack[top]
            size += 1
            mass += values[v]
            i = v // (ny * nz)
            rem = v - i * ny * nz
            j = rem // nz
            k = rem - j * nz
            for q in range(nbr.shape[0]):
                a = i + nbr[q, 0]
                b = j + nbr[q, 1]
                c = k + nbr[q, 2]
                if a < 0 or b < 0 or c < 0 or a >= nx or b >= ny or c >= nz:
                    continue
                u = (a * ny + b) * nz + c
                if label[u] == -1:
                    label[u] = 1
                    stack[top] = u
                    top += 1
        if size > best_size:
            best_size = size
        if mass > best_mass:
            best_mass = mass
    for t in range(n_supra):
        label[supra[t]] = 0
    return best_size, best_mass


@numba.njit(cache=True, nogil=True)
def _bound_pass(ijk, cube_of_focus, blog, bstart, bwidth, dlo, bshape, bound):
    """Upper bound of log(1 - ALE) per 2x2x2 block (product over all foci).

    Bound cube rows carry ``BOUND_PAD`` zeros (row stride ``nb + BOUND_PAD``)
    and are added sixteen values at a time; a row cut by the grid's end is
    added value by value (the spill would reach the next row)."""
    BX, BY, BZ = bshape[0], bshape[1], bshape[2]
    for f in range(ijk.shape[0]):
        j = cube_of_focus[f]
        i0, j0, k0 = ijk[f, 0], ijk[f, 1], ijk[f, 2]
        par = ((i0 & 1) << 2) | ((j0 & 1) << 1) | (k0 & 1)
        nb = bwidth[j]
        lo = dlo[j]
        s0 = bstart[8 * j + par]
        I0, J0, K0 = (i0 >> 1) + lo, (j0 >> 1) + lo, (k0 >> 1) + lo
        for A in range(max(0, I0), min(BX, I0 + nb)):
            for B in range(max(0, J0), min(BY, J0 + nb)):
                c0 = max(0, K0)
                n_c = min(BZ, K0 + nb) - c0
                dst = (A * BY + B) * BZ + c0
                src = s0 + ((A - I0) * nb + (B - J0)) * (nb + BOUND_PAD) - K0 + c0
                if K0 + nb <= BZ:
                    for h in range((n_c + LANES_F32 - 1) // LANES_F32):
                        add16f(bound, dst + LANES_F32 * h, blog, src + LANES_F32 * h)
                else:
                    for C in range(n_c):
                        bound[dst + C] += blog[src + C]


@numba.njit(cache=True, nogil=True)
def _bin_pass(ijk, cube_of_focus, width, shape, dims, tshape, slab_z, ptr, lst, fill):
    """Visit every (slab, focus) pair whose kernel box meets the slab's z-range ``slab_z[t]``
    (empty for slabs without work): count it into ``ptr[t + 1]`` or (``fill``) append the
    focus to slab t's bin at ``ptr[t]``."""
    TY, TZ = tshape[1], tshape[2]
    for f in range(ijk.shape[0]):
        r = width[cube_of_focus[f]] // 2
        z_lo, z_hi = ijk[f, 2] - r, ijk[f, 2] + r + 1
        i0 = max(0, ijk[f, 0] - r) // dims[0]
        i1 = min(shape[0] - 1, ijk[f, 0] + r) // dims[0]
        j0 = max(0, ijk[f, 1] - r) // dims[1]
        j1 = min(shape[1] - 1, ijk[f, 1] + r) // dims[1]
        k0 = max(0, z_lo) // dims[2]
        k1 = min(shape[2] - 1, z_hi - 1) // dims[2]
        for A in range(i0, i1 + 1):
            for B in range(j0, j1 + 1):
                for C in range(k0, k1 + 1):
                    t = (A * TY + B) * TZ + C
                    if slab_z[t, 0] < z_hi and slab_z[t, 1] > z_lo:
                        if fill:
                            lst[ptr[t]] = f
                            ptr[t] += 1
                        else:
                            ptr[t + 1] += 1


@numba.njit(cache=True, nogil=True)
def _bin_foci(ijk, cube_of_focus, width, shape, dims, tshape, slab_z, ptr, lst):
    """Counting sort of (slab, focus) pairs for slabs of edges ``dims`` (grid of ``tshape``
    slabs), keeping foci whose box meets the slab's z-range; foci stay in order within a slab.

    On return slab t's foci are ``lst[ptr[t - 1]:ptr[t]]`` (from 0 for t = 0)."""
    ptr[:] = 0
    _bin_pass(ijk, cube_of_focus, width, shape, dims, tshape, slab_z, ptr, lst, False)
    for t in range(ptr.shape[0] - 1):
        ptr[t + 1] += ptr[t]
    _bin_pass(ijk, cube_of_focus, width, shape, dims, tshape, slab_z, ptr, lst, True)


@numba.njit(cache=True, nogil=True, inline="always")
def _clip_focus(ijk, f, cube_of_focus, width, a0, a1, b0, b1, c0, c1):
    """Focus f's kernel (edge w, radius r, centre) and its box clipped to the region
    ``[a0, a1) x [b0, b1) x [c0, c1)`` (empty if la >= ha ...)."""
    w = width[cube_of_focus[f]]
    r = w // 2
    ci, cj, ck = ijk[f, 0], ijk[f, 1], ijk[f, 2]
    return (w, r, ci, cj, ck, max(a0, ci - r), min(a1, ci + r + 1), max(b0, cj - r),
            min(b1, cj + r + 1), max(c0, ck - r), min(c1, ck + r + 1))


@numba.njit(cache=True, nogil=True, inline="always")
def _experiment_end(lst, exp_of_focus, p, end):
    """End of the run of binned foci ``lst[p:]`` that belong to the experiment of ``lst[p]``."""
    e = exp_of_focus[lst[p]]
    q = p + 1
    while q < end and exp_of_focus[lst[q]] == e:
        q += 1
    return q


@numba.njit(cache=True, nogil=True, inline="always")
def _flush_rows(acc, comb, la, ha, lb, hb, lc, hc, a0, b0, c0, SY, SZ):
    """acc += comb, comb = 0 on the box ``[la, ha) x [lb, hb) x [lc, hc)`` of the slab at
    (a0, b0, c0), with ``SY`` x ``SZ`` voxels per x-plane."""
    n_c = np.uint64(max(0, hc - lc))
    for a in range(la, ha):
        for b in range(lb, hb):
            tb = np.uint64(((a - a0) * SY + (b - b0)) * SZ - c0 + lc)
            for c in range(n_c):
                acc[tb + c] += comb[tb + c]
                comb[tb + c] = 0.0


@numba.njit(cache=True, nogil=True, inline="always")
def _vector_rows(ck, r, lc, hc, c0, c1, nz, SZ):
    """Vector operations per kernel row of a focus clipped to ``[lc, hc)`` in the slab starting
    at ``c0``, or 0 when its rows must run element by element.

    Eight-wide operations from ``lc`` also touch up to seven voxels past ``hc``. They receive
    the kernel row's zero padding (``ROW_PAD``) unless the row was cut short by the slab; when it
    was cut by the grid's end, the real kernel values land past the grid but inside the slab's
    buffer row, which is never read (``comb`` is cleared there by the same flush). A row cut by
    a slab border inside the grid takes the element-by-element loop."""
    end = ck + r + 1
    if end <= c1 or (c1 == nz and end <= c0 + SZ):
        return (hc - lc + LANES - 1) // LANES
    return 0


@numba.njit(cache=True, nogil=True)
def _slab_log1m(ijk, exp_of_focus, cube_of_focus, width, rows, row_start, shape, dims, sshape, t, lst, beg, end,
                acc, comb):
    """Exact log(1 - ALE) of slab ``t`` (of a grid of ``sshape`` slabs of edges ``dims = (SX, SY,
    SZ)``) into ``acc``, from the foci binned to it, ``lst[beg:end]`` (in experiment order; see
    :func:`_tiled`). Returns the slab ``[a0, a1) x [b0, b1) x [c0, c1)``; voxel ``(a, b, c)`` is
    at ``acc[((a - a0) * SY + (b - b0)) * SZ + c - c0]``."""
    nx, ny, nz = shape[0], shape[1], shape[2]
    SX, SY, SZ = dims
    TY, TZ = sshape[1], sshape[2]
    a0 = (t // (TY * TZ)) * SX
    b0 = ((t // TZ) % TY) * SY
    c0 = (t % TZ) * SZ
    a1, b1, c1 = min(nx, a0 + SX), min(ny, b0 + SY), min(nz, c0 + SZ)
    acc[: SX * SY * SZ + ROW_PAD] = 0.0
    p = beg
    while p < end:
        q = _experiment_end(lst, exp_of_focus, p, end)
        several = q - p > 1  # combine this experiment's foci by minimum first
        for u in range(p, q):
            f = lst[u]
            w, r, ci, cj, ck, la, ha, lb, hb, lc, hc = _clip_focus(
                ijk, f, cube_of_focus, width, a0, a1, b0, b1, c0, c1)
            if hc <= lc:
                continue
            stride = w + ROW_PAD
            r0 = row_start[cube_of_focus[f]] - ck + r + lc
            n_vec = _vector_rows(ck, r, lc, hc, c0, c1, nz, SZ)
            for a in range(la, ha):
                for b in range(lb, hb):
                    tb = ((a - a0) * SY + (b - b0)) * SZ - c0 + lc
                    kb = r0 + ((a - ci + r) * w + (b - cj + r)) * stride
                    if n_vec > 0:
                        if several:
                            for h in range(n_vec):
                                min8(comb, tb + LANES * h, rows, kb + LANES * h)
                        else:
                            for h in range(n_vec):
                                add8(acc, tb + LANES * h, rows, kb + LANES * h)
                    elif several:
                        for c in range(hc - lc):
                            k = rows[kb + c]
                            if k < comb[tb + c]:
                                comb[tb + c] = k
                    else:
                        for c in range(hc - lc):
                            acc[tb + c] += rows[kb + c]
        if several:
            for u in range(p, q):
                w, r, ci, cj, ck, la, ha, lb, hb, lc, hc = _clip_focus(
                    ijk, lst[u], cube_of_focus, width, a0, a1, b0, b1, c0, c1)
                if hc <= lc:
                    continue
                n_vec = _vector_rows(ck, r, lc, hc, c0, c1, nz, SZ)
                if n_vec == 0:
                    _flush_rows(acc, comb, la, ha, lb, hb, lc, hc, a0, b0, c0, SY, SZ)
                    continue
                for a in range(la, ha):
                    for b in range(lb, hb):
                        tb = ((a - a0) * SY + (b - b0)) * SZ - c0 + lc
                        for h in range(n_vec):
                            flush8(acc, comb, tb + LANES * h)
        p = q
    return a0, a1, b0, b1, c0, c1


@numba.njit(cache=True, nogil=True)
def _tiled(ijk, exp_of_focus, cube_of_focus, width, rows, row_start, shape, dims, sshape, slab_z,
           mask_grid, log_cut, cut_ale, supra, label, values, ptr, lst, acc, comb):
    """Exact log(1 - ALE), slab by slab (tiles of edges ``dims``, a grid of ``sshape``), in
    each slab's z-range ``slab_z[t]`` (empty: skipped): the max and the supra voxels there.

    The whole-grid pass gives every in-mask ``SLAB`` its whole z-range; the
    pruned path gives each ``SPARSE_SLAB`` the z-range of its candidate blocks
    (only foci reaching that range are binned to it, so values outside it are
    partial and not read).

    An experiment with several foci in the slab is combined by minimum in
    ``comb`` and then added box by box (a box overlapping one already added
    adds zeros), as in the plain accumulation: the same bits. Kernel rows come
    from ``rows`` (each cube's rows zero-padded by ``ROW_PAD``, cube j from
    ``row_start[j]``) and are added eight voxels at a time (``simd``); ``acc``
    and ``comb`` hold ``ROW_PAD`` spare elements past the slab. Returns (min
    log1m over the mask, n_supra); supra voxels get ``label = -1`` and
    ``values = ALE - threshold`` as in the pruned path."""
    ny, nz = shape[1], shape[2]
    SY, SZ = dims[1], dims[2]
    _bin_foci(ijk, cube_of_focus, width, shape, dims, sshape, slab_z, ptr, lst)
    best = 0.0
    n_supra = 0
    beg = np.int64(0)  # not the literal 0: numba would also compile _slab_log1m for Literal[int](0)
    for t in range(ptr.shape[0] - 1):
        end = ptr[t]
        if end == beg:
            continue
        a0, a1, b0, b1, c0, c1 = _slab_log1m(ijk, exp_of_focus, cube_of_focus, width, rows, row_start, shape, dims,
                                             sshape, t, lst, beg, end, acc, comb)
        z0, z1 = max(c0, slab_z[t, 0]), min(c1, slab_z[t, 1])
        for a in range(a0, a1):
            for b in range(b0, b1):
                base = (a * ny + b) * nz
                tb = ((a - a0) * SY + (b - b0)) * SZ - c0
                for c in range(z0, z1):
                    v = base + c
                    if mask_grid[v]:
                        x = acc[tb + c]
                        best = min(best, x)
                        n_supra = keep_if_supra(v, x, log_cut, cut_ale, supra, n_supra, label, values)
        beg = end
    return best, n_supra


@numba.njit(cache=True, nogil=True)
def _candidate_ranges(cand_list, n_cand, bshape, sparse_shape, sparse_z):
    """z-range of each ``SPARSE_SLAB`` that its candidate blocks span (empty without one).

    A 2x2x2 block lies in one slab (the slab edges are even)."""
    sparse_z[:, 0] = np.iinfo(np.int64).max
    sparse_z[:, 1] = np.iinfo(np.int64).min
    BY, BZ = bshape[1], bshape[2]
    TY, TZ = sparse_shape[1], sparse_shape[2]
    SX, SY, SZ = SPARSE_SLAB
    for i in range(n_cand):
        q = cand_list[i]
        a, b, c = 2 * (q // (BY * BZ)), 2 * ((q // BZ) % BY), 2 * (q % BZ)
        t = ((a // SX) * TY + b // SY) * TZ + c // SZ
        sparse_z[t, 0] = min(sparse_z[t, 0], c)
        sparse_z[t, 1] = max(sparse_z[t, 1], c + 2)


@numba.njit(cache=True, nogil=True)
def _pruned(ijk, exp_of_focus, cube_of_focus, width, rows, row_start, shape, sparse_slab, blog, bstart, bwidth,
            dlo, bshape, mask_blocks, mask_grid, log_cut, bound_cut, cut_ale, combine, supra, label, bound,
            cand_list, sparse_shape, sparse_ptr, sparse_z, lst, acc, comb, max_share):
    """Iteration restricted to the slabs holding blocks whose bound can exceed the threshold.

    Returns (min log1m, n_supra); n_supra = -1 asks for the brute-force path
    (no voxel above threshold, so the maximum may lie outside the candidates),
    -2 says that more than ``max_share`` of the blocks are candidates (pruning would not pay)."""
    _bound_pass(ijk, cube_of_focus, blog, bstart, bwidth, dlo, bshape, bound)
    n_cand = np.int64(0)  # not a literal (see _tiled)
    for i in range(mask_blocks.shape[0]):
        q = mask_blocks[i]
        if bound[q] < bound_cut:
            cand_list[n_cand] = q
            n_cand += 1
    bound[:] = 0.0
    if n_cand > max_share * mask_blocks.shape[0]:
        return 0.0, -2  # pruning would not pay: let the caller compute the whole grid
    _candidate_ranges(cand_list, n_cand, bshape, sparse_shape, sparse_z)
    best, n_supra = _tiled(ijk, exp_of_focus, cube_of_focus, width, rows, row_start, shape, sparse_slab,
                           sparse_shape, sparse_z, mask_grid, log_cut, cut_ale, supra, label, combine,
                           sparse_ptr, lst, acc, comb)
    if n_supra == 0:
        return best, -1
    return best, n_supra


@numba.njit(cache=True, nogil=True)
def run_batch_kernel(draws, mask_ijk, mask_grid, exp_of_focus, cube_of_focus, width, rows, row_start,
                     shape, slab, sparse_slab, blog, bstart, bwidth, dlo, bshape, mask_blocks, log_cut, cut_ale, bound_cut, nbr,
                     sshape, slab_z, sparse_shape, blocks, windows, combine, label, supra, stack, bound, cand_list,
                     slab_ptr, sparse_ptr, sparse_z, lst, acc, comb, plane_rows, plane_start, env, cube_class,
                     sep_cut, nzp, wrows, wstart, G, plane_lo, plane_hi, B, by_x, x_ptr, max_cand, win_id, colmask,
                     ybits, wkey, wcur, wsm, out_ale, out_size, out_mass, path_counts):
    """Run ``draws.shape[0]`` iterations; ``draws[t]`` holds in-mask voxel
    numbers for every focus (in experiment order). ``path_counts`` counts the
    iterations finished by the block-pruned path, the window path and the whole grid."""
    n_foci = draws.shape[1]
    ijk = np.empty((n_foci, 3), dtype=np.int64)
    skip_blocks = 0
    skip_windows = 0
    for t in range(draws.shape[0]):
        for f in range(n_foci):
            m = draws[t, f]
            ijk[f, 0] = mask_ijk[m, 0]
            ijk[f, 1] = mask_ijk[m, 1]
            ijk[f, 2] = mask_ijk[m, 2]
        n_supra = -1
        path = 0
        tried_blocks = blocks and skip_blocks == 0
        if tried_blocks:
            best, n_supra = _pruned(ijk, exp_of_focus, cube_of_focus, width, rows, row_start, shape, sparse_slab, blog,
                                    bstart, bwidth, dlo, bshape, mask_blocks, mask_grid, log_cut, bound_cut,
                                    cut_ale, combine, supra, label, bound, cand_list, sparse_shape, sparse_ptr,
                                    sparse_z, lst, acc, comb,
                                    MAX_CANDIDATE_SHARE_BEFORE_WINDOWS if windows else MAX_CANDIDATE_SHARE)
        if n_supra == -2:
            skip_blocks = PRUNE_BACKOFF  # dense null: stop trying for a while, then look again
        elif skip_blocks > 0:
            skip_blocks -= 1
        if windows and (n_supra == -2 or not tried_blocks) and skip_windows == 0:
            path = 1
            best, n_supra = windowed(ijk, exp_of_focus, cube_of_focus, width, plane_rows, plane_start, env,
                                     cube_class, sep_cut, nzp, wrows, wstart, shape, mask_grid, log_cut, cut_ale, G,
                                     plane_lo, plane_hi, B, by_x, x_ptr, stack, max_cand, win_id, colmask, ybits,
                                     wkey, wcur, wsm, supra, label, combine)
            if n_supra == -2:
                skip_windows = PRUNE_BACKOFF
        elif skip_windows > 0:
            skip_windows -= 1
        if n_supra < 0:
            path = 2
            best, n_supra = _tiled(ijk, exp_of_focus, cube_of_focus, width, rows, row_start, shape, slab,
                                   sshape, slab_z, mask_grid, log_cut, cut_ale, supra, label, combine, slab_ptr,
                                   lst, acc, comb)
        path_counts[path] += 1
        size, mass = _clusters(supra, n_supra, combine, label, stack, shape, nbr)
        for q in range(n_supra):
            combine[supra[q]] = 0.0
        out_ale[t] = -np.expm1(best)
        out_size[t] = size
        out_mass[t] = mass


def run_batch(draws, plan, ws: Workspace, out_ale, out_size, out_mass, prune: bool = True,
              block_bound: bool = True, windows: bool = True, window_share: float = MAX_WINDOW_SHARE,
              path_counts=None) -> None:
    """Run one batch of iterations on the CPU (releases the GIL).

    ``prune=False`` computes every iteration on the whole grid; ``block_bound=False`` skips
    the block bound, ``windows=False`` the window path, and ``window_share`` sets the window
    path's largest share of candidate voxels (tests use the first and the last to run the
    window path on every iteration). ``path_counts`` (int64, 3) receives the iterations
    finished by each path (``run_batch_kernel``)."""
    tables = plan.window
    work = ws.windows_for(plan, window_share)
    counts = np.zeros(3, dtype=np.int64) if path_counts is None else path_counts
    run_batch_kernel(
        draws, plan.mask_ijk, plan.mask_grid, plan.exp_of_focus, plan.cube_of_focus, plan.width,
        plan.log1m_rows, plan.row_start, plan.shape, SLAB, SPARSE_SLAB, plan.blog, plan.bstart, plan.bwidth, plan.dlo, plan.bshape,
        plan.mask_blocks, plan.log_cut, plan.cut_ale, plan.bound_cut, plan.nbr, plan.sshape, plan.slab_z,
        plan.sparse_shape, prune and block_bound, prune and windows and tables.usable, ws.combine, ws.label, ws.supra,
        ws.stack, ws.bound, ws.cand_list, *ws.tiles_for(plan), ws.tile_acc, ws.tile_comb,
        tables.plane_rows, tables.plane_start, tables.env, tables.cube_class, np.float32(tables.sep_cut),
        tables.nzp, tables.wrows,
        tables.wstart, work.G, work.plane_lo, work.plane_hi, work.B, work.by_x, work.x_ptr, work.max_cand,
        work.win_id, work.colmask, work.ybits, work.wkey, work.wcur, work.wsm, out_ale, out_size, out_mass, counts,
    )
