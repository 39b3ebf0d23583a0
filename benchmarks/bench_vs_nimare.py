"""Benchmark: alemap vs NiMARE, same data, same machine, one run.

Runs the cluster-level FWE Monte Carlo null of both tools on the same
experiments and prints per-iteration time, throughput, peak memory and the
ratios. Each tool runs in its own child process (so peak RSS is per tool);
the parent collects the numbers. NiMARE must be installed:
``pip install "alemap[oracle]"`` (NiMARE 0.22.1).

Usage::

    python benchmarks/bench_vs_nimare.py [--data FILE] [--alemap-iters 2000]
        [--nimare-iters 200] [--repeats 3]

Reported: median seconds per iteration over ``--repeats`` runs for
alemap with 1 thread and with all cores, and NiMARE with ``n_cores=1`` and
with all cores (NiMARE's fastest setting on a machine is whichever is lower).
Each child also times its fit before the Monte Carlo (alemap: the ALE map,
the MA histograms and the analytic null; NiMARE: ``ALE.fit`` with the
approximate null) after fitting a 2-experiment subset, so that both are
warm (numba compilation or cache load excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parent.parent / "shared" / "data" / "eickhoff2009-finger-tapping" / "EickhoffHBM09.txt"


def _child_alemap(data: str, iters: int, jobs: int) -> dict:
    import resource

    import numpy as np

    from alemap.inference.montecarlo import run_null
    from alemap.inference.plan import make_plan
    from alemap.io import load_experiments
    from alemap.kernels.gaussian import kernel_cubes
    from alemap.space import load_mni152_2mm
    from alemap.space.prepare import prepare
    from alemap.statistics.null import null_from_histograms
    from alemap.statistics.onepass import ale_and_histograms

    grid = load_mni152_2mm()
    placed = prepare(load_experiments(data), grid, "nimare")
    exps = placed.experiments
    cubes = kernel_cubes(exps.n_subjects)
    coe = cubes.index(exps.n_subjects)

    def fit(n_exp):  # ALE map, MA histograms and the analytic null, as ALE.fit does
        f = exps.offsets[n_exp]
        ale, hist = ale_and_histograms(placed.ijk[:f], exps.offsets[: n_exp + 1], coe[:n_exp], cubes, grid.mask,
                                       jobs=jobs)
        return null_from_histograms(hist, upto=float(ale.max()), jobs=jobs)

    fit(2)  # warm-up: numba cache load, as NiMARE's child warms up too
    t0 = time.perf_counter()
    null = fit(exps.n_experiments)
    t_fit = time.perf_counter() - t0
    plan = make_plan(grid.mask, exps.offsets, coe, cubes, null.threshold(0.001), 6)
    run_null(plan, 64, seed=99, jobs=jobs)  # warm-up: compile and touch memory
    t0 = time.perf_counter()
    m = run_null(plan, iters, seed=1, jobs=jobs)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"s_per_iter": dt / iters, "fit_s": t_fit, "peak_rss_mb": rss,
            "p95_size": float(np.quantile(m.size, 0.95)), "n_exp": exps.n_experiments, "n_foci": exps.n_foci}


def _child_nimare(data: str, iters: int, cores: int) -> dict:
    import resource
    import warnings

    import numpy as np

    warnings.filterwarnings("ignore")
    from nimare.correct import FWECorrector
    from nimare.io import convert_sleuth_to_dataset
    from nimare.meta.cbma.ale import ALE

    dset = convert_sleuth_to_dataset(data, target="ale_2mm")
    ALE(null_method="approximate").fit(dset.slice(dset.ids[:2]))  # warm-up: numba compilation
    t0 = time.perf_counter()
    res = ALE(null_method="approximate").fit(dset)
    t_fit = time.perf_counter() - t0
    corr = FWECorrector(method="montecarlo", voxel_thresh=0.001, n_iters=iters, n_cores=cores)
    t0 = time.perf_counter()
    out = corr.transform(res)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sizes = out.estimator.null_distributions_["values_desc-size_level-cluster_corr-fwe_method-montecarlo"]
    return {"s_per_iter": dt / iters, "fit_s": t_fit, "peak_rss_mb": rss, "p95_size": float(np.quantile(sizes, 0.95))}


def _split(n):
    return list(range(0, n, 2)), list(range(1, n, 2))  # alternate experiments: two groups of ~equal size


def _child_alemap_contrast(data: str, perms: int) -> dict:
    import resource

    from alemap import ALE
    from alemap.designs.contrast import run_contrast
    from alemap.io import load_experiments

    s = load_experiments(data)
    ia, ib = _split(s.n_experiments)
    est = ALE(iterations=0, placement="nimare", quiet=True)
    ra, rb = est.fit(s.select(ia)), est.fit(s.select(ib))
    run_contrast(ra, rb, method="subtraction", permutations=64, seed=9)  # warm-up
    t0 = time.perf_counter()
    run_contrast(ra, rb, method="subtraction", permutations=perms, seed=1)
    dt = time.perf_counter() - t0
    return {"s_per_perm": dt / perms, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _child_nimare_contrast(data: str, perms: int) -> dict:
    import resource
    import warnings

    warnings.filterwarnings("ignore")
    from nimare.io import convert_sleuth_to_dataset
    from nimare.meta.cbma.ale import ALESubtraction

    dset = convert_sleuth_to_dataset(data, target="ale_2mm")
    ids = sorted(dset.ids)
    ia, ib = _split(len(ids))
    d1, d2 = dset.slice([ids[i] for i in ia]), dset.slice([ids[i] for i in ib])
    t0 = time.perf_counter()
    ALESubtraction(n_iters=perms, n_cores=1).fit(d1, d2)
    dt = time.perf_counter() - t0
    return {"s_per_perm": dt / perms, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _run_child(tool: str, data: str, iters: int, workers: int) -> dict:
    cmd = [sys.executable, __file__, "--child", tool, "--data", data, "--iters", str(iters), "--workers", str(workers)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT))
    ap.add_argument("--alemap-iters", type=int, default=2000)
    ap.add_argument("--nimare-iters", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--contrast-perms", type=int, default=1000, help="permutations per tool for the contrast part")
    ap.add_argument("--child", choices=("alemap", "nimare", "alemap-contrast", "nimare-contrast"))
    ap.add_argument("--iters", type=int)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    if args.child == "alemap":
        print(json.dumps(_child_alemap(args.data, args.iters, args.workers)))
        return 0
    if args.child == "nimare":
        print(json.dumps(_child_nimare(args.data, args.iters, args.workers)))
        return 0
    if args.child == "alemap-contrast":
        print(json.dumps(_child_alemap_contrast(args.data, args.iters)))
        return 0
    if args.child == "nimare-contrast":
        print(json.dumps(_child_nimare_contrast(args.data, args.iters)))
        return 0
    cores = os.cpu_count() or 1
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores, Python {platform.python_version()}")
    print(f"data: {args.data}")
    rows = {}
    for tool, workers, iters in [("alemap", 1, args.alemap_iters), ("alemap", cores, args.alemap_iters),
                                 ("nimare", 1, args.nimare_iters), ("nimare", cores, args.nimare_iters)]:
        runs = [_run_child(tool, args.data, iters, workers) for _ in range(args.repeats)]
        med = _median([r["s_per_iter"] for r in runs])
        rows[(tool, workers)] = dict(runs[0], s_per_iter=med)
        r = rows[(tool, workers)]
        print(f"{tool:7s} workers={workers:<3d} {med * 1e3:9.2f} ms/iter  {1 / med:9.1f} iter/s  "
              f"peak RSS {r['peak_rss_mb']:7.0f} MB  fit {r['fit_s']:.2f} s  p95 cluster size {r['p95_size']:.0f}")
    nim_best = min(rows[("nimare", 1)]["s_per_iter"], rows[("nimare", cores)]["s_per_iter"])
    print(f"ratio, one core   (NiMARE n_cores=1 / alemap jobs=1): {rows[('nimare', 1)]['s_per_iter'] / rows[('alemap', 1)]['s_per_iter']:.1f}x")
    print(f"ratio, all cores  (NiMARE fastest / alemap jobs={cores}): {nim_best / rows[('alemap', cores)]['s_per_iter']:.1f}x")
    print(f"10,000 iterations: alemap {rows[('alemap', cores)]['s_per_iter'] * 1e4:.1f} s, NiMARE {nim_best * 1e4:.0f} s")
    # contrast: whole-brain label-exchange subtraction, experiments split alternately in two groups
    con = {}
    for tool in ("alemap-contrast", "nimare-contrast"):
        runs = [_run_child(tool, args.data, args.contrast_perms, 1) for _ in range(args.repeats)]
        con[tool] = _median([r["s_per_perm"] for r in runs])
        print(f"{tool:16s} {con[tool] * 1e3:9.2f} ms/permutation  peak RSS {runs[0]['peak_rss_mb']:7.0f} MB")
    print(f"ratio, contrast (NiMARE ALESubtraction / alemap subtraction): "
          f"{con['nimare-contrast'] / con['alemap-contrast']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
