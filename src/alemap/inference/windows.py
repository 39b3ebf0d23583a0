"""Monte Carlo iterations for dense nulls: a separable bound, then exact ALE on candidate windows.

With hundreds of experiments nearly every 2x2x2 block's bound (``cpu._bound_pass``)
can exceed the cluster-forming threshold, although ~1-2 % of the voxels do. Two
steps replace the whole-grid pass there:

1. Separable bound, per voxel. ``-log(1 - ALE)`` is a sum over experiments of
   each experiment's largest ``m = -log(1 - k)``, so at most the sum of ``m``
   over all foci. ALE kernels are outer products of one 1-D Gaussian factor
   (:mod:`alemap.kernels.gaussian`), so ``m_j(dx, dy, dz) <= env(dx) *
   plane_j(dy, dz)`` with ``env`` the largest normalised 1-D factor of the
   cubes in j's class of widths (``SEPARABLE_CLASSES``) and ``plane_j`` the
   largest ``m_j / g_j(dx)`` over ``dx``. Each focus adds its kernel's
   ``plane`` (17 float32 rows instead of 289) to its x-plane of its class's
   ``G``; one pass along x per class, ``B(x) = sum_c sum_d env_c(d) G_c(x - d)``,
   bounds every voxel. Rounding: the tables are rounded up and ``sep_cut`` is lowered by
   the float32 summation error bound (Higham 2002, section 4.2), so a voxel
   with ``B <= sep_cut`` is below the threshold.
2. Windows of eight voxels along z holding candidates. Foci are taken in
   experiment order; each adds its kernel row to the windows it reaches
   (``simd.window8``: the experiment's minimum of ``log(1 - k)``, added to the
   window's sums when the next experiment arrives), so every voxel gets the
   same values in the same order as the plain accumulation (``cpu._accumulate``):
   the same bits. Which windows a focus reaches comes from bit sets: for each
   x-plane and row of windows along z, the y-columns holding a window; a
   window's index is its column's first plus the windows below it there.

Measured (one thread, Neurosynth tables, session 6; docs/dev-notes/session-6.md):
1,000 tables 28-31 ms per iteration (bound 6-9, windows ~23) against 113-122
for the whole grid; 300 tables 11 against 41; 3,000 tables 132-149 against
246-274. Above ``MAX_WINDOW_SHARE`` candidate voxels the whole grid is
computed instead.
"""

from __future__ import annotations

import numba
import numpy as np

from alemap.inference.simd import LANES, LANES_F32, add8, add16f, bit_count, trailing_zeros, window8
from alemap.inference.supra import keep_if_supra

__all__ = [
    "MAX_WINDOW_SHARE", "MAX_WINDOWS_PER_COLUMN", "SEPARABLE_CLASSES", "SEPARATE_CLASSES_FROM_FOCI", "WINDOW",
    "WindowWork", "windowed",
]

#: Above this share of in-mask voxels as candidates the whole grid costs about as much (one
#: thread, session 6, 1,000 Neurosynth tables with lowered thresholds: share 0.045 30 ms against
#: 82 for the whole grid, 0.083 56 / 68, 0.14 54 / 89, 0.23 94 / 89; 3,000 tables, share ~0.10:
#: 151 / 322).
MAX_WINDOW_SHARE = 0.15
#: Voxels per window along z (one eight-wide vector).
WINDOW = LANES
#: Most windows per column (bits of a uint64): grids up to 512 voxels along z.
MAX_WINDOWS_PER_COLUMN = 64
#: Classes of kernel widths in the separable bound, each its own pass along x
#: (``plan.window_tables``), from ``SEPARATE_CLASSES_FROM_FOCI`` foci on. One thread, session 6,
#: Neurosynth tables with 8-60 subjects, window path per iteration (min/median of 3): 1,000
#: tables (18,649 foci) one class 51/54 ms, two 43/44, three 44/45; 300 tables (5,729 foci)
#: one 9.9/12.1, two 12.3/14.5.
SEPARABLE_CLASSES = 2
SEPARATE_CLASSES_FROM_FOCI = 10_000


