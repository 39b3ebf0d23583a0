"""``alemap ale INPUT -o OUTDIR``: one ALE analysis with FWE correction."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["add_parser", "run", "add_ale_options", "estimator_from_args", "run_analysis"]

CHECKPOINT_NAME = ".alemap-null-checkpoint.npz"


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
    p.add_argument("--jobs", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")


def add_parser(sub) -> None:
    """Register the subcommand."""
    p = sub.add_parser("ale", help="run one ALE meta-analysis", description=__doc__)
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="Sleuth text, CSV/TSV/XLSX table or NiMARE JSON")
    add_ale_options(p)
    p.set_defaults(run=run)


def estimator_from_args(args):
    """An :class:`alemap.ALE` configured from parsed options."""
    from alemap.estimator import ALE

    return ALE(
        iterations=args.iterations, seed=args.seed, cluster_forming_p=args.cluster_forming_p,
        alpha=args.alpha, connectivity=args.connectivity, placement=args.placement,
        tal2mni=args.tal2mni, outside_mask=args.outside_mask, cluster_stat=args.cluster_stat,
        jobs=args.jobs or os.cpu_count() or 1, mask=args.mask, quiet=args.quiet,
    )


def run_analysis(inputs, args) -> int:
    """Fit, save, clean the checkpoint and print a summary."""
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT_NAME
    result = estimator_from_args(args).fit(inputs, checkpoint=ckpt)
    result.save(out)
    if ckpt.exists():
        ckpt.unlink()
    if not args.quiet:
        _summary(result, out)
    if not args.no_report:
        from alemap.cli.report import write_report

        write_report(out, args.quiet)
    return 0


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
