#!/usr/bin/env python
"""Regenerate the pinned NiMARE ``ALESubtraction`` reference in ``tests/data/nimare/``.

NiMARE (pip-installed; written against 0.22.1) is the oracle for alemap's
``subtraction`` contrast (:func:`alemap.designs.contrast.run_contrast`). Data: a
deterministic subset of the NeuroStore n-back vs flanker studyset
(``/work/shared/data/nback-vs-flanker``):

* group 1 = the first ``--per-group`` (25) ``n-back`` analyses, group 2 = the
  first 25 ``flanker`` analyses (label: ``metadata.comparison_task``), each in
  order of sorted analysis id, among analyses whose foci are all in MNI space;
* every experiment gets the same sample size (``--subjects``, 20): the
  studyset has almost none, and NiMARE needs one (``metadata.sample_sizes``);
* foci whose voxel (NiMARE's ``mm2vox``: ``round(inv(affine) @ xyz)``) lies
  outside the 91x109x91 grid are left out before either tool sees them (alemap
  drops them, NiMARE clips their kernel; see ``foci_outside_grid``).

Then::

    dset_g = nimare.dataset.Dataset(<dict>, target="ale_2mm", mask=MASK)     # g = 1, 2
    est = nimare.meta.cbma.ale.ALESubtraction(n_iters=N, random_state=SEED,
                                              mask=MASK, n_cores=1)
    res = est.fit(dset_1, dset_2)
    res.get_map("stat_desc-group1MinusGroup2" | "p_desc-..." | "z_desc-...")

and, for the timing comparison, alemap's own contrast on the same input
(``ALE(iterations=0, placement="nimare")`` per group, then
``run_contrast(..., method="subtraction", permutations=N, seed=1)``).
Writes ``<out>/subtraction_nback_flanker.npz`` (np.savez_compressed; keys in
``validation/nimare/README.md``) and prints a JSON summary.

Usage::

    python validation/nimare/regenerate_subtraction.py [--iterations 1000] [--seed 20240601]
        [--per-group 25] [--subjects 20] [--out tests/data/nimare]
    python validation/nimare/regenerate_subtraction.py --full-alemap 1000   # only time alemap on
        # the full 500 vs 406 set (MNI + TAL foci, default_subjects=20); writes nothing
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import sys
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
MASK_PATH = REPO / "src" / "alemap" / "resources" / "MNI152_2mm_brainmask.nii.gz"
STUDYSET = Path(os.environ.get("ALEMAP_NBACK_FLANKER", "/work/shared/data/nback-vs-flanker"))
GROUPS = ("n-back", "flanker")  # group 1 (A), group 2 (B)
LABEL_COLUMN = "comparison_task"
DEFAULT_SEED = 20240601
ALEMAP_SEED = 1
OUT_NAME = "subtraction_nback_flanker.npz"
MAP_KEYS = {
    "stat": "stat_desc-group1MinusGroup2",
    "p": "p_desc-group1MinusGroup2",
    "z": "z_desc-group1MinusGroup2",
}


# ------------------------------------------------------------------ input
def select_subset(folder: Path, per_group: int, affine: np.ndarray, shape) -> dict:
    """The deterministic subset: ids, groups, foci (in-grid MNI), in NiMARE's id order per group."""
    meta = pd.read_parquet(folder / "metadata.parquet", columns=["id", LABEL_COLUMN])
    coords = pd.read_parquet(
        folder / "coordinates.parquet", columns=["id", "study_id", "contrast_id", "x", "y", "z", "space"]
    )
    all_mni = coords.groupby("id")["space"].agg(lambda s: bool((s == "MNI").all()))
    label = meta.set_index("id")[LABEL_COLUMN]
    ids, groups = [], []
    for g, name in enumerate(GROUPS):
        chosen = sorted(i for i in label.index[label == name] if all_mni.get(i, False))[:per_group]
        if len(chosen) < per_group:
            raise RuntimeError(f"only {len(chosen)} MNI-only {name} analyses")
        ids += chosen
        groups += [g] * len(chosen)
    sub = coords[coords["id"].isin(ids)].copy()
    # NiMARE sorts its coordinates table by id; foci keep table order within an analysis
    sub["_order"] = np.arange(len(sub))
    sub = sub.sort_values(["id", "_order"], kind="stable")
    xyz = sub[["x", "y", "z"]].to_numpy(dtype=np.float64)
    ijk = np.round(nib.affines.apply_affine(np.linalg.inv(affine), xyz)).astype(np.int64)  # nimare.utils.mm2vox
    inside = np.all((ijk >= 0) & (ijk < np.array(shape)), axis=1)
    sub = sub[inside]
    order = {e: k for k, e in enumerate(ids)}
    group_of = dict(zip(ids, groups))
    # experiment order: group 1 ids sorted, then group 2 ids sorted (ids are sorted within a group already)
    exp_ids = np.array(ids)
    exp_index = sub["id"].map(order).to_numpy(np.int32)
    sort = np.argsort(exp_index, kind="stable")
    sub = sub.iloc[sort]
    missing = sorted(set(ids) - set(sub["id"]))
    if missing:
        raise RuntimeError(f"analyses left without in-grid foci: {missing}")
    return {
        "exp_ids": exp_ids,
        "exp_group": np.array([group_of[e] for e in exp_ids], dtype=np.int8),
        "study_ids": np.array([sub.loc[sub["id"] == e, "study_id"].iloc[0] for e in exp_ids]),
        "contrast_ids": np.array([sub.loc[sub["id"] == e, "contrast_id"].iloc[0] for e in exp_ids]),
        "xyz": sub[["x", "y", "z"]].to_numpy(dtype=np.float64),
        "exp_index": sub["id"].map(order).to_numpy(np.int32),
        "foci_outside_grid": int((~inside).sum()),
    }


