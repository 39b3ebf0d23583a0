"""The Monte Carlo plan: loop invariants compiled once, shared by backends.

A :class:`MonteCarloPlan` holds everything an iteration needs that does not
change between iterations: the kernels (as ``log1p(-k)`` cubes), the
experiment layout, the mask, the cluster-forming threshold and the
neighbourhood. Backends (CPU threads, GPU) take a plan and a block of random
draws and return per-iteration maxima.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alemap.inference.cpu import BOUND_PAD, ROW_PAD, SLAB, SPARSE_SLAB, neighbour_offsets
from alemap.inference.simd import LANES_F32
from alemap.inference.windows import MAX_WINDOWS_PER_COLUMN, SEPARABLE_CLASSES, SEPARATE_CLASSES_FROM_FOCI, WINDOW
from alemap.kernels.gaussian import KernelCubes, block_bounds

__all__ = ["MonteCarloPlan", "make_plan", "kernel_rows", "slab_tiling", "tiles_per_focus"]


@dataclass(frozen=True)
class MonteCarloPlan:
    """Invariants of the Monte Carlo null (see module docstring)."""

    mask_ijk: np.ndarray
    mask_flat: np.ndarray
    exp_offsets: np.ndarray
    cube_of_exp: np.ndarray
    log1m_k: np.ndarray
    start: np.ndarray
    width: np.ndarray
    shape: np.ndarray
    cut_ale: float
    log_cut: float
    nbr: np.ndarray
    mask_grid: np.ndarray
    cube_of_focus: np.ndarray
    blog: np.ndarray
    bstart: np.ndarray
    bwidth: np.ndarray
    dlo: np.ndarray
    bshape: np.ndarray
    mask_blocks: np.ndarray
    exp_of_focus: np.ndarray
    sshape: np.ndarray
    slab_z: np.ndarray
    sparse_shape: np.ndarray
    bound_cut: float
    log1m_rows: np.ndarray
    row_start: np.ndarray
    window: WindowTables

    @property
    def n_foci(self) -> int:
        """Foci relocated per iteration."""
        return int(self.exp_offsets[-1])

    @property
    def n_mask(self) -> int:
        """In-mask voxels foci are drawn from."""
        return int(self.mask_flat.shape[0])

    @property
    def n_blocks(self) -> int:
        """Blocks of 2x2x2 voxels covering the grid."""
        return int(np.prod(self.bshape))

    @property
    def n_slabs(self) -> int:
        """Tiles of SLAB voxels covering the grid (whole-grid path)."""
        return int(np.prod(self.sshape))

    @property
    def n_sparse_slabs(self) -> int:
        """Tiles of SPARSE_SLAB voxels covering the grid (pruned path)."""
        return int(np.prod(self.sparse_shape))

    @property
    def max_tiles_per_focus(self) -> int:
        """Most tiles of either tiling one focus's kernel box can touch."""
        return tiles_per_focus(int(self.width.max()))

    @property
    def n_grid(self) -> int:
        """Voxels of the full grid."""
        return int(np.prod(self.shape))


