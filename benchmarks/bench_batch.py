"""Benchmark: a Neurosynth-scale batch (100 term meta-analyses x 1,000 iterations) on 1, 2 and 4 Dask workers.

Measures

* the import of the whole Neurosynth v7 database (507,891 foci; best and
  median of ``--import-repeats`` reads);
* for each worker count N: a LocalCluster of N worker processes (one thread
  each) runs the batch, sharded as whole analyses; reported are the wall time
  of the computation (cluster start and worker warm-up reported apart),
  analyses per minute and Monte Carlo iterations per second;
* the workers' CPU seconds (iterations per CPU-second does not depend on other
  jobs sharing the machine, wall time does) and the load average;
* that every worker count gave the same null maxima for every analysis.

Usage::

    python benchmarks/bench_batch.py [--coordinates FILE --metadata FILE]
        [--analyses 100] [--iterations 1000] [--workers 1 2 4] [--plain] [--json out.json]

The 100 terms are title terms matching 15-45 Neurosynth v7 studies each
(about 1,000 foci per analysis). On a machine with fewer cores than workers,
extra workers only add contention: the scaling to read is up to the core count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NS = HERE.parent.parent / "shared" / "data" / "neurosynth-v7"

#: 100 title terms, each matching 15-45 Neurosynth v7 studies (MNI or Talairach).
TERMS_100 = (
    "action observation", "acupuncture", "adhd", "aggression", "ambiguity", "anorexia", "aphasia", "bdnf",
    "bimanual", "biological motion", "calculation", "cannabis", "categorization", "category learning", "cocaine",
    "consolidation", "cooperation", "coordination", "cortisol", "craving", "creativity", "crossmodal",
    "deception", "disgust", "dyslexia", "extinction", "eye movement*", "fatigue", "fear conditioning", "gaze",
    "gesture*", "grasping", "heroin", "humor", "illusion", "imitation", "impulsivity", "incentive", "infant*",
    "inhibitory control", "intelligence", "interocepti*", "meditation", "menstrual", "mental rotation",
    "mentalizing", "monetary", "moral*", "motivation", "motor learning", "motor sequence", "multisensory",
    "navigation", "nicotine", "novelty", "obesity", "object recognition", "oddball", "odor*", "olfactory",
    "orthograph*", "oxytocin", "pitch", "placebo", "prediction error", "probabilistic", "problem solving",
    "prosody", "ptsd", "punishment", "reappraisal", "recognition memory", "recollection",
    "repetition suppression", "rhythm", "saccade*", "self-referential", "sentence comprehension",
    "sequence learning", "serotonin", "sex differences", "smoking", "spatial attention", "speech perception",
    "speech production", "stop signal", "syntax", "task switching", "taste", "testosterone", "timing",
    "tinnitus", "tool use", "touch", "uncertainty", "verbal fluency", "vestibular", "visceral", "visual search",
    "visuomotor",
)


def _warm(i):
    import alemap.designs.batch  # noqa: F401  (imports alemap and loads the compiled engine)

    return os.getpid()


def _cpu_seconds() -> float:
    """CPU seconds used by this process so far (user + system)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _nulls(out: Path, names) -> dict:
    import numpy as np

    res = {}
    for n in names:
        with np.load(out / n / "null.npz") as z:
            res[n] = {k: z[k].copy() for k in ("max_ale", "max_cluster_size", "max_cluster_mass")}
    return res


