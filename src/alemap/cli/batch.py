"""``alemap batch``: many ALE meta-analyses from one coordinate database, locally or on Dask.

One analysis per title term (``--terms``) or per atlas region (``--macm-atlas``,
meta-analytic connectivity modelling: the studies with a focus in the region),
each written to ``OUTDIR/<name>/`` with its own provenance. A rerun of the same
command skips complete analyses and resumes the others. See docs/scale-out.md.

Examples::

    alemap batch --database neurosynth \\
        --coordinates data-neurosynth_version-7_coordinates.tsv.gz \\
        --metadata data-neurosynth_version-7_metadata.tsv.gz \\
        --terms "motor sequence" visuomotor --iterations 1000 -o out/
    alemap batch --database neurosynth --coordinates C.tsv.gz --metadata M.tsv.gz \\
        --macm-atlas aal --regions Precentral_L Precentral_R --scheduler local:4 -o macm/
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from alemap.cli.ale import add_backend_option, positive_int

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    """Register the subcommand."""
    p = sub.add_parser("batch", help="many ALE analyses from a database (terms, MACM), locally or on Dask",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("database")
    src.add_argument("--database", required=True, metavar="neurosynth|neuroquery|PATH",
                     help="database kind (with --coordinates/--metadata), a folder with its two tables, or a "
                          "NiMARE JSON / NeuroStore studyset / foci file")
    src.add_argument("--coordinates", type=Path, metavar="FILE", help="coordinates table (.tsv.gz)")
    src.add_argument("--metadata", type=Path, metavar="FILE", help="metadata table (.tsv.gz)")
    src.add_argument("--default-subjects", type=int, default=15,
                     help="sample size of studies without one (default 15; counted in provenance)")
    src.add_argument("--per-table", action="store_true",
                     help="one experiment per table (default: one per study, its tables pooled)")
    what = p.add_argument_group("analyses (one of)")
    sel = what.add_mutually_exclusive_group(required=True)
    sel.add_argument("--terms", nargs="+", metavar="TERM", help="one ALE per title term (whole words, any case)")
    sel.add_argument("--terms-file", type=Path, metavar="FILE", help="terms, one per line (# comments)")
    sel.add_argument("--macm-atlas", metavar="ATLAS", help="one ALE per region of aal, harvard_oxford or juelich")
    what.add_argument("--regions", nargs="+", metavar="REGION", help="with --macm-atlas: only these regions")
    what.add_argument("--min-studies", type=int, default=1, help="skip analyses with fewer studies (default 1)")
    what.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N analyses")
    what.add_argument("--dry-run", action="store_true", help="list the analyses and their studies; compute nothing")
    ale = p.add_argument_group("ALE")
    ale.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="output folder")
    ale.add_argument("--iterations", type=int, default=10000, help="Monte Carlo iterations (default 10000)")
    ale.add_argument("--seed", type=int, default=0,
                     help="batch seed (default 0); each analysis' seed is derived from it and its name")
    ale.add_argument("--cluster-forming-p", type=float, default=0.001, help="cluster-forming voxel p (default 0.001)")
    ale.add_argument("--alpha", type=float, default=0.05, help="FWE level (default 0.05)")
    ale.add_argument("--connectivity", type=int, default=6, choices=(6, 18, 26), help="cluster neighbourhood")
    ale.add_argument("--placement", default="nearest", choices=("nearest", "nimare", "truncate"),
                     help="focus-to-voxel rule (default nearest)")
    ale.add_argument("--tal2mni", default="other", choices=("other", "spm", "fsl"),
                     help="Lancaster 2007 variant for Talairach studies")
    ale.add_argument("--mask", type=Path, default=None, help="analysis mask (default MNI152 2 mm)")
    run_ = p.add_argument_group("execution")
    run_.add_argument("--scheduler", default=None, metavar="ADDRESS|local:N",
                      help="Dask scheduler address (tcp://host:8786) or scheduler file, or local:N for a local "
                           "cluster of N worker processes (default: this process, --jobs threads)")
    run_.add_argument("--scheduler-timeout", type=float, default=10.0, metavar="S",
                      help="seconds to wait for the scheduler (default 10)")
    run_.add_argument("--shard", default="auto", choices=("auto", "analyses", "iterations"),
                      help="tasks are whole analyses or batches of Monte Carlo iterations (default auto)")
    run_.add_argument("--shard-batches", type=int, default=None, metavar="K",
                      help="batches of 32 iterations per iteration shard (default: automatic)")
    add_backend_option(run_)
    run_.add_argument("--jobs", type=positive_int, default=None, help="threads without --scheduler (default: all cores)")
    run_.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=run)


def _terms(args) -> list[str]:
    from alemap.exceptions import InputError

    if args.terms:
        return list(args.terms)
    path = args.terms_file
    if not path.is_file():
        raise InputError(f"{path}: terms file not found.")
    terms = [ln.split("#", 1)[0].strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    terms = [t for t in terms if t]
    if not terms:
        raise InputError(f"{path}: no terms (one per line; '#' starts a comment).")
    return terms


def run(args) -> int:
    """Entry point of ``alemap batch``."""
    from alemap.designs.batch import macm_batch, run_batch, terms_batch
    from alemap.exceptions import ParameterError
    from alemap.io.databases import read_database

    if args.regions and not args.macm_atlas:
        raise ParameterError("--regions needs --macm-atlas.")
    kw = {"default_subjects": args.default_subjects, "tal2mni": args.tal2mni}
    db = read_database(args.database, args.coordinates, args.metadata, **kw)
    if not args.quiet:
        c = db.counts
        dropped = ", ".join(f"{k} {v}" for k, v in c.items()
                            if k in ("rows_malformed", "foci_without_metadata", "studies_unknown_space") and v)
        print(f"alemap: {db.name}: {db.n_studies} studies, {db.n_foci} foci"
              f"{' (dropped: ' + dropped + ')' if dropped else ''}; "
              f"{c.get('studies_default_subjects', 0)} studies given {db.default_subjects} subjects "
              f"(no sample size); read in {c.get('seconds', 0):.1f} s", file=sys.stderr)
    params = {"iterations": args.iterations, "cluster_forming_p": args.cluster_forming_p, "alpha": args.alpha,
              "connectivity": args.connectivity, "placement": args.placement}
    if args.mask is not None:
        params["mask"] = str(args.mask)
    common = {"seed": args.seed, "per_table": args.per_table, "min_studies": args.min_studies, **params}
    if args.macm_atlas:
        batch = macm_batch(db, args.macm_atlas, args.regions, **common)
    else:
        batch = terms_batch(db, _terms(args), **common)
    if args.dry_run:
        shown = batch.analyses[: args.limit] if args.limit else batch.analyses
        for a in shown:
            foci = int(db.foci_counts[a.studies].sum())
            print(f"{a.name}\t{a.n_studies} studies\t{foci} foci\tseed {batch.seed_of(a.name)}")
        return 0
    result = run_batch(batch, args.output, scheduler=args.scheduler, jobs=args.jobs or os.cpu_count() or 1,
                       shard=args.shard, shard_batches=args.shard_batches, limit=args.limit, quiet=args.quiet,
                       timeout=args.scheduler_timeout, null_backend=args.backend)
    if not args.quiet:
        print(f"alemap: {len(result.computed)} computed, {len(result.skipped)} skipped, {len(result.failed)} failed "
              f"in {result.seconds:.1f} s; results in {args.output} (summary: batch.json)", file=sys.stderr)
    if result.failed:
        print(f"alemap: error: {len(result.failed)} analysis(es) failed ({', '.join(result.failed[:5])}"
              f"{' ...' if len(result.failed) > 5 else ''}); see {args.output / 'batch.json'}. Rerun the same "
              "command to retry them (complete analyses are skipped).", file=sys.stderr)
        return 1
    return 0