@numba.njit(cache=True, nogil=True)
def _separable_bound(ijk, cube_of_focus, width, plane_rows, plane_start, env, cube_class, sep_cut, shape, NZP, G,
                     plane_lo, plane_hi, B, mask_grid, cand, max_cand, by_x, x_ptr):
    """In-mask voxels whose separable bound exceeds ``sep_cut``, in flat order, into ``cand``.

    Returns their number, or -1 past ``max_cand``. ``G`` holds, per class of kernels, a ring
    of ``2 R + 1`` x-planes (ny, NZP) float32, z shifted by the envelope's radius R: plane x
    is filled (from the foci at x, ``by_x``) just before output plane x - R needs it, and
    reused for plane x + 2 R + 1, so the rings stay in cache. It is left zeroed."""
    nx, ny, nz = shape[0], shape[1], shape[2]
    R = env.shape[1] // 2
    RING = 2 * R + 1
    NC = env.shape[0]
    PL = ny * NZP
    # foci by x-plane (counting sort)
    x_ptr[:] = 0
    for f in range(ijk.shape[0]):
        x_ptr[ijk[f, 0] + 1] += 1
    for x in range(nx):
        x_ptr[x + 1] += x_ptr[x]
    for f in range(ijk.shape[0]):
        by_x[x_ptr[ijk[f, 0]]] = f
        x_ptr[ijk[f, 0]] += 1
    n_cand = 0
    filled = 0  # planes [0, filled) are in the ring
    for x in range(nx):
        while filled < min(nx, x + R + 1):
            for c in range(NC):
                _clear_plane(G, c * RING + filled % RING, plane_lo, plane_hi, PL, NZP, ny)
            for u in range(x_ptr[filled - 1] if filled > 0 else 0, x_ptr[filled]):
                f = by_x[u]
                j = cube_of_focus[f]
                slot = cube_class[j] * RING + filled % RING
                w = width[j]
                r = w // 2
                rw = (w + LANES_F32 - 1) // LANES_F32
                y0, z0 = ijk[f, 1], ijk[f, 2]
                ya, yb = max(0, y0 - r), min(ny, y0 + r + 1)
                plane_lo[slot] = min(plane_lo[slot], ya)
                plane_hi[slot] = max(plane_hi[slot], yb)
                for y in range(ya, yb):
                    dst = slot * PL + y * NZP + z0 - r + R
                    src = plane_start[j] + (y - y0 + r) * rw * LANES_F32
                    for h in range(rw):
                        add16f(G, dst + LANES_F32 * h, plane_rows, src + LANES_F32 * h)
            filled += 1
        ylo, yhi = ny, 0
        for c in range(NC):
            for xp in range(max(0, x - R), min(nx, x + R + 1)):
                slot = c * RING + xp % RING
                if plane_hi[slot] > plane_lo[slot]:
                    ylo = min(ylo, plane_lo[slot])
                    yhi = max(yhi, plane_hi[slot])
        if yhi <= ylo:
            continue
        B[ylo * NZP : yhi * NZP] = 0.0
        for c in range(NC):
            for xp in range(max(0, x - R), min(nx, x + R + 1)):
                slot = c * RING + xp % RING
                e = env[c, xp - x + R]
                for y in range(plane_lo[slot], plane_hi[slot]):
                    _axpy(B, G, y * NZP + R, slot * PL + y * NZP + R, e, nz)
        for y in range(ylo, yhi):
            row = y * NZP + R
            if _row_max(B, row, nz) > sep_cut:
                base = (x * ny + y) * nz
                for z in range(nz):
                    if B[row + z] > sep_cut and mask_grid[base + z]:
                        if n_cand == max_cand:
                            n_cand = -1
                            break
                        cand[n_cand] = base + z
                        n_cand += 1
            if n_cand < 0:
                break
        if n_cand < 0:
            break
    for slot in range(NC * RING):
        _clear_plane(G, slot, plane_lo, plane_hi, PL, NZP, ny)
    return n_cand


@numba.njit(cache=True, nogil=True, inline="always")
def _clear_plane(G, slot, plane_lo, plane_hi, PL, NZP, ny):
    """Zero the rows ring plane ``slot`` of ``G`` received and mark it empty."""
    if plane_hi[slot] > plane_lo[slot]:
        G[slot * PL + plane_lo[slot] * NZP : slot * PL + plane_hi[slot] * NZP] = 0.0
    plane_lo[slot] = ny
    plane_hi[slot] = 0