def make_plan(
    mask: np.ndarray,
    exp_offsets: np.ndarray,
    cube_of_exp: np.ndarray,
    cubes: KernelCubes,
    cut_ale: float,
    connectivity: int = 6,
) -> MonteCarloPlan:
    """Build the plan for a mask, experiments and a cluster-forming ALE threshold.

    Voxels with ``ALE > cut_ale`` form clusters.
    """
    mask_flat = np.flatnonzero(mask.ravel()).astype(np.int64)
    bb = block_bounds(cubes)
    bshape = (np.asarray(mask.shape) + 1) // 2
    padded = np.zeros(tuple(2 * bshape), dtype=bool)
    padded[: mask.shape[0], : mask.shape[1], : mask.shape[2]] = mask
    block_in_mask = padded.reshape(bshape[0], 2, bshape[1], 2, bshape[2], 2).any(axis=(1, 3, 5))
    sshape, slab_in_mask = _tiling(mask, SLAB)
    sparse_shape, _ = _tiling(mask, SPARSE_SLAB)
    cube_of_exp = np.asarray(cube_of_exp, dtype=np.int64)
    mask_ijk = np.column_stack(np.unravel_index(mask_flat, mask.shape)).astype(np.int64)
    return MonteCarloPlan(
        mask_ijk=np.ascontiguousarray(mask_ijk),
        mask_flat=mask_flat,
        exp_offsets=np.asarray(exp_offsets, dtype=np.int64),
        cube_of_exp=cube_of_exp,
        log1m_k=cubes.log1m,
        start=cubes.start,
        width=cubes.width,
        shape=np.asarray(mask.shape, dtype=np.int64),
        cut_ale=float(cut_ale),
        log_cut=float(np.log1p(-cut_ale)),
        nbr=neighbour_offsets(connectivity),
        mask_grid=np.ascontiguousarray(mask.ravel().astype(np.uint8)),
        cube_of_focus=np.repeat(cube_of_exp, np.diff(exp_offsets)).astype(np.int64),
        **_bound_rows(bb),
        bwidth=bb.bwidth,
        dlo=bb.dlo,
        bshape=bshape.astype(np.int64),
        mask_blocks=np.flatnonzero(block_in_mask.ravel()).astype(np.int64),
        exp_of_focus=np.repeat(np.arange(len(exp_offsets) - 1), np.diff(exp_offsets)).astype(np.int64),
        sshape=sshape,
        slab_z=_slab_z_ranges(sshape, slab_in_mask, mask.shape[2]),
        sparse_shape=sparse_shape,
        bound_cut=_bound_cut(float(np.log1p(-cut_ale)), int(exp_offsets[-1])),
        **kernel_rows(cubes),
        window=window_tables(cubes.values, cubes.log1m, cubes.start, cubes.width, float(np.log1p(-cut_ale)),
                             np.bincount(cube_of_exp, weights=np.diff(exp_offsets), minlength=len(cubes.width))
                             .astype(np.int64), mask.shape),
    )


