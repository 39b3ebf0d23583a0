"""``alemap ale INPUT -o OUTDIR``: one ALE analysis with FWE correction."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["add_parser", "run", "add_ale_options", "estimator_from_args", "run_analysis", "memory_size",
           "add_max_memory_option", "add_backend_option", "positive_int", "INCOMPLETE_MARKERS"]

CHECKPOINT_NAME = ".alemap-null-checkpoint.npz"
#: Files that say "this folder holds a finished run"; removed before a new run overwrites the folder's outputs.
INCOMPLETE_MARKERS = ("provenance.json", "report.html")


def memory_size(text: str) -> int:
    """argparse type of ``--max-memory``: bytes of ``2G``, ``512M``, ``1.5GiB`` ..."""
    from alemap._limits import parse_size

    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_max_memory_option(p: argparse.ArgumentParser) -> None:
    """``--max-memory SIZE``: shared by ``ale`` and ``run``."""
    p.add_argument(
        "--max-memory", type=memory_size, default=None, metavar="SIZE",
        help="memory cap, e.g. 2G or 512M (powers of 1024): --jobs is lowered to fit, or the run stops before "
             "computing with the memory it needs (default: the memory available)",
    )


def positive_int(text: str) -> int:
    """argparse type for counts such as ``--jobs``: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value} (omit the option to use every core)")
    return value


def add_backend_option(p: argparse.ArgumentParser) -> None:
    """``--backend auto|cpu|gpu``: shared by ``ale``, ``demo`` and ``run``."""
    from alemap.inference.backends import BACKENDS

    p.add_argument(
        "--backend", default="auto", choices=BACKENDS,
        help="engine of the Monte Carlo nulls (ALE's cluster-FWE null, C-SALE's voxel-wise null): cpu (numba, "
             "--jobs threads), gpu (CuPy: pip install \"alemap[gpu]\" and a CUDA device) or auto (the GPU when one "
             "can be used; default)",
    )


