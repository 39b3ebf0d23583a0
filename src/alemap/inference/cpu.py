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
2. Pruned path (``_pruned``): an upper bound of ALE per 2x2x2-voxel block
   (the product of the kernels' block maxima over all foci, float32 with a
   rigorous rounding margin) selects the candidate blocks that could exceed
   the cluster-forming threshold. Foci are binned into the ``TILE``^3-voxel
   tiles their kernel boxes touch, and each candidate block is accumulated in
   an 8-voxel buffer from the foci of its tile (``_exact_blocks``). If no voxel
   exceeds the threshold the iteration is recomputed on the whole grid, so the
   maximum ALE is always exact.
3. Whole-grid path (``_tiled``, when more than ``MAX_CANDIDATE_SHARE`` of the
   blocks are candidates): foci binned into ``SLAB``-shaped tiles (narrow
   across, long along the grid's fastest axis, so the innermost loops run over
   whole kernel rows), each accumulated in a cache-resident buffer,
   experiment by experiment (an experiment with several foci in the tile is
   combined by minimum in a second buffer, then added box by box). Kernel
   rows are zero-padded so each row is a few eight-wide vector operations
   (``simd``) rather than a loop with its own setup.
4. The supra-threshold voxels are labelled by flood fill with 6-, 18- or
   26-connectivity; cluster size is the voxel count and cluster mass the sum of
   ``ALE - threshold``.

Work arrays are per thread; the function releases the GIL so threads run
batches in parallel. ``tests/test_properties.py`` holds a slow, plainly
written version of the same iteration that the engine is tested against.
"""

from __future__ import annotations

import numba
import numpy as np

from alemap.inference.simd import LANES, add8, flush8, min8

__all__ = ["Workspace", "run_batch", "neighbour_offsets"]

#: Above this share of candidate blocks the pruned path costs more than the whole grid. Both
#: costs grow with the number of foci, so the break-even share hardly depends on it: measured
#: on Neurosynth tables and the finger set (one thread, session 5), it is 0.046-0.052 for 50-300
#: tables (e.g. 150 tables, share 0.097: pruned 26.5 ms, whole grid 13.5 ms).
MAX_CANDIDATE_SHARE = 0.05
#: Iterations to skip pruning after it did not pay (results are identical either way).
PRUNE_BACKOFF = 15
#: Edge of the tiles the pruned path bins foci into (voxels); a 2x2x2 block lies in one tile.
TILE = 8
#: Tiles of the whole-grid path (voxels along x, y, z): whole kernel rows along z fit in one
#: (17 voxels for 20 subjects on the 2 mm grid), and the two float64 buffers (48 KiB) stay in
#: L1/L2. Measured against 8^3 tiles (Neurosynth tables, one thread, same bits): 1,000 tables
#: ~30 % less time, 100-300 tables 30-40 % (docs/dev-notes/session-4.md).
SLAB = (4, 8, 96)
#: Zeros after each kernel row (``MonteCarloPlan.log1m_rows``) and spare elements after the
#: slab buffers: the whole-grid path adds rows eight voxels at a time (``simd``).
ROW_PAD = LANES


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
        self.bound = np.zeros(n_blocks, dtype=np.float32)
        self.cand_list = np.empty(n_blocks, dtype=np.int64)
        self.tile_acc = np.zeros(SLAB[0] * SLAB[1] * SLAB[2] + ROW_PAD)
        self.tile_comb = np.zeros(SLAB[0] * SLAB[1] * SLAB[2] + ROW_PAD)
        self.tile_ptr = np.zeros(1, dtype=np.int64)
        self.slab_ptr = np.zeros(1, dtype=np.int64)
        self.tile_list = np.empty(0, dtype=np.int32)

    def tiles_for(self, plan):
        """Bin pointers of both tilings (``TILE``^3, ``SLAB``) and the shared bin list, sized
        for ``plan`` (allocated on first use)."""
        if self.tile_ptr.shape[0] != plan.n_tiles + 1:
            self.tile_ptr = np.zeros(plan.n_tiles + 1, dtype=np.int64)
        if self.slab_ptr.shape[0] != plan.n_slabs + 1:
            self.slab_ptr = np.zeros(plan.n_slabs + 1, dtype=np.int64)
        need = plan.n_foci * plan.max_tiles_per_focus
        if self.tile_list.shape[0] < need:
            self.tile_list = np.empty(need, dtype=np.int32)
        return self.tile_ptr, self.slab_ptr, self.tile_list


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
    supra[:n_supra] = np.sort(supra[:n_supra])
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
    """Upper bound of log(1 - ALE) per 2x2x2 block (product over all foci)."""
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
                # unsigned indices (no negative-index wrap-around): the loop vectorises
                dst = np.uint64((A * BY + B) * BZ + c0)
                src = np.uint64(s0 + ((A - I0) * nb + (B - J0)) * nb - K0 + c0)
                for C in range(np.uint64(max(0, min(BZ, K0 + nb) - c0))):
                    bound[dst + C] += blog[src + C]


@numba.njit(cache=True, nogil=True, inline="always")
def _keep_if_supra(v, x, log_cut, cut_ale, supra, n_supra, label, values):
    """Record in-mask voxel v if ``x = log(1 - ALE)`` is above the threshold; the new count.

    Supra voxels get ``label = -1`` (unvisited by the flood fill) and
    ``values = ALE - threshold`` (their share of the cluster mass)."""
    if x < log_cut:
        supra[n_supra] = v
        label[v] = -1
        values[v] = -np.expm1(x) - cut_ale
        return n_supra + 1
    return n_supra


@numba.njit(cache=True, nogil=True, inline="always")
def _tile_range(ijk, f, r, shape, dims):
    """Tiles of edges ``dims`` (inclusive ranges per axis) that focus f's kernel box touches."""
    i0 = max(0, ijk[f, 0] - r) // dims[0]
    i1 = min(shape[0] - 1, ijk[f, 0] + r) // dims[0]
    j0 = max(0, ijk[f, 1] - r) // dims[1]
    j1 = min(shape[1] - 1, ijk[f, 1] + r) // dims[1]
    k0 = max(0, ijk[f, 2] - r) // dims[2]
    k1 = min(shape[2] - 1, ijk[f, 2] + r) // dims[2]
    return i0, i1, j0, j1, k0, k1