@numba.njit(cache=True, nogil=True, inline="always")
def _bit_range(lo, hi):
    """uint64 with bits ``lo`` to ``hi`` (inclusive, 0 <= lo, hi <= 63) set."""
    return (np.uint64(-1) >> np.uint64(63 - hi)) & ~((np.uint64(1) << np.uint64(lo)) - np.uint64(1))


@numba.njit(cache=True, nogil=True, inline="always")
def _axpy(B, G, b0, g0, e, n):
    """``B[b0:b0 + n] += e * G[g0:g0 + n]`` (unsigned indices: LLVM vectorises the loop)."""
    b = np.uint64(b0)
    g = np.uint64(g0)
    for i in range(np.uint64(n)):
        B[b + i] += e * G[g + i]


@numba.njit(cache=True, nogil=True, fastmath=True, inline="always")
def _row_max(B, row, n):
    """Largest of ``B[row:row + n]`` (non-negative values; fastmath only reorders the maximum)."""
    r = np.uint64(row)
    mx = np.float32(0.0)
    for i in range(np.uint64(n)):
        mx = max(mx, B[r + i])
    return mx


@numba.njit(cache=True, nogil=True)
def _window_pass(ijk, exp_of_focus, cube_of_focus, width, wrows, wstart, shape, cand, n_cand, win_id, colmask,
                 ybits, wkey, wcur, wsm, mask_grid, log_cut, cut_ale, supra, label, values):
    """Exact log(1 - ALE) on the windows holding ``cand`` (flat order): (min over their
    in-mask voxels, n_supra). ``colmask`` and ``ybits`` are left cleared (``win_id`` is read
    only for columns with a bit in ``colmask``)."""
    nx, ny, nz = shape[0], shape[1], shape[2]
    NZW = (nz + WINDOW - 1) // WINDOW
    NYW = ybits.shape[0] // (nx * NZW)
    n_win = 0
    last = -1
    for i in range(n_cand):
        v = cand[i]
        key = v - (v % nz) % WINDOW
        if key != last:
            col = v // nz
            zw = (v % nz) // WINDOW
            if colmask[col] == 0:
                win_id[col] = n_win  # the column's first window; its others follow in z order
            colmask[col] |= np.uint64(1) << np.uint64(zw)
            x, y = col // ny, col % ny
            ybits[(x * NZW + zw) * NYW + (y >> 6)] |= np.uint64(1) << np.uint64(y & 63)
            wkey[n_win] = key
            wcur[n_win] = -1
            n_win += 1
            last = key
    wsm[: 2 * WINDOW * n_win] = 0.0
    for f in range(ijk.shape[0]):
        j = cube_of_focus[f]
        w = width[j]
        r = w // 2
        fx, fy, fz = ijk[f, 0], ijk[f, 1], ijk[f, 2]
        e = exp_of_focus[f]
        za, zb = max(0, fz - r) // WINDOW, min(nz - 1, fz + r) // WINDOW
        zbits = _bit_range(za, zb)
        ya, yb = max(0, fy - r), min(ny - 1, fy + r)
        stride = w + 2 * WINDOW
        s0 = wstart[j] + WINDOW - fz + r
        below = ~zbits & (zbits - np.uint64(1))  # windows of a column below this focus's first
        for x in range(max(0, fx - r), min(nx, fx + r + 1)):
            for h in range(ya >> 6, (yb >> 6) + 1):
                lo, hi = max(ya - 64 * h, 0), min(yb - 64 * h, 63)
                span = _bit_range(lo, hi)
                col0 = np.uint64(x * ny + 64 * h)
                row0 = s0 + ((x - fx + r) * w + (64 * h - fy + r)) * stride
                for zw in range(za, zb + 1):
                    bits = ybits[(x * NZW + zw) * NYW + h] & span
                    zbelow = (np.uint64(1) << np.uint64(zw)) - np.uint64(1)
                    while bits != 0:
                        t = trailing_zeros(bits)
                        bits &= bits - np.uint64(1)
                        col = col0 + np.uint64(t)
                        q = np.uint64(win_id[col] + bit_count(colmask[col] & zbelow))
                        window8(wsm, q * np.uint64(2 * WINDOW), wrows, row0 + t * stride + WINDOW * zw, wcur[q] != e)
                        wcur[q] = e
    best = 0.0
    n_supra = 0
    for q in range(n_win):
        add8(wsm, 2 * WINDOW * q, wsm, 2 * WINDOW * q + WINDOW)
        key = wkey[q]
        col = key // nz
        z0 = key % nz
        for c in range(min(WINDOW, nz - z0)):
            v = key + c
            if mask_grid[v]:
                x = wsm[2 * WINDOW * q + c]
                best = min(best, x)
                n_supra = keep_if_supra(v, x, log_cut, cut_ale, supra, n_supra, label, values)
        colmask[col] = 0
        ybits[((col // ny) * NZW + z0 // WINDOW) * NYW + ((col % ny) >> 6)] = 0
    return best, n_supra


@numba.njit(cache=True, nogil=True)
def windowed(ijk, exp_of_focus, cube_of_focus, width, plane_rows, plane_start, env, cube_class, sep_cut, nzp,
             wrows, wstart,
             shape, mask_grid, log_cut, cut_ale, G, plane_lo, plane_hi, B, by_x, x_ptr, cand, max_cand, win_id,
             colmask, ybits, wkey, wcur, wsm, supra, label, values):
    """One iteration by separable bound and windows: (min log1m, n_supra), with n_supra = -2
    when more than ``max_cand`` voxels are candidates and -1 when no voxel exceeds the
    threshold (the caller then computes the whole grid)."""
    n_cand = _separable_bound(ijk, cube_of_focus, width, plane_rows, plane_start, env, cube_class, sep_cut, shape,
                              nzp, G, plane_lo, plane_hi, B, mask_grid, cand, max_cand, by_x, x_ptr)
    if n_cand < 0:
        return 0.0, -2
    best, n_supra = _window_pass(ijk, exp_of_focus, cube_of_focus, width, wrows, wstart, shape, cand, n_cand,
                                 win_id, colmask, ybits, wkey, wcur, wsm, mask_grid, log_cut, cut_ale, supra,
                                 label, values)
    if n_supra == 0:
        return best, -1
    return best, n_supra


class WindowWork:
    """Per-thread work arrays of :func:`windowed` for one plan (``plan.window``)."""

    def __init__(self, plan, share: float = MAX_WINDOW_SHARE):
        nx, ny, nz = (int(s) for s in plan.shape)
        tables = plan.window
        self.max_cand = _most_candidates(plan, share)
        rings = tables.env.size  # classes x (2 R + 1) planes
        self.G = np.zeros(rings * ny * tables.nzp, dtype=np.float32)
        self.B = np.zeros(ny * tables.nzp, dtype=np.float32)
        self.plane_lo = np.full(rings, ny, dtype=np.int64)
        self.plane_hi = np.zeros(rings, dtype=np.int64)
        self.by_x = np.zeros(plan.n_foci, dtype=np.int64)
        self.x_ptr = np.zeros(nx + 1, dtype=np.int64)
        self.win_id = np.zeros(nx * ny, dtype=np.int64)
        self.colmask = np.zeros(nx * ny, dtype=np.uint64)
        self.ybits = np.zeros(nx * (-(-nz // WINDOW)) * (-(-ny // 64)), dtype=np.uint64)
        self.wkey = np.zeros(self.max_cand, dtype=np.int64)
        self.wcur = np.zeros(self.max_cand, dtype=np.int64)
        self.wsm = np.zeros(2 * WINDOW * self.max_cand)

    def fits(self, plan, share: float = MAX_WINDOW_SHARE) -> bool:
        """Whether these arrays serve ``plan`` with this share of candidates."""
        return (self.G.shape[0] == plan.window.env.size * int(plan.shape[1]) * plan.window.nzp
                and self.by_x.shape[0] == plan.n_foci and self.x_ptr.shape[0] == int(plan.shape[0]) + 1
                and self.max_cand == _most_candidates(plan, share))


def _most_candidates(plan, share: float) -> int:
    return min(plan.n_mask, int(share * plan.n_mask)) + 1
