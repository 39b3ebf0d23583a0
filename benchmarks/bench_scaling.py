"""Benchmark: how alemap and NiMARE scale with the number of experiments.

For each N (default 10 30 100 300 1000 3000) a set of N experiments is drawn
from the Neurosynth v7 database in ``../shared/data/neurosynth-v7/`` (beside the checkout), read
with :func:`alemap.io.databases.read_neurosynth` with a fixed sample size of
``SUBJECTS`` (20) for every study (Neurosynth reports none; the reader's
default would be 15). Experiments are single tables (contrasts) with 5-100
foci by default, as in the nimare-gpu measurement quoted in issue 5 (1,000
experiments, 18,852 foci); ``--per-study`` pools the tables of each study
instead (studies with 5-100 foci). One seeded permutation of the eligible
units is drawn and the set of size N is its first N, so the sets are nested
and the same for every run with the same ``--seed``. The focus count of each
set is printed: with seed 0 the 1,000-table set has 18,649 foci (19.1 per
table); the 1,000-study set (``--per-study``) has 29,683 (29.5 per study).

Each set is written once as a Sleuth text file, which both tools read
(NiMARE with ``convert_sleuth_to_dataset(..., target="ale_2mm")``, as in
``bench_vs_nimare.py``). Each tool then runs in its own child process (so the
peak RSS is per tool and per N); the parent collects the numbers. Measured:

* alemap: the analytic null, i.e. placing the foci, MA maps, the ALE map, the
  analytic null and the p/z maps (the work of NiMARE's ``ALE.fit``); the
  Monte Carlo plan (``make_plan``) apart; and the cluster-level FWE Monte
  Carlo null (``run_null``) with ``--jobs`` threads: seconds per iteration
  over ``--alemap-iters`` iterations. Placement is ``"nimare"``, as in
  ``bench_vs_nimare.py``.
* NiMARE: ``ALE(null_method="approximate").fit`` (its analytic null) and
  ``FWECorrector(method="montecarlo", voxel_thresh=0.001, n_iters=K,
  n_cores=--jobs).transform``: seconds per iteration over ``--nimare-iters``
  iterations. NiMARE is skipped above ``--nimare-max-n`` (its time and
  memory grow fast) and with ``--no-nimare``.
* peak RSS of each child (``resource.getrusage(RUSAGE_SELF)`` in the child;
  NiMARE 0.22.1's ALE runs its permutations in threads, so there are no
  worker processes to add).

Before anything is timed, each child fits a 2-experiment subset (numba cache
load, template loading) and runs a few iterations (JIT; for NiMARE a
1-iteration ``transform``), so the times are those of a warm process.

NiMARE's ``transform`` has a fixed cost besides its iterations (drawing all
relocations, voxel- and cluster-level p maps of the observed map, masker
round trips: 1-3 s, several iterations' worth at small N), so with a small
K the whole ``transform`` divided by K overstates the cost of an iteration.
The child therefore wraps NiMARE's per-permutation method
(``_correct_fwe_montecarlo_permutation``) with time stamps: NiMARE's
seconds per iteration is the wall span from the first permutation's start to
the last one's end, divided by K (``s_per_iter`` in the JSON); the rest of
``transform`` is reported as its fixed cost (``fixed_s``) and the whole
divided by K as ``whole_s_per_iter``. alemap's is the whole ``run_null``
divided by the iterations (it has no comparable fixed part).

alemap runs iterations in seeded batches of 32, one batch per thread, so
``--alemap-iters`` below 32 x ``--jobs`` leaves threads idle; use a multiple of
32 x jobs for a per-iteration time at full parallel use.

Usage::

    python benchmarks/bench_scaling.py [--n 10 30 100 300 1000 3000]
        [--alemap-iters 200] [--nimare-iters 10] [--repeats 1] [--jobs N]
        [--seed 0] [--nimare-max-n 1000] [--no-nimare] [--per-study]
        [--json out.json] [--plot out.png]

Reported per N: foci, ms/iteration of each tool and their ratio, analytic
null seconds of each tool and their ratio, alemap plan seconds, NiMARE's
fixed ``transform`` seconds, peak RSS of each child; medians over
``--repeats`` runs (the peak RSS is the largest). The plot (log-log,
headless) shows ms/iteration and analytic-null seconds against N for both
tools.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_vs_nimare import _median  # noqa: E402

NS = HERE.parent.parent / "shared" / "data" / "neurosynth-v7"
COORDS = NS / "data-neurosynth_version-7_coordinates.tsv.gz"
META = NS / "data-neurosynth_version-7_metadata.tsv.gz"

#: Sample size given to every Neurosynth study (it sets the kernel width).
SUBJECTS = 20
#: Eligible experiments: this many foci, inclusive.
MIN_FOCI, MAX_FOCI = 5, 100
#: Iterations run before the timed alemap Monte Carlo (JIT, page faults).
ALEMAP_WARMUP = 8
#: Cluster-forming threshold (uncorrected p) of both tools.
VOXEL_P = 0.001


# ---------------------------------------------------------------- children


def _child_alemap(data: str, iters: int, jobs: int) -> dict:
    import resource

    import numpy as np

    from alemap import ALE
    from alemap.inference.montecarlo import run_null
    from alemap.inference.plan import make_plan
    from alemap.io import load_experiments
    from alemap.kernels.gaussian import kernel_cubes
    from alemap.space import load_mni152_2mm
    from alemap.statistics.null import null_from_histograms
    from alemap.statistics.onepass import ale_and_histograms
    from alemap.statistics.pz import p_to_z

    grid = load_mni152_2mm()
    est = ALE(placement="nimare", quiet=True)

    def fit(exps):
        t = [time.perf_counter()]
        placed = est.place(exps, grid)
        e = placed.experiments
        t.append(time.perf_counter())
        cubes = kernel_cubes(e.n_subjects, float(grid.voxel_size[0]))
        coe = cubes.index(e.n_subjects)
        ale, hist = ale_and_histograms(placed.ijk, e.offsets, coe, cubes, grid.mask, jobs=jobs)  # as ALE.fit does
        t.append(time.perf_counter())
        null = null_from_histograms(hist, upto=float(ale.max(initial=0.0)), jobs=jobs)
        p_to_z(null.p_values(ale))
        t.append(time.perf_counter())
        plan = make_plan(grid.mask, e.offsets, coe, cubes, null.threshold(VOXEL_P), 6)
        t.append(time.perf_counter())
        stages = {"place_s": t[1] - t[0], "ma_s": t[2] - t[1], "null_s": t[3] - t[2], "plan_s": t[4] - t[3]}
        return plan, e, stages

    exps = load_experiments(data)
    fit(exps.select([0, 1]))  # warm-up: numba cache, grid
    plan, e, stages = fit(exps)
    run_null(plan, min(iters, ALEMAP_WARMUP), seed=99, jobs=1)  # warm-up: JIT, touch the plan
    t0 = time.perf_counter()
    m = run_null(plan, iters, seed=1, jobs=jobs)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"s_per_iter": dt / iters, "fit_s": stages["place_s"] + stages["ma_s"] + stages["null_s"],
            "plan_s": stages["plan_s"], "stages": stages, "peak_rss_mb": rss,
            "p95_size": float(np.quantile(m.size, 0.95)), "n_exp": e.n_experiments, "n_foci": e.n_foci}


def _child_nimare(data: str, iters: int, cores: int) -> dict:
    import resource
    import warnings

    import numpy as np

    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)
    from nimare.correct import FWECorrector
    from nimare.io import convert_sleuth_to_dataset
    from nimare.meta.cbma.ale import ALE

    dset = convert_sleuth_to_dataset(data, target="ale_2mm")
    ids = sorted(dset.ids)
    ALE(null_method="approximate").fit(dset.slice(ids[:2]))  # warm-up
    t0 = time.perf_counter()
    res = ALE(null_method="approximate").fit(dset)
    t_fit = time.perf_counter() - t0

    # time stamps of every permutation: their span is the iterations' wall time, without the
    # fixed cost of transform (drawing the relocations, p maps of the observed map, masker)
    stamps = []
    perm = ALE._correct_fwe_montecarlo_permutation

    def timed_perm(self, *a, **kw):
        t = time.perf_counter()
        out = perm(self, *a, **kw)
        stamps.append((t, time.perf_counter()))
        return out

    ALE._correct_fwe_montecarlo_permutation = timed_perm  # threads (joblib "threading"): no pickling

    def correct(n):
        stamps.clear()
        corr = FWECorrector(method="montecarlo", voxel_thresh=VOXEL_P, n_iters=n, n_cores=cores)
        t0 = time.perf_counter()
        out = corr.transform(res)
        return time.perf_counter() - t0, out

    correct(1)  # warm-up
    dt, out = correct(iters)
    if len(stamps) != iters:
        raise RuntimeError(f"timed {len(stamps)} NiMARE permutations, expected {iters}")
    span = max(e for _, e in stamps) - min(b for b, _ in stamps)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # NiMARE 0.22.1's ALE runs its permutations in threads (joblib "threading" backend), so the
    # child's own RSS is the whole; a child process of its own would show here.
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    sizes = out.estimator.null_distributions_["values_desc-size_level-cluster_corr-fwe_method-montecarlo"]
    return {"s_per_iter": span / iters, "whole_s_per_iter": dt / iters, "fixed_s": dt - span,
            "fit_s": t_fit, "peak_rss_mb": rss, "children_peak_rss_mb": children,
            "p95_size": float(np.quantile(sizes, 0.95)), "n_exp": len(ids)}


def _run_child(tool: str, data: str, iters: int, workers: int) -> dict:
    cmd = [sys.executable, __file__, "--child", tool, "--data", data, "--iters", str(iters), "--workers", str(workers)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{tool} child failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- data


def _sample(seed: int, ns: list[int], per_table: bool):
    """Experiment sets of each size in ``ns`` (nested: first N of one seeded permutation)."""
    import numpy as np

    from alemap.io.databases import read_neurosynth

    t0 = time.perf_counter()
    db = read_neurosynth(COORDS, META, default_subjects=SUBJECTS)
    print(f"database: {db} read in {time.perf_counter() - t0:.1f} s, sample size {SUBJECTS} for every study")
    if per_table:
        pool = db.to_experiment_set(None, per_table=True)
        counts = (pool.offsets[1:] - pool.offsets[:-1])
    else:
        pool = None
        counts = db.foci_counts
    eligible = np.flatnonzero((counts >= MIN_FOCI) & (counts <= MAX_FOCI))
    unit = "tables" if per_table else "studies"
    print(f"eligible: {eligible.size} {unit} with {MIN_FOCI}-{MAX_FOCI} foci (mean {counts[eligible].mean():.1f})")
    if max(ns) > eligible.size:
        raise SystemExit(f"--n {max(ns)} is more than the {eligible.size} eligible {unit}")
    order = np.random.default_rng(seed).permutation(eligible)
    sets = {}
    for n in ns:
        idx = np.sort(order[:n])
        sets[n] = pool.select(idx.tolist()) if per_table else db.to_experiment_set(idx)
    return sets, {"database": repr(db), "unit": unit, "eligible": int(eligible.size),
                  "eligible_mean_foci": float(counts[eligible].mean())}


def _write_sleuth(exps, path: Path) -> None:
    """All experiments are MNI (read_neurosynth converted Talairach studies)."""
    assert all(s == "MNI" for s in exps.spaces)
    lines = ["// Reference=MNI"]
    for i, name in enumerate(exps.names):
        study, _, table = name.partition(":")
        lines.append(f"// {study}: {'table ' + table if table else 'all tables'}")
        lines.append(f"// Subjects={int(exps.n_subjects[i])}")
        for x, y, z in exps.xyz[exps.offsets[i]:exps.offsets[i + 1]]:
            lines.append(f"{x:.4f}\t{y:.4f}\t{z:.4f}")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- report


def _summarise(runs: list[dict]) -> dict:
    out = dict(runs[0])
    for k in ("s_per_iter", "whole_s_per_iter", "fit_s", "plan_s", "fixed_s"):
        vals = [r[k] for r in runs if r.get(k) is not None]
        if vals:
            out[k] = _median(vals)
    for k in ("peak_rss_mb", "children_peak_rss_mb"):
        vals = [r[k] for r in runs if r.get(k) is not None]
        out[k] = max(vals) if vals else None
    out["runs"] = runs
    return out


def _ratio(a, b):
    return a / b if a is not None and b else None


#: (header, width, format, value of a row) of the printed table; "-" where there is no value.
_COLUMNS = (
    ("N", 5, "d", lambda r, a, n: r["n"]),
    ("foci", 6, "d", lambda r, a, n: r["n_foci"]),
    ("alemap ms/it", 12, ".2f", lambda r, a, n: a["s_per_iter"] * 1e3),
    ("NiMARE ms/it", 12, ".1f", lambda r, a, n: n and n["s_per_iter"] * 1e3),
    ("ratio", 6, ".0f", lambda r, a, n: _ratio(n and n["s_per_iter"], a["s_per_iter"])),
    ("alemap null s", 13, ".2f", lambda r, a, n: a["fit_s"]),
    ("NiMARE null s", 13, ".2f", lambda r, a, n: n and n["fit_s"]),
    ("ratio", 6, ".1f", lambda r, a, n: _ratio(n and n["fit_s"], a["fit_s"])),
    ("alemap plan s", 13, ".2f", lambda r, a, n: a["plan_s"]),
    ("NiMARE fixed s", 14, ".2f", lambda r, a, n: n and n["fixed_s"]),
    ("alemap RSS MB", 13, ".0f", lambda r, a, n: a["peak_rss_mb"]),
    ("NiMARE RSS MB", 13, ".0f", lambda r, a, n: n and n["peak_rss_mb"]),
)


def _table(rows: list[dict]) -> None:
    head = "  ".join(f"{h:>{w}}" for h, w, _, _ in _COLUMNS)
    print(head)
    print("-" * len(head))
    for r in rows:
        cells = []
        for h, w, spec, get in _COLUMNS:
            v = get(r, r["alemap"], r.get("nimare"))
            text = "-" if v is None else format(v, spec) + ("x" if h == "ratio" else "")
            cells.append(f"{text:>{w}}")
        print("  ".join(cells))


def _plot(rows: list[dict], path: str, jobs: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    ns = [r["n"] for r in rows]
    nim = [r for r in rows if r.get("nimare")]
    ax1.plot(ns, [r["alemap"]["s_per_iter"] * 1e3 for r in rows], "o-", label="alemap")
    ax2.plot(ns, [r["alemap"]["fit_s"] for r in rows], "o-", label="alemap")
    if nim:
        ax1.plot([r["n"] for r in nim], [r["nimare"]["s_per_iter"] * 1e3 for r in nim], "s-", label="NiMARE")
        ax2.plot([r["n"] for r in nim], [r["nimare"]["fit_s"] for r in nim], "s-", label="NiMARE")
    ax1.set(xscale="log", yscale="log", xlabel="experiments (N)", ylabel="ms per iteration",
            title=f"cluster-level FWE Monte Carlo per iteration, jobs={jobs}")
    ax2.set(xscale="log", yscale="log", xlabel="experiments (N)", ylabel="seconds",
            title="fit before the Monte Carlo (ALE, null, p)")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- main


def main(argv=None) -> int:
    cores = os.cpu_count() or 1
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[10, 30, 100, 300, 1000, 3000], help="set sizes")
    ap.add_argument("--alemap-iters", type=int, default=200)
    ap.add_argument("--nimare-iters", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=cores, help="alemap threads and NiMARE n_cores (default: all cores)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the experiment sampling")
    ap.add_argument("--nimare-max-n", type=int, default=1000, help="skip NiMARE for larger N")
    ap.add_argument("--no-nimare", action="store_true")
    ap.add_argument("--per-study", action="store_true", help="experiments are studies (tables pooled), not single tables")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--plot", help="write a PNG plot here")
    ap.add_argument("--child", choices=("alemap", "nimare"), help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--iters", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child == "alemap":
        print(json.dumps(_child_alemap(args.data, args.iters, args.workers)))
        return 0
    if args.child == "nimare":
        print(json.dumps(_child_nimare(args.data, args.iters, args.workers)))
        return 0
    ns = sorted(set(args.n))
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores, Python {platform.python_version()}, "
          f"jobs {args.jobs}")
    if args.alemap_iters < 32 * args.jobs:
        print(f"note: {args.alemap_iters} alemap iterations < 32 x {args.jobs} jobs: not every thread gets a batch")
    sets, sampling = _sample(args.seed, ns, not args.per_study)
    rows = []
    with tempfile.TemporaryDirectory(prefix="alemap-bench-scaling-") as tmp:
        for n in ns:
            exps = sets[n]
            data = Path(tmp) / f"n{n}.txt"
            _write_sleuth(exps, data)
            print(f"N={n}: {exps.n_experiments} experiments, {exps.n_foci} foci", flush=True)
            row = {"n": n, "n_experiments": exps.n_experiments, "n_foci": int(exps.n_foci)}
            row["alemap"] = _summarise([_run_child("alemap", str(data), args.alemap_iters, args.jobs)
                                        for _ in range(args.repeats)])
            a = row["alemap"]
            print(f"  alemap  {a['s_per_iter'] * 1e3:9.2f} ms/iter  analytic null {a['fit_s']:.2f} s  "
                  f"plan {a['plan_s']:.2f} s  peak RSS {a['peak_rss_mb']:.0f} MB", flush=True)
            if args.no_nimare:
                row["nimare"], row["nimare_skipped"] = None, "--no-nimare"
            elif n > args.nimare_max_n:
                row["nimare"], row["nimare_skipped"] = None, f"N > --nimare-max-n {args.nimare_max_n}"
                print(f"  NiMARE  skipped: N > --nimare-max-n {args.nimare_max_n}", flush=True)
            else:
                row["nimare"] = _summarise([_run_child("nimare", str(data), args.nimare_iters, args.jobs)
                                            for _ in range(args.repeats)])
                m = row["nimare"]
                print(f"  NiMARE  {m['s_per_iter'] * 1e3:9.1f} ms/iter ({m['whole_s_per_iter'] * 1e3:.1f} whole transform / K)  "
                      f"analytic null {m['fit_s']:.2f} s  transform fixed cost {m['fixed_s']:.2f} s  "
                      f"peak RSS {m['peak_rss_mb']:.0f} MB", flush=True)
            rows.append(row)
    print()
    _table(rows)
    if args.no_nimare:
        print("NiMARE not run (--no-nimare)")
    elif any(r["nimare"] is None for r in rows):
        print(f"NiMARE skipped for N > {args.nimare_max_n} (--nimare-max-n)")
    if args.json:
        info = {"machine": platform.processor() or platform.machine(), "cores": cores,
                "python": platform.python_version(), "args": {k: v for k, v in vars(args).items()
                                                              if k not in ("child", "data", "iters", "workers")},
                "sampling": dict(sampling, seed=args.seed, subjects=SUBJECTS, min_foci=MIN_FOCI, max_foci=MAX_FOCI,
                                 nested=True),
                "voxel_p": VOXEL_P, "rows": rows}
        Path(args.json).write_text(json.dumps(info, indent=1))
        print(f"wrote {args.json}")
    if args.plot:
        _plot(rows, args.plot, args.jobs)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