@numba.njit(cache=True, nogil=True)
def _bin_pass(ijk, cube_of_focus, width, shape, dims, tshape, tile_in_mask, ptr, lst, fill):
    """Visit every (in-mask tile, focus) pair: count it into ``ptr[t + 1]``
    or (``fill``) append the focus to tile t's bin at ``ptr[t]``."""
    TY, TZ = tshape[1], tshape[2]
    for f in range(ijk.shape[0]):
        i0, i1, j0, j1, k0, k1 = _tile_range(ijk, f, width[cube_of_focus[f]] // 2, shape, dims)
        for A in range(i0, i1 + 1):
            for B in range(j0, j1 + 1):
                for C in range(k0, k1 + 1):
                    t = (A * TY + B) * TZ + C
                    if tile_in_mask[t]:
                        if fill:
                            lst[ptr[t]] = f
                            ptr[t] += 1
                        else:
                            ptr[t + 1] += 1


@numba.njit(cache=True, nogil=True)
def _bin_foci(ijk, cube_of_focus, width, shape, dims, tshape, tile_in_mask, ptr, lst):
    """Counting sort of (tile, focus) pairs for tiles of edges ``dims`` (grid of ``tshape``
    tiles); foci stay in order within a tile.

    On return tile t's foci are ``lst[ptr[t - 1]:ptr[t]]`` (from 0 for t = 0)."""
    ptr[:] = 0
    _bin_pass(ijk, cube_of_focus, width, shape, dims, tshape, tile_in_mask, ptr, lst, False)
    for t in range(ptr.shape[0] - 1):
        ptr[t + 1] += ptr[t]
    _bin_pass(ijk, cube_of_focus, width, shape, dims, tshape, tile_in_mask, ptr, lst, True)


@numba.njit(cache=True, nogil=True, inline="always")
def _clip_focus(ijk, f, cube_of_focus, width, start, a0, a1, b0, b1, c0, c1):
    """Focus f's kernel (edge w, radius r, cube start s0, centre) and its box
    clipped to the region ``[a0, a1) x [b0, b1) x [c0, c1)`` (empty if la >= ha ...)."""
    j = cube_of_focus[f]
    w = width[j]
    r = w // 2
    ci, cj, ck = ijk[f, 0], ijk[f, 1], ijk[f, 2]
    return (w, r, start[j], ci, cj, ck, max(a0, ci - r), min(a1, ci + r + 1), max(b0, cj - r),
            min(b1, cj + r + 1), max(c0, ck - r), min(c1, ck + r + 1))


@numba.njit(cache=True, nogil=True, inline="always")
def _experiment_end(lst, exp_of_focus, p, end):
    """End of the run of binned foci ``lst[p:]`` that belong to the experiment of ``lst[p]``."""
    e = exp_of_focus[lst[p]]
    q = p + 1
    while q < end and exp_of_focus[lst[q]] == e:
        q += 1
    return q


@numba.njit(cache=True, nogil=True)
def _exact_blocks(ijk, exp_of_focus, cube_of_focus, log1m_k, start, width, shape, bshape, tshape, tile_in_mask,
                  cand_list, n_cand, ptr, lst, mask_grid, log_cut, cut_ale, supra, label, values, acc, comb):
    """Exact log(1 - ALE) in the candidate blocks, block by block.

    Foci are binned into the ``TILE``^3 tiles their kernel boxes touch (in
    experiment order); a candidate block (2x2x2 voxels, inside one tile) takes
    the foci of its tile that reach it and accumulates its 8 voxels in a small
    buffer, experiment by experiment, combining an experiment's foci by
    minimum first: each voxel receives the same values in the same order as
    the plain accumulation (bit-identical). Returns (min log1m over the
    candidates' mask voxels, n_supra); supra voxels get ``label = -1`` and
    ``values = ALE - threshold``."""
    nx, ny, nz = shape[0], shape[1], shape[2]
    BY, BZ = bshape[1], bshape[2]
    TY, TZ = tshape[1], tshape[2]
    _bin_foci(ijk, cube_of_focus, width, shape, (TILE, TILE, TILE), tshape, tile_in_mask, ptr, lst)
    best = 0.0
    n_supra = 0
    for t in range(n_cand):
        q = cand_list[t]
        A = q // (BY * BZ)
        B = (q // BZ) % BY
        C = q % BZ
        a0, b0, c0 = 2 * A, 2 * B, 2 * C
        a1, b1, c1 = min(nx, a0 + 2), min(ny, b0 + 2), min(nz, c0 + 2)
        tile = ((a0 // TILE) * TY + (b0 // TILE)) * TZ + (c0 // TILE)
        beg = ptr[tile - 1] if tile > 0 else 0
        end = ptr[tile]
        for u in range(8):
            acc[u] = 0.0
        p = beg
        while p < end:
            q2 = _experiment_end(lst, exp_of_focus, p, end)
            several = q2 - p > 1  # combine this experiment's foci by minimum first (comb is all zero)
            for u in range(p, q2):
                w, r, s0, ci, cj, ck, la, ha, lb, hb, lc, hc = _clip_focus(
                    ijk, lst[u], cube_of_focus, width, start, a0, a1, b0, b1, c0, c1)
                for a in range(la, ha):
                    for b in range(lb, hb):
                        kb = s0 + ((a - ci + r) * w + (b - cj + r)) * w - ck + r
                        ub = (a - a0) * 4 + (b - b0) * 2 - c0
                        for c in range(lc, hc):
                            k = log1m_k[kb + c]
                            if several:
                                if k < comb[ub + c]:
                                    comb[ub + c] = k
                            else:
                                acc[ub + c] += k
            if several:
                for u in range(8):
                    acc[u] += comb[u]
                    comb[u] = 0.0  # all zero again, as the tiled path expects
            p = q2
        for a in range(a0, a1):
            for b in range(b0, b1):
                for c in range(c0, c1):
                    v = (a * ny + b) * nz + c
                    if mask_grid[v]:
                        x = acc[(a - a0) * 4 + (b - b0) * 2 + (c - c0)]
                        best = min(best, x)
                        n_supra = _keep_if_supra(v, x, log_cut, cut_ale, supra, n_supra, label, values)
    return best, n_supra


@numba.njit(cache=True, nogil=True, inline="always")
def _flush_rows(acc, comb, la, ha, lb, hb, lc, hc, a0, b0, c0):
    """acc += comb, comb = 0 on the box ``[la, ha) x [lb, hb) x [lc, hc)`` of the slab at (a0, b0, c0)."""
    SY, SZ = SLAB[1], SLAB[2]
    n_c = np.uint64(max(0, hc - lc))
    for a in range(la, ha):
        for b in range(lb, hb):
            tb = np.uint64(((a - a0) * SY + (b - b0)) * SZ - c0 + lc)
            for c in range(n_c):
                acc[tb + c] += comb[tb + c]
                comb[tb + c] = 0.0


@numba.njit(cache=True, nogil=True, inline="always")
def _vector_rows(ck, r, lc, hc, c0, c1, nz):
    """Vector operations per kernel row of a focus clipped to ``[lc, hc)`` in the slab starting
    at ``c0``, or 0 when its rows must run element by element.

    Eight-wide operations from ``lc`` also touch up to seven voxels past ``hc``. They receive
    the kernel row's zero padding (``ROW_PAD``) unless the row was cut short by the slab; when it
    was cut by the grid's end, the real kernel values land past the grid but inside the slab's
    buffer row, which is never read (``comb`` is cleared there by the same flush). A row cut by
    a slab border inside the grid takes the element-by-element loop."""
    end = ck + r + 1
    if end <= c1 or (c1 == nz and end <= c0 + SLAB[2]):
        return (hc - lc + LANES - 1) // LANES
    return 0


@numba.njit(cache=True, nogil=True)
def _tiled(ijk, exp_of_focus, cube_of_focus, log1m_k, start, width, rows, row_start, shape, sshape,
           slab_in_mask, mask_grid, log_cut, cut_ale, supra, label, values, ptr, lst, acc, comb):
    """Whole-grid iteration, slab by slab (``SLAB``-shaped tiles): exact max and supra voxels.

    An experiment with several foci in the slab is combined by minimum in
    ``comb`` and then added box by box (a box overlapping one already added
    adds zeros), as in the plain accumulation: the same bits. Kernel rows come
    from ``rows`` (each cube's rows zero-padded by ``ROW_PAD``, cube j from
    ``row_start[j]``) and are added eight voxels at a time (``simd``); ``acc``
    and ``comb`` hold ``ROW_PAD`` spare elements past the slab. Returns (min
    log1m over the mask, n_supra); supra voxels get ``label = -1`` and
    ``values = ALE - threshold`` as in the pruned path."""
    nx, ny, nz = shape[0], shape[1], shape[2]
    SX, SY, SZ = SLAB
    TY, TZ = sshape[1], sshape[2]
    _bin_foci(ijk, cube_of_focus, width, shape, SLAB, sshape, slab_in_mask, ptr, lst)
    best = 0.0
    n_supra = 0
    beg = 0
    for t in range(ptr.shape[0] - 1):
        end = ptr[t]
        if end == beg:
            continue
        a0 = (t // (TY * TZ)) * SX
        b0 = ((t // TZ) % TY) * SY
        c0 = (t % TZ) * SZ
        a1, b1, c1 = min(nx, a0 + SX), min(ny, b0 + SY), min(nz, c0 + SZ)
        acc[:] = 0.0
        p = beg
        while p < end:
            q = _experiment_end(lst, exp_of_focus, p, end)
            several = q - p > 1  # combine this experiment's foci by minimum first
            for u in range(p, q):
                f = lst[u]
                w, r, s0, ci, cj, ck, la, ha, lb, hb, lc, hc = _clip_focus(
                    ijk, f, cube_of_focus, width, start, a0, a1, b0, b1, c0, c1)
                if hc <= lc:
                    continue
                stride = w + ROW_PAD
                r0 = row_start[cube_of_focus[f]] - ck + r + lc
                n_vec = _vector_rows(ck, r, lc, hc, c0, c1, nz)
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
                    w, r, s0, ci, cj, ck, la, ha, lb, hb, lc, hc = _clip_focus(
                        ijk, lst[u], cube_of_focus, width, start, a0, a1, b0, b1, c0, c1)
                    if hc <= lc:
                        continue
                    n_vec = _vector_rows(ck, r, lc, hc, c0, c1, nz)
                    if n_vec == 0:
                        _flush_rows(acc, comb, la, ha, lb, hb, lc, hc, a0, b0, c0)
                        continue
                    for a in range(la, ha):
                        for b in range(lb, hb):
                            tb = ((a - a0) * SY + (b - b0)) * SZ - c0 + lc
                            for h in range(n_vec):
                                flush8(acc, comb, tb + LANES * h)
            p = q
        for a in range(a0, a1):
            for b in range(b0, b1):
                base = (a * ny + b) * nz
                tb = ((a - a0) * SY + (b - b0)) * SZ - c0
                for c in range(c0, c1):
                    v = base + c
                    if mask_grid[v]:
                        x = acc[tb + c]
                        best = min(best, x)
                        n_supra = _keep_if_supra(v, x, log_cut, cut_ale, supra, n_supra, label, values)
        beg = end
    return best, n_supra


@numba.njit(cache=True, nogil=True)
def _pruned(ijk, exp_offsets, cube_of_exp, cube_of_focus, log1m_k, start, width, shape,
            blog, bstart, bwidth, dlo, bshape, block_in_mask, mask_grid, log_cut, bound_cut, cut_ale,
            combine, supra, label, bound, cand_list, exp_of_focus, tshape, tile_in_mask, tile_ptr, tile_list,
            tile_acc, tile_comb):
    """Iteration restricted to blocks whose bound can exceed the threshold.

    Returns (min log1m, n_supra); n_supra = -1 asks for the brute-force path
    (no voxel above threshold, so the maximum may lie outside the candidates),
    -2 says that too many blocks are candidates for pruning to pay."""
    _bound_pass(ijk, cube_of_focus, blog, bstart, bwidth, dlo, bshape, bound)
    n_cand = 0
    n_in = 0
    for q in range(bound.shape[0]):
        if block_in_mask[q]:
            n_in += 1
            if bound[q] < bound_cut:
                cand_list[n_cand] = q
                n_cand += 1
    bound[:] = 0.0
    if n_cand > MAX_CANDIDATE_SHARE * n_in:
        return 0.0, -2  # pruning would not pay: let the caller compute the whole grid
    best, n_supra = _exact_blocks(ijk, exp_of_focus, cube_of_focus, log1m_k, start, width, shape, bshape, tshape,
                                  tile_in_mask, cand_list, n_cand, tile_ptr, tile_list, mask_grid, log_cut, cut_ale,
                                  supra, label, combine, tile_acc, tile_comb)
    if n_supra == 0:
        return best, -1
    return best, n_supra


@numba.njit(cache=True, nogil=True)
def run_batch_kernel(draws, mask_ijk, mask_flat, mask_grid, exp_offsets, cube_of_exp, cube_of_focus,
                     log1m_k, start, width, rows, row_start, shape, blog, bstart, bwidth, dlo, bshape, block_in_mask,
                     log_cut, cut_ale, nbr, prune, combine, label, supra, stack, bound,
                     cand_list, exp_of_focus, tshape, tile_in_mask, sshape, slab_in_mask, tile_ptr, slab_ptr,
                     tile_list, tile_acc, tile_comb, bound_cut, out_ale, out_size, out_mass):
    """Run ``draws.shape[0]`` iterations; ``draws[t]`` holds in-mask voxel
    numbers for every focus (in experiment order)."""
    n_foci = draws.shape[1]
    ijk = np.empty((n_foci, 3), dtype=np.int64)
    skip_prune = 0
    for t in range(draws.shape[0]):
        for f in range(n_foci):
            m = draws[t, f]
            ijk[f, 0] = mask_ijk[m, 0]
            ijk[f, 1] = mask_ijk[m, 1]
            ijk[f, 2] = mask_ijk[m, 2]
        n_supra = -1
        if prune and skip_prune == 0:
            best, n_supra = _pruned(ijk, exp_offsets, cube_of_exp, cube_of_focus, log1m_k, start,
                                    width, shape, blog, bstart, bwidth, dlo, bshape, block_in_mask,
                                    mask_grid, log_cut, bound_cut, cut_ale, combine, supra, label,
                                    bound, cand_list, exp_of_focus, tshape, tile_in_mask, tile_ptr, tile_list,
                                    tile_acc, tile_comb)
        if n_supra == -2:
            skip_prune = PRUNE_BACKOFF  # dense null: stop trying for a while, then look again
        elif skip_prune > 0:
            skip_prune -= 1
        if n_supra < 0:
            best, n_supra = _tiled(ijk, exp_of_focus, cube_of_focus, log1m_k, start, width, rows, row_start,
                                   shape, sshape, slab_in_mask, mask_grid, log_cut, cut_ale, supra, label,
                                   combine, slab_ptr, tile_list, tile_acc, tile_comb)
        size, mass = _clusters(supra, n_supra, combine, label, stack, shape, nbr)
        for q in range(n_supra):
            combine[supra[q]] = 0.0
        out_ale[t] = -np.expm1(best)
        out_size[t] = size
        out_mass[t] = mass


def run_batch(draws, plan, ws: Workspace, out_ale, out_size, out_mass, prune: bool = True) -> None:
    """Run one batch of iterations on the CPU (releases the GIL)."""
    run_batch_kernel(
        draws, plan.mask_ijk, plan.mask_flat, plan.mask_grid, plan.exp_offsets, plan.cube_of_exp,
        plan.cube_of_focus, plan.log1m_k, plan.start, plan.width, plan.log1m_rows, plan.row_start, plan.shape,
        plan.blog,
        plan.bstart, plan.bwidth, plan.dlo, plan.bshape, plan.block_in_mask, plan.log_cut,
        plan.cut_ale, plan.nbr, prune, ws.combine, ws.label, ws.supra, ws.stack,
        ws.bound, ws.cand_list, plan.exp_of_focus, plan.tshape, plan.tile_in_mask, plan.sshape,
        plan.slab_in_mask, *ws.tiles_for(plan), ws.tile_acc, ws.tile_comb, plan.bound_cut, out_ale, out_size, out_mass,
    )
