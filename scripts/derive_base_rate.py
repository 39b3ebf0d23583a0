"""Derive the shipped base-rate map from the Neurosynth v7 coordinate table.

Usage::

    python scripts/derive_base_rate.py [--shared ../shared] \
        [--out src/alemap/resources/base_rate/neurosynth_v7.npz]

Every focus of every Neurosynth v7 study with a known space (MNI, or
Talairach converted with Lancaster 2007 ``other``) is placed on the shipped
MNI152 2 mm grid (nearest voxel) and convolved with the ALE kernel of 15
subjects (Neurosynth has no sample sizes; 15 is the same documented default as
the demo data). The kernels are summed (SCALE / C-SALE) and the result is kept
over the 228,483 in-mask voxels as float32, unnormalised; alemap normalises it
over each analysis mask. Studies of unknown space and foci outside the grid
are dropped and counted.

The output is a database derived from Neurosynth (ODbL 1.0): it ships with
that licence (``src/alemap/resources/demo/LICENSE-ODbL.txt``). Cite Yarkoni T
et al. (2011) Nature Methods 8:665-670.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from alemap.space import load_mni152_2mm, place_foci, tal2mni
from alemap.statistics.base_rate import kernel_density

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SUBJECTS = 15


def derive(shared: Path) -> dict:
    """Arrays of the base-rate file."""
    ns = shared / "data" / "neurosynth-v7"
    coords = pd.read_csv(ns / "data-neurosynth_version-7_coordinates.tsv.gz", sep="\t", usecols=["id", "x", "y", "z"])
    meta = pd.read_csv(ns / "data-neurosynth_version-7_metadata.tsv.gz", sep="\t", usecols=["id", "space"])
    coords = coords.merge(meta, on="id", how="left")
    known = coords["space"].isin(["MNI", "TAL"])
    n_unknown = int((~known).sum())
    coords = coords[known]
    xyz = coords[["x", "y", "z"]].to_numpy(dtype=np.float64)
    tal = coords["space"].to_numpy() == "TAL"
    xyz[tal] = tal2mni(xyz[tal], "other")
    grid = load_mni152_2mm()
    ijk = place_foci(grid, xyz, "nearest")
    inside = grid.in_grid(ijk)
    density = kernel_density(ijk[inside], np.full(int(inside.sum()), DEFAULT_SUBJECTS), grid.shape)
    values = density.ravel()[grid.mask_flat].astype(np.float32)
    return {
        "values": values,
        "mask_sha256": np.array(grid.digest()),
        "n_studies": np.int64(coords["id"].nunique()),
        "n_foci": np.int64(inside.sum()),
        "n_foci_unknown_space": np.int64(n_unknown),
        "n_foci_outside_grid": np.int64((~inside).sum()),
        "kernel_subjects": np.int64(DEFAULT_SUBJECTS),
        "source": np.array("Neurosynth v7 (neurosynth/neurosynth-data 209c33cd), ODbL 1.0"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--out", type=Path, default=ROOT / "src" / "alemap" / "resources" / "base_rate" / "neurosynth_v7.npz")
    args = ap.parse_args()
    arrays = derive(args.shared)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    print(f"{args.out}: {int(arrays['n_foci'])} foci of {int(arrays['n_studies'])} studies; "
          f"sha256 {hashlib.sha256(args.out.read_bytes()).hexdigest()[:16]}")


if __name__ == "__main__":
    main()
