"""Simulated data for the statistical property tests (tests/test_properties.py).

Small grids keep the Monte Carlo null cheap; foci are drawn from in-mask voxel
centres so that placement (mm -> voxel) is exact and the observed data follow
the very distribution the Monte Carlo null relocates foci from.
"""

from __future__ import annotations

import numpy as np

from alemap.data import ExperimentSet, FocusOrigin
from alemap.space.grid import Grid

__all__ = ["centred_affine", "ellipsoid_grid", "sphere_grid", "box_grid", "records", "null_experiments"]


def centred_affine(shape) -> np.ndarray:
    """2 mm isotropic affine whose grid centre sits at 0 mm (voxel centres on even mm when the shape is odd)."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -2.0 * (np.asarray(shape) // 2)
    return affine


def ellipsoid_grid(shape, radii, name: str = "ellipsoid") -> Grid:
    """Grid whose mask is the ellipsoid with semi-axes ``radii`` (voxels) about the grid centre."""
    shape = tuple(int(s) for s in shape)
    centre = (np.asarray(shape) - 1) / 2.0
    idx = np.indices(shape).astype(np.float64)
    r = np.asarray(radii, dtype=np.float64)[:, None, None, None]
    mask = (((idx - centre[:, None, None, None]) / r) ** 2).sum(axis=0) <= 1.0
    return Grid(shape, centred_affine(shape), mask, name)


def sphere_grid(n: int = 30, radius: float = 13.5) -> Grid:
    """``n``^3 grid with a spherical mask (n=30, r=13.5: 10,144 voxels, 2 mm)."""
    return ellipsoid_grid((n, n, n), (radius,) * 3, "sphere")


def box_grid(shape) -> Grid:
    """Grid whose mask is every voxel: foci and relocations reach all six faces."""
    shape = tuple(int(s) for s in shape)
    return Grid(shape, centred_affine(shape), np.ones(shape, dtype=bool), "box")


def records(grid: Grid, ijk_per_experiment, n_subjects, prefix: str = "exp") -> list[dict]:
    """``ExperimentSet.from_records`` input with foci at the given voxel centres."""
    out = []
    for e, (ijk, n) in enumerate(zip(ijk_per_experiment, n_subjects)):
        xyz = grid.ijk_to_mm(np.asarray(ijk).reshape(-1, 3))
        out.append(
            {
                "name": f"{prefix}{e:03d}",
                "study": f"study{e:03d}",
                "n_subjects": int(n),
                "space": "MNI",
                "xyz": xyz,
                "origins": [FocusOrigin("sim", 0)] * len(xyz),
            }
        )
    return out


def null_records(
    rng: np.random.Generator,
    grid: Grid,
    n_experiments: int,
    foci=(5, 10),
    subjects=(10, 30),
    prefix: str = "exp",
) -> list[dict]:
    """Experiments whose foci are drawn uniformly (with replacement) from in-mask voxels."""
    mask_ijk = grid.mask_ijk
    counts = rng.integers(foci[0], foci[1] + 1, size=n_experiments)
    n_subjects = rng.integers(subjects[0], subjects[1] + 1, size=n_experiments)
    ijk = [mask_ijk[rng.integers(0, len(mask_ijk), size=k)] for k in counts]
    return records(grid, ijk, n_subjects, prefix)


def null_experiments(rng: np.random.Generator, grid: Grid, n_experiments: int, **kwargs) -> ExperimentSet:
    """:func:`null_records` as an :class:`ExperimentSet`."""
    return ExperimentSet.from_records(null_records(rng, grid, n_experiments, **kwargs))