def add_ale_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``ale`` and ``demo``."""
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="output folder")
    p.add_argument("--iterations", type=int, default=10000, help="Monte Carlo iterations (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="root random seed (default 0)")
    p.add_argument("--cluster-forming-p", type=float, default=0.001, help="cluster-forming voxel p (default 0.001)")
    p.add_argument("--alpha", type=float, default=0.05, help="FWE level (default 0.05)")
    p.add_argument("--connectivity", type=int, default=6, choices=(6, 18, 26), help="cluster neighbourhood (default 6)")
    p.add_argument("--placement", default="nearest", choices=("nearest", "nimare", "truncate"), help="focus-to-voxel rule (default nearest)")
    p.add_argument("--tal2mni", default="other", choices=("other", "spm", "fsl"), help="Lancaster 2007 variant")
    p.add_argument("--outside-mask", default="keep", choices=("keep", "drop"), help="in-grid foci outside the mask")
    p.add_argument("--cluster-stat", default="size", choices=("size", "mass"), help="statistic for z_cfwe")
    p.add_argument("--mask", type=Path, default=None, help="analysis mask (default MNI152 2 mm)")
    p.add_argument("--jobs", type=positive_int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--sequential-stop", type=float, default=None, metavar="REL_WIDTH",
                   help="stop the Monte Carlo early once the 95%% confidence intervals of the FWE thresholds are "
                        "narrower than REL_WIDTH (e.g. 0.05) of the thresholds; checked every 1024 iterations "
                        "from 2048 (default: off, run all --iterations)")
    add_backend_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.add_argument("--fail-safe-n", action="store_true",
                   help="also compute each cluster's fail-safe N (Acar et al. 2018; slow: many refits)")
    p.add_argument("--fsn-iterations", type=int, default=500, help="Monte Carlo iterations per fail-safe N refit")


def add_parser(sub) -> None:
    """Register the subcommand."""
    p = sub.add_parser("ale", help="run one ALE meta-analysis", description=__doc__)
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="Sleuth text, CSV/TSV/XLSX table or NiMARE JSON")
    add_ale_options(p)
    add_max_memory_option(p)
    p.set_defaults(run=run)


def estimator_from_args(args):
    """An :class:`alemap.ALE` configured from parsed options."""
    from alemap.estimator import ALE

    return ALE(
        iterations=args.iterations, seed=args.seed, cluster_forming_p=args.cluster_forming_p,
        alpha=args.alpha, connectivity=args.connectivity, placement=args.placement,
        tal2mni=args.tal2mni, outside_mask=args.outside_mask, cluster_stat=args.cluster_stat,
        jobs=args.jobs or os.cpu_count() or 1, mask=args.mask, quiet=args.quiet,
        backend=getattr(args, "backend", "auto"), sequential_stop=getattr(args, "sequential_stop", None),
    )


def run_analysis(inputs, args) -> int:
    """Check inputs and resources, fit, save, clean the checkpoint and print a summary.

    Before anything is computed: the inputs are read (errors name file and
    line), the output folder must be writable with room for the outputs, and
    the memory estimate must fit ``--max-memory`` (or the memory available),
    lowering ``--jobs`` if needed (:mod:`alemap._limits`). Temporary files of
    killed runs are removed, and the previous run's ``provenance.json`` (the
    mark of a finished folder) is removed before its files are overwritten.
    """
    from alemap._limits import check_writable, preflight
    from alemap.io import load_experiments
    from alemap.io.atomic import remove_stale_temps

    out = Path(args.output)
    experiments = load_experiments(inputs)
    check_writable(out)
    remove_stale_temps(out, depth=1)
    ckpt = out / CHECKPOINT_NAME
    estimator = estimator_from_args(args)
    estimator.jobs = preflight(
        experiments, estimator._grid(), jobs=estimator.jobs, iterations=args.iterations, outdir=out,
        max_memory=getattr(args, "max_memory", None), report=not args.no_report, quiet=args.quiet, full_ma=False,
    )
    result = estimator.fit(inputs, checkpoint=ckpt)
    for marker in INCOMPLETE_MARKERS:
        (out / marker).unlink(missing_ok=True)
    result.save(out)
    if ckpt.exists():
        ckpt.unlink()
    if getattr(args, "fail_safe_n", False) and len(result.clusters):
        _write_fail_safe_n(result, out, args)
    if not args.quiet:
        _summary(result, out)
    if not args.no_report:
        from alemap.cli.report import write_report

        write_report(out, args.quiet)
    return 0


def _write_fail_safe_n(result, out: Path, args) -> None:
    """Add fail-safe N columns to ``robustness.tsv`` (Acar et al. 2018)."""
    import pandas as pd

    from alemap.io.atomic import write_text
    from alemap.reporting.robustness import fail_safe_n

    table = pd.read_csv(out / "robustness.tsv", sep="\t")
    fsn = [fail_safe_n(result, int(c), iterations=args.fsn_iterations, seed=args.seed,
                       jobs=args.jobs or os.cpu_count() or 1) for c in table["cluster"]]
    table["fail_safe_n"] = [f.fsn for f in fsn]
    table["fail_safe_n_censored"] = [f.censored for f in fsn]
    table["robust_by_rosenthal"] = [f.robust_by_rosenthal for f in fsn]
    prov = (out / "provenance.json").read_text()
    (out / "provenance.json").unlink()  # the folder is incomplete while robustness.tsv changes
    write_text(out / "robustness.tsv", table.to_csv(sep="\t", index=False, float_format="%.6g"))
    write_text(out / "provenance.json", prov)


def _summary(result, out: Path) -> None:
    c = result.provenance["counts"]
    print(
        f"alemap: {c['experiments_used']} experiments, {c['foci_used']} foci, "
        f"{c['subjects_used']} subjects; {len(result.clusters)} significant cluster(s) "
        f"(cluster-level FWE p < {result.provenance['parameters']['alpha']}).",
        file=sys.stderr,
    )
    if len(result.clusters):
        cols = ["cluster", "voxels", "peak_x", "peak_y", "peak_z", "peak_ale", "p_fwe_size"]
        print(result.clusters[cols].to_string(index=False), file=sys.stderr)
    n_ex = len(result.provenance["excluded_foci"])
    if n_ex:
        print(f"alemap: {n_ex} focus/foci excluded; see provenance.json.", file=sys.stderr)
    print(f"alemap: results in {out}", file=sys.stderr)


def run(args) -> int:
    """Entry point of ``alemap ale``."""
    return run_analysis([str(p) for p in args.inputs], args)
