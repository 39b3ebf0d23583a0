"""The result of an ALE fit, and how it is written to a folder.

Files written by :meth:`ALEResult.save` (names are a contract other tools rely on):

=====================  =====================================================
``ale.nii.gz``         ALE values
``p.nii.gz``           voxel-wise p from the analytic null
``z.nii.gz``           z of ``p`` (one-tailed)
``z_fdr.nii.gz``       z where p passes FDR (BH, ``fdr_q``), 0 elsewhere
``z_vfwe.nii.gz``      z where voxel-level FWE p < alpha, 0 elsewhere
``z_cfwe.nii.gz``      z inside clusters with cluster-level FWE p < alpha
``clusters.nii.gz``    significant cluster numbers (as in ``clusters.tsv``)
``clusters.tsv``       one row per significant cluster
``null.npz``           per-iteration maxima: ``max_ale``, ``max_cluster_size``,
                       ``max_cluster_mass``, with the thresholds used
``contributions.tsv``  per cluster and experiment: share of ALE, jackknife,
                       foci inside (:mod:`alemap.reporting.robustness`)
``robustness.tsv``     per cluster: experiments, top share, leave-one-out,
                       flag for clusters driven by one or two experiments
``provenance.json``    inputs' hashes, parameters, seed, versions, exclusions
=====================  =====================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from alemap.data.experiment_set import ExperimentSet
from alemap.inference.montecarlo import NullMaxima
from alemap.io.atomic import write_json, write_nifti, write_npz, write_text
from alemap.space.grid import Grid
from alemap.statistics.null import AnalyticNull

__all__ = ["ALEResult", "MAP_FILES"]

#: map key -> file name
MAP_FILES = {
    "ale": "ale.nii.gz",
    "p": "p.nii.gz",
    "z": "z.nii.gz",
    "z_fdr": "z_fdr.nii.gz",
    "z_vfwe": "z_vfwe.nii.gz",
    "z_cfwe": "z_cfwe.nii.gz",
    "clusters": "clusters.nii.gz",
}


@dataclass(frozen=True, eq=False)
class ALEResult:
    """Maps (in-mask vectors), the cluster table, the nulls and provenance."""

    grid: Grid
    experiments: ExperimentSet
    ijk: np.ndarray
    maps: dict
    clusters: pd.DataFrame
    null_maxima: NullMaxima
    analytic_null: AnalyticNull
    thresholds: dict
    provenance: dict

    def image(self, name: str):
        """NIfTI image of map ``name`` (see :data:`MAP_FILES`)."""
        if name not in self.maps:
            raise KeyError(f"No map {name!r}; available: {sorted(self.maps)}.")
        # p can be far below float32's smallest value (1.4e-45) where convergence is strong
        dtype = np.int16 if name == "clusters" else np.float64 if name.startswith("p") else np.float32
        return self.grid.to_image(self.maps[name], dtype=dtype)

    def save(self, outdir: str | Path) -> Path:
        """Write every output file to ``outdir`` (atomically, file by file)."""
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        for key, fname in MAP_FILES.items():
            if key in self.maps:
                write_nifti(outdir / fname, self.image(key))
        write_text(outdir / "clusters.tsv", self.clusters.to_csv(sep="\t", index=False, float_format="%.6g"))
        m = self.null_maxima
        write_npz(
            outdir / "null.npz",
            max_ale=m.ale,
            max_cluster_size=m.size,
            max_cluster_mass=m.mass,
            cluster_forming_ale=np.float64(self.thresholds["cluster_forming_ale"]),
            seed=np.int64(self.provenance["parameters"]["seed"]),
        )
        if self.null_maxima.n_iterations:
            from alemap.reporting.robustness import robustness_tables

            contrib, robust = robustness_tables(self)
            write_text(outdir / "contributions.tsv", contrib.to_csv(sep="\t", index=False, float_format="%.6g"))
            write_text(outdir / "robustness.tsv", robust.to_csv(sep="\t", index=False, float_format="%.6g"))
        write_json(outdir / "provenance.json", self.provenance)  # last: marks the folder complete
        return outdir