def nimare_dataset(subset: dict, group: int, subjects: int, mask_img):
    from nimare.dataset import Dataset

    data: dict = {}
    for e, eid in enumerate(subset["exp_ids"]):
        if subset["exp_group"][e] != group:
            continue
        foci = subset["xyz"][subset["exp_index"] == e]
        study, contrast = subset["study_ids"][e], subset["contrast_ids"][e]
        if f"{study}-{contrast}" != eid:
            raise RuntimeError(f"id {eid} is not study-contrast")
        data.setdefault(str(study), {"contrasts": {}})["contrasts"][str(contrast)] = {
            "coords": {"space": "MNI", "x": foci[:, 0].tolist(), "y": foci[:, 1].tolist(), "z": foci[:, 2].tolist()},
            "metadata": {"sample_sizes": [int(subjects)]},
        }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Dataset is deprecated in favour of Studyset
        return Dataset(data, target="ale_2mm", mask=mask_img)


def alemap_sets(subset: dict, subjects: int):
    """The two groups as alemap ExperimentSets (what tests/test_parity_subtraction.py rebuilds)."""
    from alemap.data import ExperimentSet, FocusOrigin

    sets = []
    for g in (0, 1):
        records = []
        for e in np.flatnonzero(subset["exp_group"] == g):
            foci = subset["xyz"][subset["exp_index"] == e]
            records.append({"name": str(subset["exp_ids"][e]), "study": str(subset["study_ids"][e]),
                            "n_subjects": int(subjects), "space": "MNI", "xyz": foci,
                            "origins": [FocusOrigin(OUT_NAME, 0)] * len(foci)})
        sets.append(ExperimentSet.from_records(records))
    return sets


