"""Cerebellum-specific ALE (C-SALE) and whole-brain SCALE.

Magielse N, et al. (2025) Neurosci Biobehav Rev 179:106418 (C-SALE);
Langner R, et al. (2014) NeuroImage 99:6-14 (SCALE).

Standard ALE asks whether foci converge more than if they were anywhere in the
brain with equal probability. The cerebellum is reported unevenly (superior
lobules far more often), so C-SALE asks whether foci converge more than the
literature's base rate predicts:

1. The analysis mask is the cerebellum (AAL2 cerebellar regions and vermis,
   from the optional atlas data) dilated by ``dilate_mm`` (6 mm, as the C-SALE
   scripts' "dilated-6mm" mask), within the brain mask. ``region:
   whole_brain`` uses the whole brain mask instead (SCALE).
2. Only foci placed inside the analysis mask are kept (C-SALE filters foci
   the same way); experiments left without foci are dropped and reported.
3. The null relocates every focus to an analysis-mask voxel drawn with
   probability proportional to the base-rate map (the summed kernels of a
   reference database; alemap ships one from Neurosynth v7).
4. Each voxel is tested against its own null (voxel-wise p, floored at 1/n);
   voxels with p < ``p`` (0.001) in clusters of at least ``k`` voxels (50,
   face connectivity) inside the undilated region are significant.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd
from scipy import ndimage

from alemap._progress import progress_bar
from alemap.data.experiment_set import ExperimentSet
from alemap.inference.backends import backend_label, resolve_backend
from alemap.inference.voxelwise import voxelwise_counts
from alemap.kernels.gaussian import kernel_cubes
from alemap.reporting.cluster_table import map_clusters
from alemap.space.grid import Grid
from alemap.statistics.ale import ale_from_ma, ma_maps
from alemap.statistics.base_rate import base_rate_map
from alemap.statistics.pz import p_to_z

__all__ = ["CSALEResult", "run_csale", "load_base_rate", "REGIONS"]

REGIONS = ("cerebellum", "whole_brain")
DEFAULTS = {"iterations": 10000, "p": 0.001, "k": 50, "dilate_mm": 6.0, "region": "cerebellum",
            "base_rate": "neurosynth", "min_experiments": 15}


@dataclass(frozen=True, eq=False)
class CSALEResult:
    """Maps over the grid's in-mask voxels (0 outside the region), table, notes."""

    maps: dict
    clusters: pd.DataFrame
    params: dict
    notes: list
    excluded_experiments: list
    n_foci: int
    n_experiments: int
    backend: str = "cpu-numba"  # the engine that ran the null (backends.backend_label)


def load_base_rate(name: str, grid: Grid) -> np.ndarray:
    """Unnormalised base-rate density over the grid's in-mask voxels."""
    if name != "neurosynth":
        raise ValueError(f"unknown base rate {name!r}; the shipped one is 'neurosynth'")
    ref = resources.files("alemap.resources.base_rate").joinpath("neurosynth_v7.npz")
    with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as z:
        if str(z["mask_sha256"]) != grid.digest():
            raise ValueError("The shipped base-rate map is defined on the MNI152 2 mm mask; "
                             "C-SALE with another mask needs a base-rate map on that mask.")
        return z["values"].astype(np.float64)


def _region(grid: Grid, region: str, dilate_mm: float) -> tuple[np.ndarray, np.ndarray]:
    if region == "whole_brain":
        return grid.mask.copy(), grid.mask.copy()
    from alemap.space.atlases import cerebellum_mask

    core = grid.to_volume(cerebellum_mask(grid).astype(np.float32)) > 0
    n_iter = int(round(dilate_mm / float(grid.voxel_size[0])))
    dilated = ndimage.binary_dilation(core, iterations=n_iter) if n_iter > 0 else core
    return core, dilated & grid.mask


