"""Benchmark: the voxel-wise base-rate null (SCALE / C-SALE), alemap vs NiMARE's ``SCALE``.

SCALE (Langner et al. 2014) and C-SALE (Magielse et al. 2025) test each voxel
against its own null built by relocating foci in proportion to a base rate of
how often the literature reports foci there. Both tools run the whole-brain
null on the same experiments (default: the finger-movement set, 73
experiments) with the same number of iterations:

* alemap: ``run_csale(region="whole_brain")`` with its shipped Neurosynth v7
  base rate, ``--jobs`` threads (``--backend gpu``: the GPU engine,
  ``alemap.inference.gpu_voxelwise``; ``--backend numpy`` runs that engine's
  code with NumPy, to check the script without a GPU);
* NiMARE 0.22.1: ``SCALE(xyz=..., n_iters=K, n_cores=--jobs).fit(dset)``, with
  ``xyz`` every MNI focus of Neurosynth v7 (``../shared/data/neurosynth-v7``),
  the coordinates its base rate comes from.

Each tool runs in its own child process, fits twice (``--small`` and
``--iters`` iterations) after a warm-up fit, and its time per iteration is
the difference of the two fits divided by the difference of the iterations,
so the fixed costs (MA maps, p to z, clusters) cancel. Peak RSS is the
child's. The base rates differ in detail (a map of focus densities against
NiMARE's focus coordinates), so this compares the cost of the null, not its
values.

Usage::

    python benchmarks/bench_scale.py [--data FILE] [--iters 200] [--small 20] [--jobs N]
        [--backend cpu|gpu|numpy] [--tools alemap,nimare]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parent.parent / "shared" / "data" / "eickhoff2009-finger-tapping" / "EickhoffHBM09.txt"
NS = HERE.parent.parent / "shared" / "data" / "neurosynth-v7"


def _child_alemap(data: str, iters: int, small: int, jobs: int, backend: str) -> dict:
    import resource

    from alemap import ALE
    import alemap.designs.csale as csale
    from alemap.designs.csale import run_csale
    from alemap.io import load_experiments
    from alemap.space import load_mni152_2mm

    grid = load_mni152_2mm()
    placed = ALE(placement="nimare", quiet=True).place(load_experiments(data), grid)
    if backend == "numpy":  # not a user backend: the GPU engine's code on the host
        csale.resolve_backend = lambda name: "numpy"
        csale.backend_label = lambda engine: "numpy-array"

    def fit(n):
        t = time.perf_counter()
        run_csale(placed, grid, iterations=n, region="whole_brain", seed=1, jobs=jobs, quiet=True,
                  backend="gpu" if backend == "numpy" else backend)
        return time.perf_counter() - t

    fit(small)  # warm-up: numba cache, base rate
    t_small, t_big = fit(small), fit(iters)
    return {"s_per_iter": (t_big - t_small) / (iters - small), "fixed_s": t_small - small * (t_big - t_small) / (iters - small),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _child_nimare(data: str, iters: int, small: int, jobs: int, backend: str) -> dict:
    import resource

    from nimare.io import convert_sleuth_to_dataset
    from nimare.meta.cbma.ale import SCALE

    from alemap.io.databases import read_neurosynth

    db = read_neurosynth(NS / "data-neurosynth_version-7_coordinates.tsv.gz",
                         NS / "data-neurosynth_version-7_metadata.tsv.gz")
    xyz = db.xyz
    dset = convert_sleuth_to_dataset(data, target="ale_2mm")

    def fit(n):
        t = time.perf_counter()
        SCALE(xyz=xyz, n_iters=n, n_cores=jobs, random_state=1).fit(dset)
        return time.perf_counter() - t

    fit(2)  # warm-up
    t_small, t_big = fit(small), fit(iters)
    return {"s_per_iter": (t_big - t_small) / (iters - small), "fixed_s": t_small - small * (t_big - t_small) / (iters - small),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "base_rate_foci": int(len(xyz))}


def _run_child(tool: str, data: str, iters: int, small: int, jobs: int, backend: str) -> dict:
    cmd = [sys.executable, __file__, "--child", tool, "--data", data, "--iters", str(iters), "--small", str(small),
           "--jobs", str(jobs), "--backend", backend]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT))
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--small", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--backend", choices=["cpu", "gpu", "numpy"], default="cpu", help="alemap's engine")
    ap.add_argument("--tools", default="alemap,nimare", help="comma-separated: alemap, nimare")
    ap.add_argument("--child", choices=["alemap", "nimare"])
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.child:
        run = _child_alemap if args.child == "alemap" else _child_nimare
        print(json.dumps(run(args.data, args.iters, args.small, args.jobs, args.backend)))
        return 0
    tools = [t for t in args.tools.split(",") if t]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; jobs {args.jobs}; alemap backend {args.backend}; "
          f"{args.small} and {args.iters} iterations; data {Path(args.data).name}", flush=True)
    rows = {tool: _run_child(tool, args.data, args.iters, args.small, args.jobs, args.backend) for tool in tools}
    for tool, r in rows.items():
        print(f"  {tool:7s} {1e3 * r['s_per_iter']:9.2f} ms/iteration  fixed {r['fixed_s']:6.2f} s  "
              f"peak RSS {r['peak_rss_mb']:6.0f} MB")
    if {"alemap", "nimare"} <= set(rows):
        print(f"  ratio (NiMARE / alemap per iteration): "
              f"{rows['nimare']['s_per_iter'] / rows['alemap']['s_per_iter']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