# ------------------------------------------------------------------ runs
def _float32_permutation(self, i_iter, ma_store, seed):
    """``ALESubtraction._run_permutation`` with the group ALE maps rounded to float32.

    NiMARE 0.22.1 compares float64 permutation differences with the float32
    observed difference (``group1_stat - group2_stat``, both float32), so a
    reassignment that reproduces the observed difference counts in one tail
    only, at random. This matters where few experiments reach a voxel (ties are
    then common) and can give p = 1/n where the permutation p is ~0.6. Computing
    the permuted difference the way the observed one is computed (float32 ALE
    maps, float32 difference) restores the ties; everything else is NiMARE's.
    """
    group1_idx, group2_idx = self._permute_pairwise_group_indices(
        n_total=ma_store.n_total, n_group1=ma_store.n_group1, seed=seed
    )
    g1 = ma_store.compute_partition_summarystat(group1_idx).astype(np.float32)
    g2 = ma_store.compute_partition_summarystat(group2_idx).astype(np.float32)
    return i_iter, g1 - g2


def run_nimare(subset, subjects, n_iters, seed, mask_img, float32_ties=False):
    import nimare
    from nimare.meta.cbma.ale import ALESubtraction

    d1 = nimare_dataset(subset, 0, subjects, mask_img)
    d2 = nimare_dataset(subset, 1, subjects, mask_img)
    est = ALESubtraction(n_iters=n_iters, random_state=seed, mask=mask_img, n_cores=1)
    if float32_ties:
        est._run_permutation = _float32_permutation.__get__(est)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = est.fit(d1, d2)
    seconds = time.perf_counter() - t0
    maps = {k: np.asarray(res.get_map(v, return_type="array")) for k, v in MAP_KEYS.items()}
    # the estimator's own inputs: ids, sample sizes and voxels exactly as used
    placed = []
    for key in ("coordinates1", "coordinates2"):
        c = est.inputs_[key]
        placed.append(c)
    ids_used = np.concatenate([np.unique(c["id"].to_numpy()) for c in placed])
    if not np.array_equal(ids_used, subset["exp_ids"]):
        raise RuntimeError("NiMARE's experiment ids differ from the subset")
    sizes = np.concatenate([c.groupby("id")["sample_size"].mean().to_numpy() for c in placed])
    if not np.all(sizes == subjects):
        raise RuntimeError(f"NiMARE used sample sizes {np.unique(sizes)}")
    ijk = np.concatenate([c[["i", "j", "k"]].to_numpy() for c in placed]).astype(np.int32)
    order = np.concatenate([c["id"].to_numpy() for c in placed])
    if not np.array_equal(order, subset["exp_ids"][subset["exp_index"]]):
        raise RuntimeError("NiMARE reordered the experiments")
    if all({"x", "y", "z"} <= set(c.columns) for c in placed):
        xyz_used = np.concatenate([c[["x", "y", "z"]].to_numpy(dtype=np.float64) for c in placed])
        if not np.array_equal(xyz_used, subset["xyz"]):
            raise RuntimeError("NiMARE reordered the foci within an experiment")
    expected = np.round(nib.affines.apply_affine(np.linalg.inv(mask_img.affine), subset["xyz"])).astype(np.int32)
    if not np.array_equal(ijk, expected):
        raise RuntimeError("NiMARE's ijk differ from mm2vox(xyz, mask affine)")
    # masker order must be the C order of the mask
    mask_bool = np.asarray(mask_img.dataobj) > 0
    probe = np.zeros(mask_bool.shape, dtype=np.float32)
    probe[mask_bool] = np.arange(mask_bool.sum(), dtype=np.float32)
    back = np.asarray(est.masker.transform(nib.Nifti1Image(probe, mask_img.affine))).ravel()
    if not np.array_equal(back, np.arange(mask_bool.sum(), dtype=np.float32)):
        raise RuntimeError("masker ordering is not C order")
    return maps, ijk, seconds, nimare.__version__


def run_alemap(subset, subjects, n_iters, seed=ALEMAP_SEED):
    from alemap import ALE
    from alemap.designs.contrast import run_contrast

    set_a, set_b = alemap_sets(subset, subjects)
    t0 = time.perf_counter()
    ra = ALE(iterations=0, placement="nimare", quiet=True).fit(set_a)
    rb = ALE(iterations=0, placement="nimare", quiet=True).fit(set_b)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    cr = run_contrast(ra, rb, method="subtraction", permutations=n_iters, seed=seed)
    t_contrast = time.perf_counter() - t0
    return cr, t_fit, t_contrast


