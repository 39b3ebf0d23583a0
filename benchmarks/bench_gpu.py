"""Benchmark: the GPU engine's two paths against the CPU engine, on issue 5's two sets.

Sets: the finger-movement set (73 experiments, 654 foci;
``../shared/data/eickhoff2009-finger-tapping/EickhoffHBM09.txt``) and 1,000
Neurosynth v7 tables (``bench_scaling.py``'s sample: seed 0, 20 subjects per
study, tables of 5-100 foci; 18,649 foci). For each set the Monte Carlo plan
is built as ``ALE.fit`` builds it (placement ``"nimare"``, cluster-forming
p < 0.001, 6-connectivity), then ``run_null`` runs with the same seed on

* ``--backend`` (``gpu``; ``numpy`` runs the very same array code on the host,
  to check this script without a GPU) with the window path
  (``alemap.inference.gpu.WINDOWS = True``) and with the whole grid
  (``False``), each after a warm-up of ``--warmup`` iterations (CuPy compiles
  its kernels on first use);
* the CPU engine with all cores (``--jobs``).

Printed per set and engine: ms per iteration, the projection to 10,000
iterations, and whether the null maxima equal the CPU engine's (maximum ALE
and cluster sizes identical, cluster masses within 1e-12 relative).

Issue 5's GPU targets (an NVIDIA H100): 10,000 iterations in under 1 s for the
finger set and under 10 s for 1,000 experiments; nimare-gpu, measured on an
H100 and quoted in the issue: 15.8 and 106.7 ms per iteration. The ratio
column divides those by the GPU engine's time.

Usage::

    python benchmarks/bench_gpu.py [--sets finger 1000] [--iterations 2048]
        [--warmup 64] [--backend gpu|numpy] [--jobs N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_scaling import VOXEL_P, _sample  # noqa: E402

FINGER = HERE.parent.parent / "shared" / "data" / "eickhoff2009-finger-tapping" / "EickhoffHBM09.txt"
#: nimare-gpu on an H100, ms per iteration (issue 5).
NIMARE_GPU_MS = {"finger": 15.8, "1000": 106.7}
#: Issue 5's targets: seconds for 10,000 iterations on an H100.
TARGET_10K_S = {"finger": 1.0, "1000": 10.0}
MASS_RTOL = 1e-12


def _plan(exps, jobs: int):
    from alemap import ALE
    from alemap.inference.plan import make_plan
    from alemap.kernels.gaussian import kernel_cubes
    from alemap.space import load_mni152_2mm
    from alemap.statistics.null import null_from_histograms
    from alemap.statistics.onepass import ale_and_histograms

    grid = load_mni152_2mm()
    placed = ALE(placement="nimare", quiet=True).place(exps, grid)
    e = placed.experiments
    cubes = kernel_cubes(e.n_subjects, float(grid.voxel_size[0]))
    coe = cubes.index(e.n_subjects)
    ale, hist = ale_and_histograms(placed.ijk, e.offsets, coe, cubes, grid.mask, jobs=jobs)
    null = null_from_histograms(hist, upto=float(ale.max(initial=0.0)), jobs=jobs)
    return make_plan(grid.mask, e.offsets, coe, cubes, null.threshold(VOXEL_P), 6)


def _sets(names: list[str]) -> dict:
    from alemap.io import load_experiments

    sets = {}
    for name in names:
        if name == "finger":
            sets[name] = load_experiments(FINGER)
        elif name.isdigit():
            sets[name] = _sample(0, [int(name)], per_table=True)[0][int(name)]
        else:
            raise SystemExit(f"unknown set {name!r}: 'finger' or a number of Neurosynth tables")
    return sets


def _timed(plan, iters: int, warmup: int, backend: str, jobs: int):
    from alemap.inference.montecarlo import run_null

    if warmup:
        run_null(plan, warmup, seed=99, jobs=jobs, backend=backend)
    t0 = time.perf_counter()
    null = run_null(plan, iters, seed=1, jobs=jobs, backend=backend)  # host arrays: the device has finished
    return null, time.perf_counter() - t0


def _same(a, b) -> bool:
    import numpy as np

    return bool(np.array_equal(a.ale, b.ale) and np.array_equal(a.size, b.size)
                and np.allclose(a.mass, b.mass, rtol=MASS_RTOL, atol=0))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["finger", "1000"])
    ap.add_argument("--iterations", type=int, default=2048)
    ap.add_argument("--warmup", type=int, default=64)
    ap.add_argument("--backend", choices=["gpu", "numpy"], default="gpu")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="CPU engine threads (default: all cores)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*repeat another experiment")  # the finger set repeats one

    from alemap.inference import gpu

    device = "host (NumPy)"
    if args.backend == "gpu":
        xp, _ = gpu.array_module("gpu")  # a clear error without CuPy or a device
        device = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)["name"].decode()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; array engine on {device}; "
          f"{args.iterations} iterations after {args.warmup}")
    rows = []
    for name, exps in _sets(args.sets).items():
        plan = _plan(exps, args.jobs)
        print(f"{name}: {plan.n_foci} foci, window tables usable: {plan.window.usable}", flush=True)
        ref, t_cpu = _timed(plan, args.iterations, min(args.warmup, 32), "cpu", args.jobs)
        row = {"set": name, "foci": plan.n_foci, "cpu_ms": 1e3 * t_cpu / args.iterations, "paths": {}}
        for label, windows in (("windows", True), ("whole grid", False)):
            gpu.WINDOWS = windows
            null, t = _timed(plan, args.iterations, args.warmup, args.backend, 1)
            ms = 1e3 * t / args.iterations
            row["paths"][label] = {"ms": ms, "s_per_10k": ms * 10, "same_as_cpu": _same(null, ref)}
        gpu.WINDOWS = True
        rows.append(row)
        print(f"  CPU engine ({args.jobs} threads): {row['cpu_ms']:.3f} ms/iteration")
        for label, r in row["paths"].items():
            ref_ms = NIMARE_GPU_MS.get(name)
            ratio = f", {ref_ms / r['ms']:.3g}x nimare-gpu" if ref_ms else ""
            target = TARGET_10K_S.get(name)
            goal = f" (target < {target:g} s)" if target else ""
            print(f"  {args.backend} {label}: {r['ms']:.3f} ms/iteration, 10,000 iterations {r['s_per_10k']:.2f} s"
                  f"{goal}{ratio}; maxima equal the CPU's: {r['same_as_cpu']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": device, "iterations": args.iterations, "rows": rows}, indent=1))
        print(f"wrote {args.json}")
    return 0 if all(r["same_as_cpu"] for row in rows for r in row["paths"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