def run_csale(placed, grid: Grid, *, iterations=None, seed=0, p=None, k=None, dilate_mm=None, region=None,
              base_rate=None, jobs=1, quiet=False, backend="auto") -> CSALEResult:
    """Run C-SALE (or SCALE) on placed experiments (``ALE.place`` output).

    ``backend`` (``"auto"``, ``"cpu"``, ``"gpu"``) runs the voxel-wise null, as for
    :class:`alemap.ALE`; every backend gives the same counts for the same seed."""
    prm = dict(DEFAULTS)
    prm.update({k_: v for k_, v in dict(iterations=iterations, p=p, k=k, dilate_mm=dilate_mm, region=region,
                                          base_rate=base_rate).items() if v is not None})
    if prm["region"] not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {prm['region']!r}")
    engine = resolve_backend(backend)
    core, amask = _region(grid, prm["region"], float(prm["dilate_mm"]))
    exps, ijk, dropped = _filter_foci(placed.experiments, placed.ijk, amask)
    notes = []
    if exps.n_experiments < prm["min_experiments"]:
        notes.append(f"only {exps.n_experiments} experiments have foci in the analysis mask; C-SALE recommends "
                     f"at least {prm['min_experiments']}.")
    if 1.0 / int(prm["iterations"]) >= prm["p"]:
        notes.append(f"with {prm['iterations']} iterations the smallest attainable p is "
                     f"{1.0 / int(prm['iterations']):.2g}, not below p = {prm['p']}: no voxel can be significant; "
                     "use more iterations (10,000 in the C-SALE paper).")
    cubes = kernel_cubes(exps.n_subjects, float(grid.voxel_size[0]))
    coe = cubes.index(exps.n_subjects)
    ale = ale_from_ma(ma_maps(ijk, exps.offsets, coe, cubes, amask))
    a_flat = np.flatnonzero(amask.ravel())
    density = np.zeros(grid.mask.size)
    density[grid.mask_flat] = load_base_rate(prm["base_rate"], grid)
    cdf = np.cumsum(base_rate_map(density[a_flat]))
    a_ijk = np.column_stack(np.unravel_index(a_flat, grid.shape)).astype(np.int64)
    n = int(prm["iterations"])
    with progress_bar(n, "C-SALE null", quiet) as advance:
        counts = voxelwise_counts(draw_ijk=a_ijk, cdf=cdf, test_flat=a_flat, observed_ale=ale,
                                  exp_offsets=exps.offsets, cube_of_exp=coe, cubes=cubes, shape=grid.shape,
                                  n_iterations=n, seed=seed, jobs=jobs, progress=advance, backend=engine)
    maps = _maps(grid, a_flat, core, ale, counts, n, prm, density)
    labels, table = map_clusters(maps["z_csale"], grid, 6, prm["k"] * grid.voxel_volume_mm3)
    maps["z_csale"] = np.where(labels > 0, maps["z_csale"], 0.0)
    params = dict(prm, seed=seed, analysis_voxels=int(a_flat.size), region_voxels=int(core.sum()))
    return CSALEResult(maps, table, params, notes, dropped, exps.n_foci, exps.n_experiments, backend_label(engine))


def _maps(grid, a_flat, core, ale, counts, n, prm, density):
    pos = np.searchsorted(grid.mask_flat, a_flat)
    in_core = core.ravel()[a_flat]
    p = np.ones(grid.n_voxels)
    p[pos] = np.maximum(counts, 1) / n
    z = p_to_z(p)
    out = {"ale": np.zeros(grid.n_voxels), "p": p, "z": z}
    out["ale"][pos] = ale
    keep = np.zeros(grid.n_voxels, dtype=bool)
    keep[pos[in_core]] = True
    out["z"] = np.where(keep, z, 0.0)
    out["p"] = np.where(keep, p, 1.0)
    out["ale"] = np.where(keep, out["ale"], 0.0)
    out["z_csale"] = np.where(keep & (p < prm["p"]), z, 0.0)
    br = np.zeros(grid.n_voxels)
    br[pos] = base_rate_map(density[a_flat])
    out["base_rate"] = br
    return out


def _filter_foci(experiments: ExperimentSet, ijk: np.ndarray, amask: np.ndarray):
    inside = amask[ijk[:, 0], ijk[:, 1], ijk[:, 2]] if len(ijk) else np.zeros(0, dtype=bool)
    kept = experiments.drop_foci(inside)
    ijk = ijk[inside]
    nonempty = kept.foci_counts > 0
    dropped = [{"experiment": kept.names[e], "reason": "no focus inside the analysis mask"}
               for e in np.flatnonzero(~nonempty)]
    return kept.select(np.flatnonzero(nonempty)), ijk, dropped