def agreement(p_a, z_a, p_n, z_n, n_iters) -> dict:
    """The comparisons tests/test_parity_subtraction.py makes, as numbers (a = alemap, n = reference)."""
    p_a, p_n = np.asarray(p_a, dtype=np.float64), np.asarray(p_n, dtype=np.float64)
    se = np.sqrt(p_n * (1 - p_n) / n_iters) * np.sqrt(2) + 2 / n_iters
    low = p_n < 0.5
    over = np.abs(p_a - p_n)[low] / se[low]
    out = {"voxels_p_below_0.5": int(low.sum()), "p_over_4se": int((over > 4).sum()),
           "p_over_4se_fraction": float((over > 4).mean()), "p_max_se": float(over.max()),
           "p_mean_signed_diff": float((p_a - p_n)[low].mean())}
    for thr in (0.01, 0.05):
        sa, sn = p_a < thr, p_n < thr
        out[f"sig{thr}"] = [int(sa.sum()), int(sn.sum())]
        out[f"dice{thr}"] = float(2 * (sa & sn).sum() / max(1, sa.sum() + sn.sum()))
    both = (p_a < 0.05) & (p_n < 0.05)
    out["sign_disagreements_p05"] = int((np.sign(z_a) != np.sign(z_n))[both].sum())
    return out


def full_alemap(permutations: int) -> int:
    """Time alemap's subtraction on the whole n-back (500) vs flanker (406) set; print JSON."""
    from alemap import ALE
    from alemap.designs.contrast import run_contrast
    from alemap.io import read_neurostore

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = read_neurostore(STUDYSET, default_subjects=20, space_unknown="drop")  # MNI + TAL foci
    t_read = time.perf_counter() - t0
    groups = [s.select([i for i, t in enumerate(s.tags) if t.get("task") == g]) for g in GROUPS]
    t0 = time.perf_counter()
    ra, rb = (ALE(iterations=0, placement="nimare", quiet=True).fit(g) for g in groups)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    cr = run_contrast(ra, rb, method="subtraction", permutations=permutations, seed=ALEMAP_SEED)
    t_contrast = time.perf_counter() - t0
    print(json.dumps({
        "experiments": [g.n_experiments for g in groups], "foci": [g.n_foci for g in groups],
        "fitted_experiments": [ra.experiments.n_experiments, rb.experiments.n_experiments],
        "permutations": permutations, "tested_voxels": cr.params["tested_voxels"],
        "seconds_read": round(t_read, 3), "seconds_fit": round(t_fit, 2), "seconds_contrast": round(t_contrast, 2),
        "seconds_per_permutation": t_contrast / permutations,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "voxels_p_below_0.01": int((cr.maps["p_subtraction"] < 0.01).sum()),
    }, indent=1), flush=True)
    return 0


