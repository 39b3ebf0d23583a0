#!/usr/bin/env python
"""Regenerate the pinned NiMARE reference values in ``tests/data/nimare/``.

NiMARE (pip-installed; written against 0.22.1) is used as an oracle. For each of
two real data sets this script runs

    dset = nimare.dataset.Dataset(<json>, target="ale_2mm", mask=MASK)        # pain
    dset = nimare.dataset.Dataset(nimare.io.convert_sleuth_to_dict(<txt>),
                                  target="ale_2mm", mask=MASK)                 # finger
    est  = nimare.meta.cbma.ale.ALE(null_method="approximate", mask=MASK,
                                    random_state=SEED)
    res  = est.fit(dset)
    corr = nimare.correct.FWECorrector(method="montecarlo", voxel_thresh=0.001,
                                       n_iters=ITER, n_cores=1)
    cres = corr.transform(res)

and writes ``<out>/<name>.npz`` (np.savez_compressed). ``MASK`` is
``src/alemap/resources/MNI152_2mm_brainmask.nii.gz`` (byte-for-byte the same voxels
and affine as NiMARE's ``ale_2mm`` template; checked at run time).

Usage::

    python validation/nimare/regenerate.py [--iterations N] [--out tests/data/nimare]
                                           [--seed S] [--only pain|finger]

See ``validation/nimare/README.md`` for the list of keys and what they mean.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[2]
MASK_PATH = REPO / "src" / "alemap" / "resources" / "MNI152_2mm_brainmask.nii.gz"
DATA = Path("/work/shared/data")
PAIN_JSON = DATA / "nidm-pain" / "nidm_pain_dset.json"
FINGER_TXT = DATA / "eickhoff2009-finger-tapping" / "EickhoffHBM09.txt"

DEFAULT_SEED = 20240601
N_RAND_HEAD = 5  # number of leading FWE iterations whose random voxel draws are stored

KEY_VFWE = "values_level-voxel_corr-fwe_method-montecarlo"
KEY_CSIZE = "values_desc-size_level-cluster_corr-fwe_method-montecarlo"
KEY_CMASS = "values_desc-mass_level-cluster_corr-fwe_method-montecarlo"
KEY_BINS = "histogram_bins"
KEY_APPROX = "histweights_corr-none_method-approximate"


def _env_paths():
    """Allow overriding the data locations by environment variable."""
    pain = Path(os.environ.get("ALEMAP_PAIN_JSON", PAIN_JSON))
    finger = Path(os.environ.get("ALEMAP_FINGER_TXT", FINGER_TXT))
    return pain, finger


def load_dataset(name, mask_img):
    from nimare.dataset import Dataset
    from nimare.io import convert_sleuth_to_dict

    pain, finger = _env_paths()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Dataset is deprecated in favour of Studyset
        if name == "pain":
            dset = Dataset(str(pain), target="ale_2mm", mask=mask_img)
            source = str(pain)
        elif name == "finger":
            # identical to nimare.io.convert_sleuth_to_dataset(txt, target="ale_2mm"),
            # plus the explicit mask
            dset = Dataset(convert_sleuth_to_dict(str(finger)), target="ale_2mm", mask=mask_img)
            source = str(finger)
        else:
            raise ValueError(name)
    return dset, source


def check_mask(mask_img):
    from nimare.utils import get_template

    tmpl = get_template("ale_2mm", mask="brain")
    same = np.array_equal(
        np.asarray(mask_img.dataobj) > 0, np.asarray(tmpl.dataobj) > 0
    ) and np.allclose(mask_img.affine, tmpl.affine)
    if not same:
        raise RuntimeError("mask differs from NiMARE's ale_2mm template")
    return True


def run_one(name, mask_img, n_iters, seed, out_dir):
    import nimare
    from nimare.correct import FWECorrector
    from nimare.meta.cbma.ale import ALE
    from nimare.utils import _check_random_state, _mask_coverage_to_null_ijk

    mask_bool = np.asarray(mask_img.dataobj) > 0
    shape = mask_bool.shape
    mask_index = np.flatnonzero(mask_bool.ravel(order="C")).astype(np.int32)

    t0 = time.perf_counter()
    dset, source = load_dataset(name, mask_img)
    t_load = time.perf_counter() - t0

    coords = dset.coordinates.copy()
    xyz = coords[["x", "y", "z"]].to_numpy(dtype=np.float64)
    # NiMARE 0.22 Datasets no longer carry i/j/k columns: the estimator computes them in
    # _preprocess_input with mm2vox(xyz, mask_img.affine) (truncation toward zero).
    from nimare.utils import mm2vox

    ijk = np.asarray(mm2vox(xyz, mask_img.affine)).astype(np.int32)

    # experiments in order of first appearance in the coordinates table
    ids_in_table = coords["id"].to_numpy()
    exp_ids, first = np.unique(ids_in_table, return_index=True)
    exp_ids = exp_ids[np.argsort(first)]
    pos = {e: i for i, e in enumerate(exp_ids)}
    exp_index = np.array([pos[e] for e in ids_in_table], dtype=np.int32)

    # ---- ALE with the approximate (analytic) null --------------------------------------
    est = ALE(null_method="approximate", mask=mask_img, random_state=seed)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = est.fit(dset)
    t_fit = time.perf_counter() - t0

    # sample sizes and ijk exactly as the estimator used them
    est_coords = est.inputs_["coordinates"]
    if not np.array_equal(est_coords["id"].to_numpy(), ids_in_table):
        raise RuntimeError("estimator reordered the coordinates table")
    est_ijk = est_coords[["i", "j", "k"]].to_numpy().astype(np.int32)
    if not np.array_equal(est_ijk, ijk):
        raise RuntimeError("estimator ijk differ from mm2vox(xyz, mask affine)")
    ss = est_coords.groupby("id")["sample_size"].mean()
    sample_sizes_f = ss.loc[exp_ids].to_numpy(dtype=np.float64)
    if not np.all(sample_sizes_f == np.round(sample_sizes_f)):
        raise RuntimeError(f"non-integer sample sizes: {sample_sizes_f}")
    sample_sizes = sample_sizes_f.astype(np.int32)

    ale = np.asarray(res.get_map("stat", return_type="array"))
    p = np.asarray(res.get_map("p", return_type="array"))
    z = np.asarray(res.get_map("z", return_type="array"))
    stat_dtype = str(ale.dtype)
    if ale.shape != (mask_index.size,):
        raise RuntimeError(f"unexpected map shape {ale.shape}")
    # masker order must be C order of the mask
    probe = np.zeros(shape, dtype=np.float32)
    probe.ravel()[mask_index] = np.arange(mask_index.size, dtype=np.float32)
    back = np.asarray(
        est.masker.transform(nib.Nifti1Image(probe, mask_img.affine))
    ).ravel()
    if not np.array_equal(back, np.arange(mask_index.size, dtype=np.float32)):
        raise RuntimeError("masker ordering is not C order")

    hist_bins = np.asarray(est.null_distributions_[KEY_BINS], dtype=np.float64)
    hist_weights = np.asarray(est.null_distributions_[KEY_APPROX], dtype=np.float64)
    cft_ale = float(est._p_to_summarystat(0.001))

    # ---- Monte-Carlo FWE ----------------------------------------------------------------
    corr = FWECorrector(method="montecarlo", voxel_thresh=0.001, n_iters=n_iters, n_cores=1)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cres = corr.transform(res)
    t_fwe = time.perf_counter() - t0
    nd = cres.estimator.null_distributions_
    null_max_ale = np.asarray(nd[KEY_VFWE], dtype=np.float64)
    null_max_size = np.asarray(nd[KEY_CSIZE], dtype=np.float64)
    null_max_mass = np.asarray(nd[KEY_CMASS], dtype=np.float64)
    null_dtype = str(np.asarray(nd[KEY_VFWE]).dtype)

    # Random voxel draws of the first N_RAND_HEAD iterations, rebuilt exactly as
    # CBMAEstimator.correct_fwe_montecarlo draws them, and checked against NiMARE by
    # recomputing iteration 0 through the estimator's own permutation function.
    null_ijk = _mask_coverage_to_null_ijk(est.masker, mask_coverage=est.mask_coverage)
    null_flat = np.ravel_multi_index(tuple(null_ijk.T), shape)
    if not np.array_equal(null_flat, mask_index):
        raise RuntimeError("null_ijk order differs from mask_index")
    rng = _check_random_state(seed, stream="correct_fwe_montecarlo")
    rand_idx = rng.choice(null_ijk.shape[0], size=(len(coords), n_iters))
    head = min(N_RAND_HEAD, n_iters)
    fwe_rand_idx_head = rand_idx[:, :head].astype(np.int32)
    del rand_idx
    from scipy import ndimage

    from nimare.meta.utils import _calculate_cluster_measures

    conn = ndimage.generate_binary_structure(3, 1)
    iter_df = est.inputs_["coordinates"].drop(columns=["x", "y", "z"], errors="ignore").copy()
    head_check = []
    for it in range(head):
        m = est._compute_permutation_summarystat(null_ijk[fwe_rand_idx_head[:, it]], iter_df)
        arr = np.zeros(shape, dtype=m.dtype)
        arr[mask_bool] = m
        size, mass = _calculate_cluster_measures(arr, cft_ale, conn, tail="upper")
        head_check.append((float(np.max(m)), float(size), float(mass)))
    head_check = np.array(head_check)
    # max ALE and cluster size must match exactly; NiMARE stores the mass in a float32
    # array, so the recomputed (float64) mass agrees only to float32 precision.
    ok = (
        np.array_equal(head_check[:, 0], null_max_ale[:head])
        and np.array_equal(head_check[:, 1], null_max_size[:head])
        and np.allclose(head_check[:, 2], null_max_mass[:head], rtol=1e-6, atol=0)
    )
    if not ok:
        raise RuntimeError(
            "could not reproduce NiMARE's first FWE iterations:\n"
            f"{head_check}\nvs\n{np.c_[null_max_ale[:head], null_max_size[:head], null_max_mass[:head]]}"
        )

    # ---- bookkeeping --------------------------------------------------------------------
    dims = np.array(shape)
    in_grid = np.all((ijk >= 0) & (ijk < dims), axis=1)
    in_mask = np.zeros(len(ijk), dtype=bool)
    in_mask[in_grid] = mask_bool[tuple(ijk[in_grid].T)]

    nonzero = ale > 0
    out = dict(
        nimare_version=np.array(nimare.__version__),
        dataset=np.array(name),
        source=np.array(source),
        ijk=ijk,
        xyz=xyz,
        exp_index=exp_index,
        exp_ids=np.array(exp_ids, dtype=str),
        sample_sizes=sample_sizes,
        mask_shape=np.array(shape, dtype=np.int32),
        mask_affine=np.asarray(mask_img.affine, dtype=np.float64),
        mask_index=mask_index,
        ale=ale.astype(np.float64),
        p=p.astype(np.float64),
        z=z.astype(np.float64),
        stat_dtype=np.array(stat_dtype),
        hist_bins=hist_bins,
        hist_weights=hist_weights,
        cft_p=np.float64(0.001),
        cft_ale=np.float64(cft_ale),
        iterations=np.int64(n_iters),
        random_state=np.int64(seed),
        null_max_ale=null_max_ale,
        null_max_cluster_size=null_max_size,
        null_max_cluster_mass=null_max_mass,
        null_dtype=np.array(null_dtype),
        p95_max_ale=np.float64(np.percentile(null_max_ale, 95)),
        p95_max_cluster_size=np.float64(np.percentile(null_max_size, 95)),
        p95_max_cluster_mass=np.float64(np.percentile(null_max_mass, 95)),
        fwe_rand_idx_head=fwe_rand_idx_head,
        seconds_fit=np.float64(t_fit),
        seconds_fwe=np.float64(t_fwe),
        seconds_per_iteration=np.float64(t_fwe / n_iters),
        n_cores=np.int64(1),
        foci_outside_grid=np.int64((~in_grid).sum()),
        foci_outside_mask=np.int64((~in_mask).sum()),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.npz"
    np.savez_compressed(path, **out)

    summary = dict(
        name=name,
        n_experiments=int(len(exp_ids)),
        n_foci=int(len(ijk)),
        foci_outside_grid=int((~in_grid).sum()),
        foci_outside_mask=int((~in_mask).sum()),
        sample_sizes_min_max=[int(sample_sizes.min()), int(sample_sizes.max())],
        n_nonzero_ale=int(nonzero.sum()),
        max_ale=float(ale.max()),
        min_p=float(p.min()),
        max_z=float(z.max()),
        stat_dtype=stat_dtype,
        cft_ale=cft_ale,
        iterations=int(n_iters),
        random_state=int(seed),
        p95_max_ale=float(out["p95_max_ale"]),
        p95_max_cluster_size=float(out["p95_max_cluster_size"]),
        p95_max_cluster_mass=float(out["p95_max_cluster_mass"]),
        seconds_load=round(t_load, 2),
        seconds_fit=round(t_fit, 2),
        seconds_fwe=round(t_fwe, 2),
        seconds_per_iteration=t_fwe / n_iters,
        file=str(path),
        file_bytes=path.stat().st_size,
    )
    print(json.dumps(summary, indent=1), flush=True)
    return summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=2000, help="FWE Monte-Carlo iterations")
    ap.add_argument("--out", default=str(REPO / "tests" / "data" / "nimare"))
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="ALE(random_state=...)")
    ap.add_argument("--only", choices=["pain", "finger"], action="append")
    args = ap.parse_args(argv)

    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    import nimare

    print(
        f"nimare {nimare.__version__}, numpy {np.__version__}, python {platform.python_version()}",
        flush=True,
    )
    mask_img = nib.load(str(MASK_PATH))
    check_mask(mask_img)
    out_dir = Path(args.out)
    names = args.only or ["pain", "finger"]
    t0 = time.perf_counter()
    for name in names:
        run_one(name, mask_img, args.iterations, args.seed, out_dir)
    print(f"total seconds: {time.perf_counter() - t0:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
