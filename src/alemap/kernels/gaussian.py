"""Discrete, separable Gaussian kernels for modelled-activation (MA) maps.

The kernel is the isotropic Gaussian of :mod:`alemap.kernels.width` sampled
at integer voxel offsets. Each 1-D factor is normalised to sum 1 over a radius
of ``int(4 sigma + 0.5)`` voxels, capped at 15 voxels, and the 3-D kernel is
their outer product; voxels whose value does not exceed machine epsilon are
cropped (equal to NiMARE's ``get_ale_kernel``, which filters a 31^3 delta with
scipy's Gaussian filter). MA values are then per-voxel probabilities.

For the engines the kernels are stored as flat dense cubes, with
``log1p(-value)`` beside the values: ALE is a product of ``(1 - MA)`` terms,
so the engines add logarithms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alemap.kernels.width import sigma_vox_from_n

__all__ = ["MAX_RADIUS", "ale_kernel", "KernelCubes", "kernel_cubes", "BlockBounds", "block_bounds"]

#: Largest kernel radius in voxels (NiMARE's 31^3 work array).
MAX_RADIUS = 15


def _weights_1d(sigma: float) -> np.ndarray:
    radius = min(int(4.0 * sigma + 0.5), MAX_RADIUS)
    full = int(4.0 * sigma + 0.5)
    x = np.arange(-full, full + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    w /= w.sum()
    # capping the radius drops tail mass (kernel sum < 1 for tiny samples), as NiMARE does
    return w[full - radius : full + radius + 1]


def ale_kernel(n_subjects: int, voxel_size_mm: float = 2.0) -> np.ndarray:
    """3-D ALE kernel (odd cube, centred) for a sample size."""
    w = _weights_1d(float(sigma_vox_from_n(n_subjects, voxel_size_mm)))
    k = w[:, None, None] * w[None, :, None] * w[None, None, :]
    mid = len(w) // 2
    keep = np.flatnonzero(k[:, mid, mid] > np.spacing(1))
    lo, hi = keep.min(), keep.max()
    return k[lo : hi + 1, lo : hi + 1, lo : hi + 1]


@dataclass(frozen=True)
class KernelCubes:
    """Kernels as dense cubes, flattened, for the compiled map builders.

    Cube ``j`` has edge ``width[j] = 2 radius + 1`` and occupies
    ``values[start[j]:start[j] + width[j]**3]`` in C order; ``log1m`` holds
    ``log1p(-values)``.
    """

    values: np.ndarray
    log1m: np.ndarray
    start: np.ndarray
    width: np.ndarray
    peak: np.ndarray
    sample_sizes: tuple[int, ...]

    def index(self, n_subjects) -> np.ndarray:
        """Cube index of each sample size in ``n_subjects``."""
        lookup = {n: j for j, n in enumerate(self.sample_sizes)}
        return np.array([lookup[int(n)] for n in np.asarray(n_subjects).ravel()], dtype=np.int64)


def kernel_cubes(sample_sizes, voxel_size_mm: float = 2.0) -> KernelCubes:
    """Dense cubes for the distinct sample sizes in ``sample_sizes``."""
    distinct = tuple(sorted({int(n) for n in np.asarray(sample_sizes).ravel()}))
    cubes = [ale_kernel(n, voxel_size_mm) for n in distinct]
    sizes = [c.size for c in cubes]
    start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    values = np.concatenate([c.ravel() for c in cubes])
    return KernelCubes(
        values=values,
        log1m=np.log1p(-values),
        start=start,
        width=np.array([c.shape[0] for c in cubes], dtype=np.int64),
        peak=np.array([c.max() for c in cubes]),
        sample_sizes=distinct,
    )


@dataclass(frozen=True)
class BlockBounds:
    """Upper bounds of each kernel over 2x2x2 voxel blocks, for pruning.

    A focus at voxel ``i`` (block ``i >> 1``, parity ``i & 1`` on each axis)
    gives every voxel of block ``I + D`` at most ``bx[D] * by[D] * bz[D]``,
    the product of the 1-D kernel weights' maxima over the block (the kernel
    is separable and positive). Cube ``(j, parity)`` holds ``log1p(-bound)``
    for block offsets ``D`` in ``[dlo[j], dlo[j] + bwidth[j])`` on each axis and
    starts at ``start[8 * j + parity]``, ``parity = 4 px + 2 py + pz``.
    """

    log1m: np.ndarray
    start: np.ndarray
    bwidth: np.ndarray
    dlo: np.ndarray


def _block_max_1d(w: np.ndarray, parity: int, dlo: int, nb: int) -> np.ndarray:
    r = len(w) // 2
    out = np.zeros(nb)
    for d in range(-r, r + 1):
        blk = (parity + d) >> 1  # floor division, valid for negatives
        out[blk - dlo] = max(out[blk - dlo], w[d + r])
    return out


def block_bounds(cubes: KernelCubes) -> BlockBounds:
    """Block-maximum kernels of :func:`kernel_cubes` (one set per cube)."""
    parts, start, bwidth, dlo = [], [0], [], []
    for j, n in enumerate(cubes.sample_sizes):
        w_cube = int(cubes.width[j])
        r = w_cube // 2
        cube = cubes.values[cubes.start[j] : cubes.start[j] + w_cube**3].reshape((w_cube,) * 3)
        # the separable 1-D factor: K[a, r, r] = w_a * w_r**2 and K[r, r, r] = w_r**3
        w = cube[:, r, r] / np.cbrt(cube[r, r, r]) ** 2
        lo, hi = (-r) >> 1, (r + 1) >> 1
        nb = hi - lo + 1
        for par in range(8):
            px, py, pz = (par >> 2) & 1, (par >> 1) & 1, par & 1
            bx, by, bz = (_block_max_1d(w, p, lo, nb) for p in (px, py, pz))
            # inflated by 1e-12 (relative) so float rounding can never make it undercut the kernel
            bound = bx[:, None, None] * by[None, :, None] * bz[None, None, :] * (1.0 + 1e-12)
            parts.append(np.log1p(-bound).ravel())
            start.append(start[-1] + nb**3)
        bwidth.append(nb)
        dlo.append(lo)
    return BlockBounds(
        log1m=np.concatenate(parts),
        start=np.asarray(start, dtype=np.int64),
        bwidth=np.asarray(bwidth, dtype=np.int64),
        dlo=np.asarray(dlo, dtype=np.int64),
    )
