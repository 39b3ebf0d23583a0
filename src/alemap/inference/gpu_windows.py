"""Window path of the array engine (CuPy on a GPU, the same code on NumPy): dense nulls.

The array counterpart of :mod:`alemap.inference.windows`, for a block of
iterations at once, with the same tables (``plan.window``) and the same result
bits as the plain accumulation:

1. Separable bound. Every focus adds its kernel's plane bound (w x w float32,
   rounded up) to its x-plane of a padded grid per class of kernel widths (a
   scatter-add; the order of the float32 additions does not matter, since the
   cut ``sep_cut`` keeps Higham's margin for any order); one pass of
   ``2 R + 1`` shifted, scaled copies along x gives the bound ``B`` of every
   voxel. In-mask voxels with ``B > sep_cut`` are the candidates; an iteration
   with more than ``share`` of the mask as candidates is left to the whole-grid
   path.
2. Windows of eight voxels along z holding candidates. For each focus, the
   w x w columns of its box and the (at most ``(w + 6) // 8 + 1``) windows its
   z-range reaches are looked up in the window occupancy; each hit is a pair
   (window, focus) with the focus's eight ``log(1 - k)`` values there (the
   padded kernel rows of ``plan.window.wrows``). Pairs are sorted by (window,
   focus): foci are in experiment order, so each window's pairs come as runs of
   one experiment, in experiment order. The minimum of a run is taken value by
   value (``k < d ? k : d``, as ``simd.window8``), and the runs' minima are added
   into the window's sums one rank at a time (rank k of every window at once),
   so every window voxel gets ``((0 + m_1) + m_2) + ...`` in experiment order:
   the plain accumulation's bits, as on the CPU.

Iterations with no voxel above the threshold (the maximum may then lie outside
the candidates) or too many candidates are recomputed on the whole grid by the
caller (:func:`alemap.inference.gpu.run_iterations`).

Measured: only on NumPy, for correctness (``tests/test_gpu_backend.py``); its
speed on a GPU against the whole-grid path is still to be measured (issue 5;
docs/dev-notes/session-7.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from alemap.inference.backends import to_host
from alemap.inference.windows import MAX_WINDOW_SHARE, WINDOW

__all__ = ["WindowDevice", "window_log1m", "PAIR_BYTES", "WINDOW_GRID_BYTES", "bytes_per_iteration",
           "pairs_per_iteration"]

#: Bytes per (window, focus) pair: window id, focus, sort key and order (8 each), its eight
#: float64 values (64).
PAIR_BYTES = 4 * 8 + 8 * 8
#: Bytes per grid voxel and iteration besides the whole-grid path's and the bound planes (see
#: :func:`bytes_per_iteration`): the bound (float32), candidates and occupancy (bool), window ids
#: (int64 per eight voxels), and two bool temporaries.
WINDOW_GRID_BYTES = 4 + 1 + 1 + 1 + 2


@dataclass(frozen=True)
class WindowDevice:
    """The window tables of a plan on the device (``plan.window``)."""

    planes: tuple  # per kernel cube: (w, w) float32 plane bound, or None for a cube without foci
    env: np.ndarray  # host float32 (classes, 2 R + 1)
    cube_class: np.ndarray  # host int64
    foci_of_cube: tuple  # per cube: its foci (device int64), in focus order
    wrows: Any  # device float64: padded log(1 - k) rows
    wstart: np.ndarray  # host int64
    exp_of_focus: Any  # device int64
    mask_grid: Any  # device bool (n_grid,)
    sep_cut: np.float32
    share: float

    @classmethod
    def build(cls, plan, xp, share: float = MAX_WINDOW_SHARE) -> "WindowDevice":
        t = plan.window
        planes, foci = [], []
        for j, w in enumerate(int(v) for v in plan.width):
            rw = -(-w // 16) * 16
            rows = t.plane_rows[t.plane_start[j] : t.plane_start[j] + w * rw].reshape(w, rw)[:, :w]
            planes.append(xp.asarray(np.ascontiguousarray(rows)))
            foci.append(xp.asarray(np.flatnonzero(plan.cube_of_focus == j).astype(np.int64)))
        return cls(tuple(planes), np.asarray(t.env, dtype=np.float32), np.asarray(t.cube_class), tuple(foci),
                   xp.asarray(t.wrows), np.asarray(t.wstart), xp.asarray(plan.exp_of_focus),
                   xp.asarray(np.asarray(plan.mask_grid, dtype=bool)), np.float32(t.sep_cut),
                   float(share))


def bytes_per_iteration(plan, share: float = MAX_WINDOW_SHARE) -> int:
    """Device bytes of one iteration of the window path: the bound's padded float32 planes
    (x padded by the envelope's radius, y and z by the widest kernel's), the per-voxel arrays
    (``WINDOW_GRID_BYTES``) and the estimated pairs (``PAIR_BYTES`` each)."""
    R = plan.window.env.shape[1] // 2
    P = int(plan.width.max()) // 2
    nx, ny, nz = (int(v) for v in plan.shape)
    planes = 4 * (nx + 2 * R) * (ny + 2 * P) * (nz + 2 * P)
    return planes + WINDOW_GRID_BYTES * plan.n_grid + PAIR_BYTES * pairs_per_iteration(plan, share)


def pairs_per_iteration(plan, share: float = MAX_WINDOW_SHARE) -> int:
    """A working estimate of the pairs of one iteration at the largest share of candidates:
    every focus's box windows, times the share (used to size blocks; running out of memory
    halves them)."""
    w = int(plan.width.max())
    return int(plan.n_foci * w * w * ((w + 6) // WINDOW + 1) * share) + 1


def _candidates(xp, dp, wd: WindowDevice, ijk, max_entries: int):
    """(m, n_grid) bool: in-mask voxels whose separable bound exceeds ``sep_cut``."""
    plan = dp.plan
    nx, ny, nz = (int(s) for s in plan.shape)
    m = ijk.shape[0]
    R = wd.env.shape[1] // 2
    P = int(plan.width.max()) // 2
    NXP, NYP, NZP = nx + 2 * R, ny + 2 * P, nz + 2 * P
    it = xp.arange(m, dtype=xp.int64)[:, None]
    B = xp.zeros((m, nx, ny, nz), dtype=xp.float32)
    G = xp.zeros(m * NXP * NYP * NZP, dtype=xp.float32)
    for c in range(wd.env.shape[0]):
        if c:
            G[:] = 0.0
        for j in np.flatnonzero(wd.cube_class == c).tolist():
            fj = wd.foci_of_cube[j]
            if fj.shape[0] == 0:
                continue
            plane = wd.planes[j]
            w = plane.shape[0]
            r = w // 2
            offs = (xp.arange(w, dtype=xp.int64)[:, None] * NZP + xp.arange(w, dtype=xp.int64)[None, :]).reshape(-1)
            step = max(1, max_entries // (m * w * w))
            for a in range(0, fj.shape[0], step):
                f = fj[a : a + step]
                x, y, z = ijk[:, f, 0], ijk[:, f, 1], ijk[:, f, 2]
                base = ((it * NXP + x + R) * NYP + y - r + P) * NZP + z - r + P  # (m, n)
                idx = (base[..., None] + offs).reshape(-1)
                values = xp.broadcast_to(plane.reshape(-1), (idx.shape[0] // (w * w), w * w)).reshape(-1)
                xp.add.at(G, idx, values)  # repeated indices add up (float32 atomics on a GPU)
        Gv = G.reshape(m, NXP, NYP, NZP)
        for d in range(2 * R + 1):
            e = wd.env[c, d]
            if e != 0.0:
                B += e * Gv[:, d : d + nx, P : P + ny, P : P + nz]
    return (B.reshape(m, -1) > wd.sep_cut) & wd.mask_grid[None, :]


def _pairs(xp, dp, wd: WindowDevice, ijk, occ, wmap, max_entries: int):
    """(window id, focus, eight values) of every focus and candidate window it reaches."""
    plan = dp.plan
    nx, ny, nz = (int(s) for s in plan.shape)
    NZW = occ.shape[-1]
    m = ijk.shape[0]
    occ_flat = occ.reshape(-1)
    lanes = xp.arange(WINDOW, dtype=xp.int64)
    wids, foci, values = [], [], []
    for j, fj in enumerate(wd.foci_of_cube):
        if fj.shape[0] == 0:
            continue
        w = int(plan.width[j])
        r = w // 2
        K = (w + 6) // WINDOW + 1
        d = xp.arange(w, dtype=xp.int64) - r
        step = max(1, max_entries // (m * w * w * K))
        for a in range(0, fj.shape[0], step):
            f = fj[a : a + step]
            n = f.shape[0]
            fx, fy, fz = ijk[:, f, 0], ijk[:, f, 1], ijk[:, f, 2]  # (m, n)
            xs, ys = fx[..., None] + d, fy[..., None] + d  # (m, n, w)
            za = xp.maximum(fz - r, 0) // WINDOW
            zb = xp.minimum(fz + r, nz - 1) // WINDOW
            zw = za[..., None] + xp.arange(K, dtype=xp.int64)  # (m, n, K)
            ok = (((xs >= 0) & (xs < nx))[..., :, None, None] & ((ys >= 0) & (ys < ny))[..., None, :, None]
                  & (zw <= zb[..., None])[..., None, None, :])
            it = xp.arange(m, dtype=xp.int64)[:, None, None, None, None]
            key = ((it * nx + xs[..., :, None, None]) * ny + ys[..., None, :, None]) * NZW + zw[..., None, None, :]
            key = xp.where(ok, key, 0).reshape(-1)
            hit = xp.flatnonzero(ok.reshape(-1) & occ_flat[key])
            if hit.shape[0] == 0:
                continue
            t, u, dx, dy, k = xp.unravel_index(hit, (m, n, w, w, K))
            z0 = fz[t, u]
            src = (int(wd.wstart[j]) + WINDOW - z0 + r + (dx * w + dy) * (w + 2 * WINDOW)
                   + WINDOW * (za[t, u] + k))
            wids.append(wmap[key[hit]])
            foci.append(f[u])
            values.append(wd.wrows[src[:, None] + lanes])
    if not wids:
        return None
    return xp.concatenate(wids), xp.concatenate(foci), xp.concatenate(values)


def window_log1m(dp, wd: WindowDevice, ijk, max_entries: int):
    """log(1 - ALE) of the ``m`` iterations of ``ijk`` (m, n_foci, 3) on their candidate
    windows (0 elsewhere), as a flat array of m grids plus a spare slot, and a host bool
    array of the iterations whose candidates exceed ``wd.share`` of the mask (their grids
    are left 0: the caller computes them on the whole grid)."""
    xp, plan = dp.xp, dp.plan
    nx, ny, nz = (int(s) for s in plan.shape)
    n_grid = plan.n_grid
    m = ijk.shape[0]
    NZW = -(-nz // WINDOW)
    cand = _candidates(xp, dp, wd, ijk, max_entries)
    dense = cand.sum(axis=1) > wd.share * plan.n_mask
    cand[dense] = False
    occ = xp.zeros((m, nx, ny, NZW * WINDOW), dtype=bool)
    occ[..., :nz] = cand.reshape(m, nx, ny, nz)
    del cand
    occ = occ.reshape(m, nx, ny, NZW, WINDOW).any(axis=-1)
    log1m = xp.zeros(m * n_grid + 1)
    where = xp.flatnonzero(occ.reshape(-1))
    if where.shape[0] == 0:
        return log1m, to_host(dense)
    wmap = xp.full(occ.size, -1, dtype=xp.int64)
    wmap[where] = xp.arange(where.shape[0], dtype=xp.int64)
    pairs = _pairs(xp, dp, wd, ijk, occ, wmap, max_entries)
    if pairs is None:
        return log1m, to_host(dense)
    wid, focus, vals = pairs
    del pairs, wmap, occ
    order = xp.argsort(wid * plan.n_foci + focus)
    wid, vals = wid[order], vals[order]
    exp = wd.exp_of_focus[focus[order]]
    del order, focus
    # runs of one experiment in one window: their minimum, value by value
    new_run = xp.ones(wid.shape[0], dtype=bool)
    new_run[1:] = (wid[1:] != wid[:-1]) | (exp[1:] != exp[:-1])
    run_start = xp.flatnonzero(new_run)
    run_len = xp.diff(xp.concatenate([run_start, xp.asarray([wid.shape[0]], dtype=run_start.dtype)]))
    run_min = vals[run_start]
    for k in range(1, int(run_len.max())):
        s = xp.flatnonzero(run_len > k)
        row, cur = vals[run_start[s] + k], run_min[s]
        run_min[s] = xp.where(row < cur, row, cur)
    # each window's sums: its runs' minima added rank by rank, windows with most runs first
    run_wid = wid[run_start]
    new_win = xp.ones(run_wid.shape[0], dtype=bool)
    new_win[1:] = run_wid[1:] != run_wid[:-1]
    seg_start = xp.flatnonzero(new_win)
    seg_len = xp.diff(xp.concatenate([seg_start, xp.asarray([run_wid.shape[0]], dtype=seg_start.dtype)]))
    by_len = xp.argsort(-seg_len)
    seg_start, seg_len, seg_wid = seg_start[by_len], seg_len[by_len], run_wid[seg_start[by_len]]
    n_seg = int(seg_start.shape[0])
    active = n_seg - np.cumsum(np.bincount(to_host(seg_len), minlength=2))  # windows with more than k runs
    acc = xp.zeros((n_seg, WINDOW))
    for k in range(int(active.shape[0])):
        a = int(active[k])
        if a == 0:
            break
        acc[:a] += run_min[seg_start[:a] + k]
    # window (iteration, x, y, zw) -> its voxels' flat indices in the block's grids
    win = where[seg_wid]
    zw = win % NZW
    col = win // NZW  # (iteration * nx + x) * ny + y
    z = zw[:, None] * WINDOW + xp.arange(WINDOW, dtype=xp.int64)
    inside = z < nz
    vox = (col[:, None] * nz + z)[inside]
    log1m[vox] = acc[inside]
    return log1m, to_host(dense)