def _same(a: dict, b: dict) -> bool:
    import numpy as np

    return a.keys() == b.keys() and all(np.array_equal(a[n][k], b[n][k]) for n in a for k in a[n])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coordinates", type=Path, default=NS / "data-neurosynth_version-7_coordinates.tsv.gz")
    ap.add_argument("--metadata", type=Path, default=NS / "data-neurosynth_version-7_metadata.tsv.gz")
    ap.add_argument("--analyses", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--plain", action="store_true", help="also run in this process without Dask (1 thread)")
    ap.add_argument("--import-repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here")
    ap.add_argument("--keep", type=Path, default=None, help="keep the outputs under this folder")
    args = ap.parse_args(argv)

    from alemap.designs.batch import run_batch, terms_batch
    from alemap.distributed import get_backend
    from alemap.io.databases import read_neurosynth

    if not args.coordinates.exists():
        print(f"Neurosynth tables not found at {args.coordinates}; pass --coordinates and --metadata.", file=sys.stderr)
        return 2
    times = []
    for _ in range(max(1, args.import_repeats)):
        t0 = time.perf_counter()
        db = read_neurosynth(args.coordinates, args.metadata)
        times.append(time.perf_counter() - t0)
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "import": {"seconds_best": round(min(times), 3), "seconds_median": round(statistics.median(times), 3),
                   "studies": db.n_studies, "foci": db.n_foci, "rows_read": db.counts["rows_read"],
                   "counts": db.counts},
        "batch": {"analyses": args.analyses, "iterations": args.iterations, "seed": args.seed, "shard": "analyses"},
        "runs": [],
    }
    print(f"import: Neurosynth v7, {db.counts['rows_read']} rows -> {db.n_studies} studies, {db.n_foci} foci: "
          f"best {min(times):.2f} s, median {statistics.median(times):.2f} s ({len(times)} reads)", flush=True)
    terms = list(TERMS_100)[: args.analyses]
    batch = terms_batch(db, terms, seed=args.seed, iterations=args.iterations)
    names = [a.name for a in batch.analyses]
    foci = [int(db.foci_counts[a.studies].sum()) for a in batch.analyses]
    studies = [a.n_studies for a in batch.analyses]
    report["batch"].update(studies_mean=round(statistics.mean(studies), 1), foci_mean=round(statistics.mean(foci), 1),
                           foci_total=sum(foci))
    print(f"batch: {len(terms)} term analyses x {args.iterations} iterations; studies per analysis "
          f"{min(studies)}-{max(studies)} (mean {statistics.mean(studies):.1f}), foci mean {statistics.mean(foci):.0f}",
          flush=True)
    root = Path(tempfile.mkdtemp(prefix="alemap-bench-batch-")) if args.keep is None else args.keep
    configs = (["plain"] if args.plain else []) + [f"local:{w}" for w in args.workers]
    reference = None
    try:
        for cfg in configs:
            out = root / cfg.replace(":", "")
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            backend = get_backend(None if cfg == "plain" else cfg, jobs=1)
            t_start = time.perf_counter() - t0
            t0 = time.perf_counter()
            if cfg != "plain":
                n = int(cfg.split(":")[1])
                backend.client.wait_for_workers(n, timeout=120)
                backend.client.run(_warm, 0)  # every worker imports alemap before the clock starts
            t_warm = time.perf_counter() - t0
            try:
                load0 = _loadavg()
                cpu0 = _cpu_seconds() if cfg == "plain" else sum(backend.client.run(_cpu_seconds).values())
                t0 = time.perf_counter()
                run = run_batch(batch, out, backend=backend, shard="analyses", quiet=True)
                wall = time.perf_counter() - t0
                cpu1 = _cpu_seconds() if cfg == "plain" else sum(backend.client.run(_cpu_seconds).values())
                load1 = _loadavg()
            finally:
                backend.close()
            nulls = _nulls(out, names)
            same = True if reference is None else _same(reference, nulls)
            reference = reference or nulls
            row = {"config": cfg, "workers": 1 if cfg == "plain" else int(cfg.split(":")[1]),
                   "cluster_start_s": round(t_start, 2), "warmup_s": round(t_warm, 2), "wall_s": round(wall, 2),
                   "analyses_per_min": round(60 * len(run.computed) / wall, 2),
                   "iterations_per_s": round(len(run.computed) * args.iterations / wall, 1),
                   "computed": len(run.computed), "failed": len(run.failed), "identical_to_first": same,
                   "worker_cpu_s": round(cpu1 - cpu0, 1),
                   "iterations_per_cpu_s": round(len(run.computed) * args.iterations / max(cpu1 - cpu0, 1e-9), 1),
                   "loadavg_1min_before_after": [load0, load1]}
            report["runs"].append(row)
            print(f"{cfg:>8}: {row['wall_s']:8.1f} s  {row['analyses_per_min']:6.2f} analyses/min  "
                  f"{row['iterations_per_s']:7.1f} iterations/s  (cluster start {t_start:.1f} s, warm-up "
                  f"{t_warm:.1f} s; worker CPU {row['worker_cpu_s']:.0f} s = {row['iterations_per_cpu_s']:.1f} "
                  f"iterations per CPU-s; load {load0} -> {load1}; identical nulls: {same})", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    base = report["runs"][0]["wall_s"] if report["runs"] else None
    for row in report["runs"]:
        row["speedup_vs_first"] = round(base / row["wall_s"], 2)
    print("speed-up vs first: " + ", ".join(f"{r['config']} x{r['speedup_vs_first']}" for r in report["runs"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(r["failed"] == 0 and r["identical_to_first"] for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
