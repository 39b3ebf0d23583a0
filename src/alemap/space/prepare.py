"""From reported coordinates to voxels of the analysis grid, with a record of every exclusion.

Steps, each reported:

1. Talairach experiments are converted to MNI with Lancaster et al. (2007)
   (variant ``other`` by default, as NiMARE; ``spm`` or ``fsl`` selectable).
2. Foci are placed on voxels (:mod:`alemap.space.placement`).
3. A focus whose voxel lies outside the grid's bounding box is excluded: the
   template cannot represent it. (GingerALE also removes foci outside its mask;
   NiMARE keeps them and clips the kernel.)
4. A focus inside the grid but outside the brain mask is kept by default, as
   NiMARE does: its kernel still reaches in-mask voxels. ``outside_mask="drop"``
   removes it instead, as GingerALE does.
5. An experiment left without foci is excluded.

Nothing is dropped silently: every excluded focus and experiment is listed with
its origin (file and line) and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alemap.data.experiment_set import ExperimentSet
from alemap.space.grid import Grid
from alemap.space.placement import place_foci
from alemap.space.transforms import tal2mni

__all__ = ["PlacedExperiments", "prepare"]

OUTSIDE_MASK = ("keep", "drop")


@dataclass(frozen=True)
class PlacedExperiments:
    """Experiments in MNI mm with their voxel indices on the grid."""

    experiments: ExperimentSet
    ijk: np.ndarray
    excluded_foci: tuple[dict, ...]
    excluded_experiments: tuple[dict, ...]
    n_outside_mask_kept: int


def _to_mni(experiments: ExperimentSet, variant: str) -> ExperimentSet:
    is_tal = np.repeat(np.array([s == "TAL" for s in experiments.spaces], dtype=bool), experiments.foci_counts)
    if not is_tal.any():
        return experiments
    xyz = experiments.xyz.copy()
    xyz[is_tal] = tal2mni(xyz[is_tal], variant)
    return experiments.with_xyz(xyz, ["MNI"] * experiments.n_experiments)


def prepare(
    experiments: ExperimentSet,
    grid: Grid,
    placement: str = "nearest",
    tal2mni_variant: str = "other",
    outside_mask: str = "keep",
) -> PlacedExperiments:
    """Convert, place and screen foci; see the module docstring."""
    if outside_mask not in OUTSIDE_MASK:
        raise ValueError(f"outside_mask must be one of {OUTSIDE_MASK}, got {outside_mask!r}.")
    mni = _to_mni(experiments, tal2mni_variant)
    ijk = place_foci(grid, mni.xyz, placement)
    inside = grid.in_grid(ijk)
    in_mask = np.zeros(len(ijk), dtype=bool)
    if inside.any():
        idx = ijk[inside]
        in_mask[inside] = grid.mask[idx[:, 0], idx[:, 1], idx[:, 2]]
    keep = inside & (in_mask | (outside_mask == "keep"))
    exp_of = mni.experiment_of_focus
    excluded = []
    for f in np.flatnonzero(~keep):
        reason = (
            "outside the template's bounding box"
            if not inside[f]
            else "outside the brain mask (outside_mask='drop')"
        )
        excluded.append(
            {
                "experiment": mni.names[exp_of[f]],
                "origin": str(mni.origins[f]),
                "x": float(experiments.xyz[f, 0]),
                "y": float(experiments.xyz[f, 1]),
                "z": float(experiments.xyz[f, 2]),
                "space": experiments.spaces[exp_of[f]],
                "reason": reason,
            }
        )
    kept = mni.drop_foci(keep)
    ijk = ijk[keep]
    nonempty = kept.foci_counts > 0
    dropped_exps = [
        {"experiment": kept.names[e], "reason": "no focus left inside the template"}
        for e in np.flatnonzero(~nonempty)
    ]
    if dropped_exps:
        kept = kept.select(np.flatnonzero(nonempty))
    return PlacedExperiments(
        experiments=kept,
        ijk=np.ascontiguousarray(ijk, dtype=np.int64),
        excluded_foci=tuple(excluded),
        excluded_experiments=tuple(dropped_exps),
        n_outside_mask_kept=int((inside & ~in_mask & keep).sum()),
    )