def _padded_rows(values: np.ndarray, start: np.ndarray, edges, pad: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Cubes ``values[start[c]:start[c + 1]]`` (edge ``edges[c]``, C order) with every row
    (along the last axis) followed by ``pad`` zeros: the flat array and each cube's start."""
    parts, starts = [], [0]
    for c, n in enumerate(int(e) for e in edges):
        rows = np.zeros((n, n, n + pad), dtype=dtype)
        rows[:, :, :n] = values[start[c] : start[c + 1]].reshape(n, n, n)
        parts.append(rows.ravel())
        starts.append(starts[-1] + rows.size)
    return np.concatenate(parts), np.asarray(starts, dtype=np.int64)


def kernel_rows(cubes: KernelCubes) -> dict:
    """The ``log1p(-k)`` cubes, rows padded by ``ROW_PAD`` zeros, for the whole-grid path's
    eight-wide row operations: cube j (edge w) occupies ``log1m_rows[row_start[j]:]`` as a
    (w, w, w + ROW_PAD) array."""
    rows, starts = _padded_rows(cubes.log1m, cubes.start, cubes.width, ROW_PAD, np.float64)
    return {"log1m_rows": rows, "row_start": starts}


def _bound_rows(bb) -> dict:
    """Block bounds (float32, rounded down), rows padded by ``BOUND_PAD`` zeros, for the bound
    pass's sixteen-wide row additions: cube ``8 j + parity`` (edge nb) occupies
    ``blog[bstart[8 j + parity]:]`` as an (nb, nb, nb + BOUND_PAD) array."""
    edges = np.repeat(bb.bwidth, 8)
    rows, starts = _padded_rows(_round_down_f32(bb.log1m), bb.start, edges, BOUND_PAD, np.float32)
    return {"blog": rows, "bstart": starts}


def tiles_per_focus(width: int) -> int:
    """Most tiles of either tiling (``SLAB``, ``SPARSE_SLAB``) a kernel box of edge ``width`` touches."""
    def most(dims):
        return int(np.prod([(width + d - 2) // d + 1 for d in dims]))
    return max(most(SLAB), most(SPARSE_SLAB))


def slab_tiling(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The whole-grid pass's ``SLAB`` tiling of a grid: its shape in tiles and each tile's z-range
    (the whole tile where it holds a ``mask`` voxel, empty elsewhere)."""
    sshape, in_mask = _tiling(mask, SLAB)
    return sshape, _slab_z_ranges(sshape, in_mask, mask.shape[2])


def _slab_z_ranges(sshape: np.ndarray, slab_in_mask: np.ndarray, nz: int) -> np.ndarray:
    """The whole-grid pass's z-range of each ``SLAB`` tile: all of it for tiles holding a mask
    voxel, none for the others (``cpu._tiled``)."""
    c0 = (np.arange(int(np.prod(sshape))) % sshape[2]) * SLAB[2]
    z = np.column_stack([c0, np.minimum(c0 + SLAB[2], nz)]).astype(np.int64)
    z[slab_in_mask == 0] = 0
    return np.ascontiguousarray(z)


def _tiling(mask: np.ndarray, dims) -> tuple[np.ndarray, np.ndarray]:
    """Tiles of edges ``dims`` over the grid: their grid shape (int64) and whether each holds a mask voxel (uint8)."""
    dims = np.asarray(dims)
    tshape = -(-np.asarray(mask.shape) // dims)
    pad = np.zeros(tuple(dims * tshape), dtype=bool)
    pad[: mask.shape[0], : mask.shape[1], : mask.shape[2]] = mask
    inside = pad.reshape(tshape[0], dims[0], tshape[1], dims[1], tshape[2], dims[2]).any(axis=(1, 3, 5))
    return tshape.astype(np.int64), inside.ravel().astype(np.uint8)


def _round_down_f32(x: np.ndarray) -> np.ndarray:
    """float32 copy of ``x`` rounded towards -inf, so that it stays a lower bound of log(1 - k)."""
    return _round_f32(x, -np.inf)


def _round_up_f32(x: np.ndarray) -> np.ndarray:
    """float32 copy of ``x`` rounded towards +inf (upper bounds stay upper bounds)."""
    return _round_f32(x, np.inf)


def _round_f32(x: np.ndarray, toward: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    y = x.astype(np.float32)
    off = (y.astype(np.float64) > x) if toward < 0 else (y.astype(np.float64) < x)
    return np.where(off, np.nextafter(y, np.float32(toward)), y).astype(np.float32)


def _bound_cut(log_cut: float, n_foci: int) -> float:
    """Threshold for the float32 block bounds that never misses a candidate block.

    A block's bound is a float32 sum of at most ``n`` = ``n_foci`` non-positive
    terms, each rounded down, so the exact sum ``S`` of those terms is below
    the block's float64 bound; the computed sum is at most
    ``S + gamma_n |S|`` with ``gamma_n = n u / (1 - n u)``, ``u = 2^-24``
    (Higham 2002, *Accuracy and Stability of Numerical Algorithms*, section
    4.2). A voxel with ``log1m < log_cut`` thus lies in a block whose float32
    bound is below ``log_cut (1 - gamma_n)``.
    """
    nu = max(1, n_foci) * 2.0**-24
    return log_cut * (1.0 - nu / (1.0 - nu))


@dataclass(frozen=True)
class WindowTables:
    """Invariants of the window path (:func:`alemap.inference.windows.windowed`) for one set of
    kernel cubes and threshold (built by :func:`window_tables`)."""

    plane_rows: np.ndarray  # float32: cube j's (w, ceil(w / 16) * 16) plane bounds from plane_start[j]
    plane_start: np.ndarray
    env: np.ndarray  # float32 (classes, 2 R + 1): the largest normalised 1-D kernel factor per class
    cube_class: np.ndarray  # int64: each cube's class
    sep_cut: float  # float32 threshold of the bound B (in -log(1 - ALE))
    nzp: int  # z-length of G's and B's rows: nz + R + the longest padded plane row
    wrows: np.ndarray  # float64: cube j's (w * w, w + 16) log(1 - k) rows, 8 zeros each side, from wstart[j]
    wstart: np.ndarray
    usable: bool  # the tables bound, and the grid has at most 64 windows per column


def window_tables(values: np.ndarray, log1m: np.ndarray, start: np.ndarray, width: np.ndarray, log_cut: float,
                  foci_per_cube, shape) -> WindowTables:
    """Tables of the separable bound and the window pass (:mod:`alemap.inference.windows`) for
    kernel cubes ``values`` (``log1m = log1p(-values)``; cube j of edge ``width[j]`` from
    ``start[j]``).

    ``plane_j(dy, dz)`` is the largest ``m_j / g_j(dx)`` over ``dx``, so ``m_j <= g_j(dx)
    plane_j(dy, dz) <= env(dx) plane_j(dy, dz)`` holds for any kernel whose centre row along
    x is positive; for the separable Gaussian kernels it is tight (the ratio is largest at
    ``dx = 0``, within ``1 + k / 2`` of the value). ``env`` is the largest ``g_j`` of a class
    of kernels: with several sample sizes, the widest kernel's tails would loosen the bound of
    the narrow ones (1,000 tables, 8-60 subjects: 7.7 % candidate voxels with one class, 3.5 %
    with two, 2.7 % with three), so with many foci the cubes are split at the median focus, by
    width, into ``SEPARABLE_CLASSES`` classes, each with its own planes and pass along x. Tables that could
    not bound (a zero in a centre row) or a float32 margin past one half leave the window path
    unused."""
    R = int(width.max()) // 2
    classes = _width_classes(values, start, width, np.asarray(foci_per_cube))
    env = np.zeros((int(classes.max()) + 1, 2 * R + 1))
    positive = True
    planes, plane_start, rows, wstart = [], [0], [], [0]
    for j, w in enumerate(int(x) for x in width):
        k = values[start[j] : start[j] + w**3].reshape(w, w, w)
        lg = log1m[start[j] : start[j] + w**3].reshape(w, w, w)
        c = w // 2
        g = k[:, c, c] / k[c, c, c]  # the 1-D factor along x, 1 at the centre
        positive = positive and bool(np.all(g > 0.0))
        g = np.where(g > 0.0, g, 1.0)
        env[classes[j], R - c : R + c + 1] = np.maximum(env[classes[j], R - c : R + c + 1], g)
        plane = np.zeros((w, -(-w // LANES_F32) * LANES_F32))
        plane[:, :w] = (-lg / g[:, None, None]).max(axis=0) * (1.0 + 1e-12)
        planes.append(_round_up_f32(plane).ravel())
        plane_start.append(plane_start[-1] + plane.size)
        padded = np.zeros((w * w, w + 2 * WINDOW))
        padded[:, WINDOW : WINDOW + w] = lg.reshape(w * w, w)
        rows.append(padded.ravel())
        wstart.append(wstart[-1] + padded.size)
    longest = max(-(-int(w) // LANES_F32) * LANES_F32 for w in width)
    nz = int(shape[2])
    # B is a float32 sum of at most n_foci + classes (2 R + 1) positive terms and products
    # (Higham 2002, section 4.2: relative error at most gamma_n = n u / (1 - n u), u = 2^-24);
    # the cut keeps a margin of twice that
    n = int(np.sum(foci_per_cube)) + env.shape[0] * (2 * R + 1) + 4
    gamma = n * 2.0**-24 / (1.0 - n * 2.0**-24) if n * 2.0**-24 < 0.25 else 1.0
    cut = float(_round_down_f32(np.array([-log_cut * (1.0 - 2.0 * gamma)]))[0])
    return WindowTables(
        plane_rows=np.concatenate(planes + [np.zeros(LANES_F32, dtype=np.float32)]),
        plane_start=np.asarray(plane_start[:-1], dtype=np.int64),
        env=_round_up_f32(env),
        cube_class=classes,
        sep_cut=cut,
        nzp=-(-(nz + R + longest) // LANES_F32) * LANES_F32,
        wrows=np.concatenate(rows),
        wstart=np.asarray(wstart[:-1], dtype=np.int64),
        usable=positive and gamma < 0.25 and -(-nz // WINDOW) <= MAX_WINDOWS_PER_COLUMN,
    )


def _width_classes(values: np.ndarray, start: np.ndarray, width: np.ndarray, foci_per_cube: np.ndarray) -> np.ndarray:
    """Class of each kernel cube for the separable bound: cubes sorted by the width of their
    1-D factor, cut into ``SEPARABLE_CLASSES`` runs holding about equal numbers of foci (one
    class below ``SEPARATE_CLASSES_FROM_FOCI`` foci or with one cube holding foci)."""
    spread = np.empty(len(width))
    for j, w in enumerate(int(x) for x in width):
        c = w // 2
        row = values[start[j] : start[j] + w**3].reshape(w, w, w)[:, c, c]
        spread[j] = row.sum() / row[c]  # proportional to the Gaussian's sigma
    order = np.argsort(spread, kind="stable")
    used = order[np.asarray(foci_per_cube)[order] > 0]
    many = int(np.sum(foci_per_cube)) >= SEPARATE_CLASSES_FROM_FOCI  # below, a second pass costs more
    n_classes = max(1, min(SEPARABLE_CLASSES if many else 1, used.size))
    share = np.cumsum(np.asarray(foci_per_cube)[order]) / max(1, int(np.sum(foci_per_cube)))
    classes = np.zeros(len(width), dtype=np.int64)
    classes[order] = np.minimum((share * n_classes - 1e-9).astype(np.int64).clip(0), n_classes - 1)
    return classes