# ------------------------------------------------------------------ main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=1000, help="ALESubtraction(n_iters=...) and alemap permutations")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="ALESubtraction(random_state=...)")
    ap.add_argument("--per-group", type=int, default=25)
    ap.add_argument("--subjects", type=int, default=20, help="sample size of every experiment")
    ap.add_argument("--out", default=str(REPO / "tests" / "data" / "nimare"))
    ap.add_argument("--full-alemap", type=int, metavar="PERMUTATIONS",
                    help="only time alemap on the full studyset with this many permutations")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    if args.full_alemap:
        return full_alemap(args.full_alemap)

    mask_img = nib.load(str(MASK_PATH))
    subset = select_subset(STUDYSET, args.per_group, mask_img.affine, mask_img.shape)
    n = args.iterations
    stock, ijk, t_stock, version = run_nimare(subset, args.subjects, n, args.seed, mask_img)
    fixed, ijk2, t_fixed, _ = run_nimare(subset, args.subjects, n, args.seed, mask_img, float32_ties=True)
    if not (np.array_equal(stock["stat"], fixed["stat"]) and np.array_equal(ijk, ijk2)):
        raise RuntimeError("the float32-ties run changed more than the null")
    cr, t_fit, t_contrast = run_alemap(subset, args.subjects, n)
    # Monte Carlo baseline: alemap against itself with another seed
    cr2, _, _ = run_alemap(subset, args.subjects, n, seed=ALEMAP_SEED + 1)
    print(f"nimare {version}, numpy {np.__version__}, python {platform.python_version()}", flush=True)

    f32 = np.float32
    out = dict(
        nimare_version=np.array(version),
        numpy_version=np.array(np.__version__),
        source=np.array(str(STUDYSET)),
        selection=np.array(
            f"first {args.per_group} analyses per {LABEL_COLUMN} label in sorted-id order among analyses whose "
            "foci are all MNI; foci outside the grid left out"
        ),
        group_labels=np.array(GROUPS),
        exp_ids=subset["exp_ids"].astype(str),
        exp_group=subset["exp_group"],
        study_ids=subset["study_ids"].astype(str),
        sample_sizes=np.full(len(subset["exp_ids"]), args.subjects, dtype=np.int32),
        xyz=subset["xyz"],
        exp_index=subset["exp_index"],
        ijk=ijk,
        foci_outside_grid=np.int64(subset["foci_outside_grid"]),
        n_mask_voxels=np.int64(stock["stat"].size),
        stat=stock["stat"].astype(f32),
        p=fixed["p"].astype(f32),
        z=fixed["z"].astype(f32),
        p_stock=stock["p"].astype(f32),
        z_stock=stock["z"].astype(f32),
        map_dtype=np.array(str(stock["stat"].dtype)),
        n_iters=np.int64(n),
        random_state=np.int64(args.seed),
        alemap_seed=np.int64(ALEMAP_SEED),
        n_cores=np.int64(1),
        seconds_nimare=np.float64(t_stock),
        seconds_nimare_float32_ties=np.float64(t_fixed),
        seconds_alemap_fit=np.float64(t_fit),
        seconds_alemap_contrast=np.float64(t_contrast),
    )
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / OUT_NAME
    np.savez_compressed(path, **out)
    pa, za = cr.maps["p_subtraction"], cr.maps["z_subtraction"]
    summary = {
        "experiments": [int((subset["exp_group"] == g).sum()) for g in (0, 1)],
        "foci": [int(np.isin(subset["exp_index"], np.flatnonzero(subset["exp_group"] == g)).sum()) for g in (0, 1)],
        "foci_outside_grid": subset["foci_outside_grid"],
        "n_iters": n,
        "random_state": args.seed,
        "nonzero_stat_voxels": int((stock["stat"] != 0).sum()),
        "alemap_tested_voxels": cr.params["tested_voxels"],
        "max_abs_stat_diff": float(np.abs(cr.maps["diff"] - stock["stat"]).max()),
        "seconds_nimare": round(t_stock, 2),
        "seconds_nimare_float32_ties": round(t_fixed, 2),
        "seconds_alemap_fit": round(t_fit, 2),
        "seconds_alemap_contrast": round(t_contrast, 2),
        "speedup_alemap_contrast": round(t_stock / t_contrast, 2),
        "speedup_alemap_fit_and_contrast": round(t_stock / (t_fit + t_contrast), 2),
        "alemap_vs_nimare_float32_ties": agreement(pa, za, fixed["p"], fixed["z"], n),
        "alemap_vs_nimare_stock": agreement(pa, za, stock["p"], stock["z"], n),
        "alemap_seed1_vs_seed2": agreement(pa, za, cr2.maps["p_subtraction"], cr2.maps["z_subtraction"], n),
        "file": str(path),
        "file_bytes": path.stat().st_size,
    }
    print(json.dumps(summary, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
