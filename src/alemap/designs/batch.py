"""Batches: many ALE meta-analyses from one database, described compactly, with resume.

A :class:`Batch` is a list of analyses, each a selection of studies of a
:class:`~alemap.io.databases.Database`:

* :func:`terms_batch`: one ALE per title term (the studies whose title contains it);
* :func:`macm_batch`: meta-analytic connectivity modelling, one ALE per atlas
  region: the studies reporting at least one focus inside the region;
* :func:`selections_batch`: an explicit mapping name -> selected studies.

:func:`run_batch` writes each analysis to ``OUTDIR/<name>/`` with the standard
ALE outputs (:meth:`alemap.result.ALEResult.save`) and its own
``provenance.json``, written last, which holds the analysis key (SHA-256 of the
alemap version, the analysis' kind, label and parameters, its seed and its
experiments' foci and sample sizes) and the database's import record. On a
rerun, an analysis whose folder holds every output and the same key is
skipped; any other is recomputed, resuming its Monte Carlo null from the
checkpoint (``.alemap-null-checkpoint.npz``) or the finished shards
(``.alemap-shards/``). ``OUTDIR/batch.json`` lists the analyses, their seeds
and their status.

Seeds
-----
Analysis ``name`` of a batch with seed ``s`` uses the seed::

    h = int.from_bytes(sha256(name.encode("utf-8")).digest()[:8], "big")
    seed = SeedSequence(s, spawn_key=(h,)).generate_state(1, uint32)[0]

(:func:`analysis_seed`). It depends only on the batch seed and the analysis
name, not on the order of analyses, on ``--limit``, on the number of workers
or on how work is sharded, so an analysis gives the same result in any batch
with the same seed; renaming an analysis changes its seed. The derived seed is
written to the analysis' provenance (``parameters.seed``), and within the
analysis the usual contract holds: batch ``b`` of 32 iterations draws from
``SeedSequence(seed, spawn_key=(b,))``.

Execution
---------
Work goes to a backend (:mod:`alemap.distributed.dask_backend`): this
process, a local Dask cluster (``local:N``) or an existing one. It is sharded
either as whole analyses (one task per analysis, run on a worker, which writes
the analysis folder: with a remote cluster ``OUTDIR`` must be on a file system
the workers share) or as Monte Carlo iterations (the observed maps are
computed here, the null's batches are tasks whose maxima come back here and are
checkpointed per shard; :mod:`alemap.distributed.shards`). ``shard="auto"``
shards iterations when there are fewer analyses left than worker slots.
Either way the outputs are identical to a single-process run with the same seed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from alemap.designs.runner import _ale_files, _complete  # one completeness rule for projects and batches
from alemap._version import __version__
from alemap.data.experiment_set import ExperimentSet
from alemap.estimator import ALE
from alemap.exceptions import ParameterError
from alemap.inference.backends import BACKENDS, backend_label, resolve_backend
from alemap.io.atomic import write_json
from alemap.io.databases import Database

#: Seconds between rewrites of ``batch.json`` while a batch runs.
SUMMARY_EVERY_S = 5.0

__all__ = [
    "Batch",
    "BatchAnalysis",
    "BatchRun",
    "analysis_seed",
    "safe_name",
    "terms_batch",
    "macm_batch",
    "selections_batch",
    "run_batch",
    "SEED_RULE",
]

CHECKPOINT = ".alemap-null-checkpoint.npz"
SHARD_MODES = ("auto", "analyses", "iterations")
SEED_RULE = ("seed of analysis NAME = SeedSequence(batch_seed, spawn_key=(int.from_bytes(sha256(NAME)[:8], 'big'),))"
             ".generate_state(1, uint32)[0]")
#: Fewer experiments than this get a note (Eickhoff et al. 2016 recommend 17-20 for adequate power).
MIN_RECOMMENDED = 17
_PARAMS = ("iterations", "cluster_forming_p", "alpha", "connectivity", "placement", "tal2mni", "outside_mask",
           "cluster_stat", "fdr_q", "mask")


def analysis_seed(batch_seed: int, name: str) -> int:
    """The seed of analysis ``name`` in a batch seeded ``batch_seed`` (see the module docstring)."""
    if isinstance(batch_seed, bool) or not isinstance(batch_seed, (int, np.integer)) or batch_seed < 0:
        raise ParameterError(f"The batch seed must be a non-negative int, got {batch_seed!r}.")
    h = int.from_bytes(hashlib.sha256(str(name).encode("utf-8")).digest()[:8], "big")
    return int(np.random.SeedSequence(int(batch_seed), spawn_key=(h,)).generate_state(1, np.uint32)[0])


def safe_name(text: str) -> str:
    """A folder name for an analysis: letters, digits, ``.``, ``_`` and ``-`` (runs of others -> ``_``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._-")
    if not name:
        raise ParameterError(f"{text!r} gives an empty folder name; use letters or digits.")
    return name[:120]


@dataclass(frozen=True, eq=False)
class BatchAnalysis:
    """One analysis of a batch: a named selection of studies."""

    name: str
    kind: str
    label: str
    studies: np.ndarray

    @property
    def n_studies(self) -> int:
        """Studies selected."""
        return int(self.studies.shape[0])


@dataclass(eq=False)
class Batch:
    """Many analyses of one database with shared parameters and a batch seed."""

    database: Database
    analyses: list[BatchAnalysis]
    seed: int = 0
    params: dict = field(default_factory=dict)
    per_table: bool = False
    min_studies: int = 1
    description: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.params = _check_params(self.params)
        names = [a.name for a in self.analyses]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ParameterError(f"Two analyses of the batch have the folder name {dup[0]!r}; give distinct names.")
        analysis_seed(self.seed, "")  # validates the seed
        if int(self.min_studies) < 1:
            raise ParameterError(f"min_studies must be >= 1, got {self.min_studies!r}.")

    def seed_of(self, name: str) -> int:
        """The analysis' seed (:func:`analysis_seed`)."""
        return analysis_seed(self.seed, name)

    def experiments(self, analysis: BatchAnalysis | str) -> ExperimentSet:
        """The experiments of an analysis."""
        a = self[analysis] if isinstance(analysis, str) else analysis
        return self.database.to_experiment_set(a.studies, per_table=self.per_table)

    def __getitem__(self, name: str) -> BatchAnalysis:
        for a in self.analyses:
            if a.name == name:
                return a
        raise KeyError(name)

    def __len__(self) -> int:
        return len(self.analyses)


def _check_params(params: Mapping) -> dict:
    params = dict(params)
    bad = sorted(set(params) - set(_PARAMS))
    if bad:
        raise ParameterError(f"Unknown ALE parameter(s) {bad} for a batch; allowed: {list(_PARAMS)}.")
    if params.get("mask") is not None:
        params["mask"] = str(Path(params["mask"]).resolve())
    # validate now, before anything runs
    from alemap._validation import validate
    from alemap.estimator import _CONSTRAINTS

    est = ALE(**params)
    validate("ALE", _CONSTRAINTS, {k: getattr(est, k) for k in _CONSTRAINTS})
    return params


def terms_batch(database: Database, terms: Sequence[str], *, seed: int = 0, per_table: bool = False,
                min_studies: int = 1, regex: bool = False, **params) -> Batch:
    """One ALE per title term: the studies whose title contains the term (whole words, any case).

    The analysis of ``"motor sequence"`` is named ``motor_sequence``."""
    if isinstance(terms, str):
        terms = [terms]
    terms = [t for t in dict.fromkeys(str(t).strip() for t in terms) if t]
    if not terms:
        raise ParameterError("A terms batch needs at least one term.")
    analyses = [BatchAnalysis(safe_name(t), "term", t, database.select_title(t, regex=regex)) for t in terms]
    return Batch(database, analyses, seed=seed, params=params, per_table=per_table, min_studies=min_studies,
                 description={"kind": "terms", "terms": terms, "regex": regex})


def macm_batch(database: Database, atlas="aal", regions: Sequence[str] | None = None, *, seed: int = 0,
               per_table: bool = False, min_studies: int = 1, **params) -> Batch:
    """Meta-analytic connectivity modelling: one ALE per atlas region.

    Each analysis pools the studies with at least one focus inside the region
    (on the analysis grid, with the analysis' focus placement; for
    probabilistic atlases the maximum-probability labels). All foci are placed
    once and looked up in the atlas (:meth:`Database.region_studies`).
    Analyses are named ``macm_<region>``.
    """
    from alemap.space.atlases import Atlas, load_atlas
    from alemap.space.grid import load_grid

    grid = load_grid(params["mask"]) if params.get("mask") else None
    at = atlas if isinstance(atlas, Atlas) else load_atlas(str(atlas), grid)
    sel = database.region_studies(at, regions, placement=params.get("placement", "nearest"))
    analyses = [BatchAnalysis(safe_name(f"macm_{r}"), "macm", r, idx) for r, idx in sel.items()]
    return Batch(database, analyses, seed=seed, params=params, per_table=per_table, min_studies=min_studies,
                 description={"kind": "macm", "atlas": at.name, "atlas_source": at.source, "licence": at.licence,
                              "regions": list(sel)})


def selections_batch(database: Database, selections: Mapping[str, np.ndarray], *, seed: int = 0,
                     per_table: bool = False, min_studies: int = 1, **params) -> Batch:
    """One ALE per entry of ``selections`` (name -> study indices or boolean mask)."""
    analyses = [BatchAnalysis(safe_name(n), "selection", str(n), database._index(idx)) for n, idx in selections.items()]
    return Batch(database, analyses, seed=seed, params=params, per_table=per_table, min_studies=min_studies,
                 description={"kind": "selections"})


@dataclass
class BatchRun:
    """Outcome of :func:`run_batch`."""

    outdir: Path
    status: dict = field(default_factory=dict)
    computed: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    seconds: float = 0.0
    execution: dict = field(default_factory=dict)
    iterations_computed: int = 0

    @property
    def ok(self) -> bool:
        """No analysis failed."""
        return not self.failed


# ----------------------------------------------------------------- helpers
def _key(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str(p.dtype).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()




def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def _finish(result, job: dict, folder: Path, execution: dict) -> dict:
    """Provenance, outputs (provenance last), checkpoint removal; returns the status record."""
    prov = result.provenance
    prov.update(
        analysis=job["name"], analysis_key=job["key"], inputs=job["inputs"],
        batch={"kind": job["kind"], "label": job["label"], "batch_seed": job["batch_seed"], "seed": job["seed"],
               "seed_rule": SEED_RULE, "per_table": job["per_table"], "studies_selected": job["n_studies"],
               "studies_default_subjects": job["n_default"], "description": job["description"]},
        database=job["database"], execution=execution, notes=job["notes"],
    )
    (folder / "provenance.json").unlink(missing_ok=True)  # a stale one must not mark mixed files complete
    result.save(folder)
    (folder / CHECKPOINT).unlink(missing_ok=True)
    return {"status": f"{len(result.clusters)} significant cluster(s)", "clusters": int(len(result.clusters)),
            "experiments": int(result.provenance["counts"]["experiments_used"])}


def run_analysis_job(job: dict) -> dict:
    """Run one whole analysis and write its folder (a task: runs here or on a Dask worker).

    Idempotent: a complete folder with the same key is left alone; an
    interrupted null resumes from its checkpoint; files are written atomically.
    """
    folder = Path(job["folder"])
    if _complete(folder, _ale_files(job["params"]), job["key"]):
        return {"status": "skipped (complete)", "skipped": True}
    t0 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    # the GPU only in this process, one analysis after another (run_batch's null_backend); Dask workers: CPU
    est = ALE(seed=job["seed"], jobs=job["jobs"], quiet=True, backend=job.get("null_backend", "cpu"), **job["params"])
    with _warnings_as_notes(job):
        result = est.fit(job["experiments"], checkpoint=folder / CHECKPOINT)
    out = _finish(result, job, folder, dict(job["execution"], shard="analyses"))
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


@contextmanager
def _warnings_as_notes(job: dict):
    """Warnings of a fit (e.g. duplicated experiments, common in automatically extracted
    databases) go into the analysis' provenance notes instead of a worker's log."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        text = str(w.message)
        if text not in job["notes"]:
            job["notes"].append(text)


class _ShardedALE(ALE):
    """ALE whose Monte Carlo null runs as checkpointed shards on a backend."""

    def __init__(self, *, null_runner: Callable, **kwargs):
        super().__init__(**kwargs)
        self._null_runner = null_runner

    def _monte_carlo(self, plan, placed, grid, checkpoint):
        return self._null_runner(plan, placed, grid)


def _shard_batches(n_iterations: int, n_workers: int, requested: int | None) -> int:
    from alemap.distributed.shards import n_batches

    if requested is not None:
        if int(requested) < 1:
            raise ParameterError(f"shard_batches must be >= 1, got {requested!r}.")
        return int(requested)
    return int(min(16, max(1, math.ceil(n_batches(n_iterations) / (4 * max(1, n_workers))))))


def _run_sharded(job: dict, backend, shard_batches: int | None, execution: dict) -> dict:
    """One analysis with its null sharded over the backend (observed maps computed here)."""
    from alemap.distributed.shards import ShardStore, compute_shard, merge_shard, null_spec, plan_shards
    from alemap.inference.checkpoint import NullCheckpoint

    folder = Path(job["folder"])
    if _complete(folder, _ale_files(job["params"]), job["key"]):
        return {"status": "skipped (complete)", "skipped": True}
    t0 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    n_iter = int(job["params"].get("iterations", 10000))
    info: dict = {}

    def null_runner(plan, placed, grid):
        key = NullCheckpoint.key_for(plan, n_iter, job["seed"], grid)
        store = ShardStore(folder, key, n_iter)
        done, maxima, used = store.load()
        size = _shard_batches(n_iter, backend.n_workers, shard_batches)
        todo = plan_shards(done, size)
        spec = null_spec(plan, placed.experiments.n_subjects, grid, n_iter, job["seed"], key)
        info.update(store=store, resumed_shards=used, shards=len(todo), shard_batches=size)
        calls = [(spec, b0, b1) for b0, b1 in todo]
        names = [f"{job['name']}-b{b0}-{b1}" for b0, b1 in todo]
        for i, err, res in backend.map_unordered(compute_shard, calls, names):
            if err is not None:
                raise err
            store.save(res)
            merge_shard(maxima, res, n_iter)
            if job.get("on_shard") is not None:
                job["on_shard"](job["name"], res)
        return maxima

    est = _ShardedALE(null_runner=null_runner, seed=job["seed"], jobs=1, quiet=True, backend="cpu", **job["params"])
    with _warnings_as_notes(job):
        result = est.fit(job["experiments"])
    out = _finish(result, job, folder, dict(execution, shard="iterations", shard_batches=info.get("shard_batches"),
                                             shards_resumed=info.get("resumed_shards", 0)))
    if "store" in info:
        info["store"].remove()
    out["seconds"] = round(time.perf_counter() - t0, 3)
    if info.get("resumed_shards"):
        out["status"] += f" (resumed {info['resumed_shards']} shard(s))"
    return out


def _database_inputs(db: Database) -> list[dict]:
    from alemap.reporting.provenance import file_sha256

    out = []
    for role, path in db.sources.items():
        p = Path(path)
        out.append({"role": role, "path": str(path), "sha256": file_sha256(p) if p.is_file() else None})
    return out


def run_batch(batch: Batch, outdir: str | Path, *, scheduler: str | None = None, jobs: int = 1,
              shard: str = "auto", shard_batches: int | None = None, limit: int | None = None,
              quiet: bool = False, timeout: float | None = None, backend=None,
              on_shard: Callable | None = None, null_backend: str = "cpu") -> BatchRun:
    """Run every analysis of ``batch`` into ``outdir/<name>/`` (see the module docstring).

    Parameters
    ----------
    scheduler : str, optional
        ``None``: this process with ``jobs`` threads; ``"local:N"``: a local
        Dask cluster of N worker processes; an address or scheduler file: an
        existing Dask cluster (:func:`alemap.distributed.get_backend`).
    jobs : int
        Threads in this process (without a scheduler).
    shard : {"auto", "analyses", "iterations"}
        Tasks are whole analyses, or batches of Monte Carlo iterations of one
        analysis; ``auto`` shards iterations when fewer analyses are left than
        worker slots.
    shard_batches : int, optional
        Seeded batches of 32 iterations per iteration shard (default: about
        four shards per worker slot, at most 16 batches).
    limit : int, optional
        Only the first ``limit`` analyses.
    timeout : float, optional
        Seconds to wait for a scheduler (default 10).
    backend : optional
        A backend from :func:`alemap.distributed.get_backend` to use (and not close).
    on_shard : callable, optional
        Called as ``on_shard(analysis_name, shard)`` after each iteration shard
        is checkpointed (progress hooks, tests).
    null_backend : {"cpu", "gpu", "auto"}
        Engine of the Monte Carlo nulls (``ALE(backend=...)``). The GPU runs
        them in this process only, whole analyses one after another (``auto``
        takes it when one can be used); with a Dask scheduler the workers use
        their CPUs (asking for ``gpu`` there is an error). Results do not
        depend on it (masses up to float rounding).
    """
    from alemap.distributed.dask_backend import DEFAULT_TIMEOUT_S, get_backend

    if shard not in SHARD_MODES:
        raise ParameterError(f"shard must be one of {SHARD_MODES}, got {shard!r}.")
    if null_backend not in BACKENDS:
        raise ParameterError(f"null_backend must be one of {BACKENDS}, got {null_backend!r}.")
    if null_backend == "gpu":  # said before any work
        if scheduler is not None or (backend is not None and backend.kind != "local"):
            raise ParameterError("The GPU engine (--backend gpu) runs the Monte Carlo in this process; with a Dask "
                                 "scheduler the workers run it on their CPUs. Drop --scheduler, or use --backend cpu.")
        if shard == "iterations":
            raise ParameterError("With the GPU engine (--backend gpu) whole analyses run one after another on the "
                                 "GPU; iteration shards spread CPU work over workers. Use --shard auto or analyses.")
        resolve_backend("gpu")  # no CuPy or no device: the backends' message
    if limit is not None and int(limit) < 1:
        raise ParameterError(f"limit must be >= 1, got {limit!r}.")
    t_start = time.perf_counter()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    analyses = batch.analyses[: int(limit)] if limit is not None else list(batch.analyses)
    db = batch.database
    db_summary = db.summary()
    inputs = _database_inputs(db)
    run = BatchRun(outdir=outdir)
    jobs_todo: list[dict] = []
    record: dict = {}
    default_flag = db.studies["subjects_default"].to_numpy(dtype=bool) if "subjects_default" in db.studies else None
    for a in analyses:
        seed = batch.seed_of(a.name)
        entry = {"kind": a.kind, "label": a.label, "studies": a.n_studies, "seed": seed}
        record[a.name] = entry
        if a.n_studies < batch.min_studies:
            entry["status"] = f"skipped ({a.n_studies} studies < min_studies {batch.min_studies})"
            run.status[a.name] = entry["status"]
            run.skipped.append(a.name)
            continue
        exps = batch.experiments(a)
        entry["experiments"], entry["foci"] = exps.n_experiments, exps.n_foci
        key = _key(__version__, "batch-ale", a.name, a.kind, a.label, batch.params, seed, batch.per_table,
                   list(exps.names), exps.xyz, exps.n_subjects)
        folder = outdir / a.name
        if _complete(folder, _ale_files(batch.params), key):
            entry["status"] = "skipped (complete)"
            run.status[a.name] = entry["status"]
            run.skipped.append(a.name)
            continue
        notes = []
        if exps.n_experiments < MIN_RECOMMENDED:
            notes.append(f"only {exps.n_experiments} experiments (fewer than {MIN_RECOMMENDED}, the minimum Eickhoff "
                         "et al. 2016 recommend for adequate power; results may be driven by single experiments)")
        n_default = int(default_flag[a.studies].sum()) if default_flag is not None else 0
        if n_default:
            notes.append(f"{n_default} of {a.n_studies} studies report no sample size; each was given "
                         f"{db.default_subjects} subjects (the database default), which sets its kernel width")
        jobs_todo.append({
            "name": a.name, "kind": a.kind, "label": a.label, "folder": str(folder.resolve()), "key": key,
            "seed": seed, "batch_seed": int(batch.seed), "params": dict(batch.params), "experiments": exps,
            "per_table": batch.per_table, "n_studies": a.n_studies, "n_default": n_default, "notes": notes,
            "database": db_summary, "inputs": inputs, "description": batch.description,
        })
    own = backend is None
    if own and jobs_todo:
        backend = get_backend(scheduler, jobs=jobs, timeout=DEFAULT_TIMEOUT_S if timeout is None else timeout)
    execution = backend.describe() if backend is not None else {"backend": "none (nothing to compute)"}
    engine = "cpu"
    if jobs_todo and backend.kind == "local" and null_backend != "cpu":
        engine = resolve_backend(null_backend)
    execution = dict(execution, null_backend=backend_label(engine))
    mode = shard
    if engine == "gpu":
        mode = "analyses"  # one GPU: whole analyses, one after another
    elif mode == "auto":
        mode = "iterations" if (jobs_todo and len(jobs_todo) < backend.n_workers
                                and int(batch.params.get("iterations", 10000)) > 0) else "analyses"
    run.execution = dict(execution, shard=mode)
    manifest = {
        "alemap": __version__, "database": db_summary, "inputs": inputs, "description": batch.description,
        "seed": int(batch.seed), "seed_rule": SEED_RULE, "parameters": batch.params, "per_table": batch.per_table,
        "min_studies": batch.min_studies, "execution": run.execution, "analyses": record,
    }
    write_json(outdir / "batch.json", manifest)
    last_write = [time.monotonic()]

    def progress_written() -> None:  # batch.json follows the run (at most every 5 s), so a killed job's is current
        if time.monotonic() - last_write[0] >= SUMMARY_EVERY_S:
            write_json(outdir / "batch.json", manifest)
            last_write[0] = time.monotonic()

    n_total = len(analyses)
    n_done = len(run.skipped)
    for name in run.skipped:
        _say(quiet, f"[{analyses.index(batch[name]) + 1}/{n_total}] {name}: {run.status[name]}")
    if jobs_todo:
        _say(quiet, f"alemap batch: {len(jobs_todo)} analyses to compute ({n_done} skipped) on "
                    f"{_where(execution)}, sharded by {mode}")
    try:
        if not jobs_todo:
            pass
        elif mode == "analyses":
            for job in jobs_todo:
                job["jobs"] = backend.jobs if backend.kind == "local" else 1
                job["execution"] = execution
                job["null_backend"] = engine
            results = backend.map_unordered(run_analysis_job, [(j,) for j in jobs_todo],
                                            [j["name"] for j in jobs_todo], parallel=False)
            for i, err, res in results:
                n_done += 1
                _record(run, record, jobs_todo[i], err, res, n_done, n_total, quiet)
                progress_written()
        else:
            for job in jobs_todo:
                job["on_shard"] = on_shard
                try:
                    res, err = _run_sharded(job, backend, shard_batches, execution), None
                except Exception as exc:  # one analysis failing does not stop the batch
                    res, err = None, exc
                n_done += 1
                job.pop("on_shard", None)
                _record(run, record, job, err, res, n_done, n_total, quiet)
                progress_written()
    finally:
        if own and backend is not None:
            backend.close()
        run.seconds = round(time.perf_counter() - t_start, 3)
        manifest["seconds"] = run.seconds
        write_json(outdir / "batch.json", manifest)
    return run


def _where(execution: dict) -> str:
    if execution.get("backend") == "local":
        return f"this process ({execution['threads']} thread(s))"
    return f"Dask {execution.get('scheduler')} ({execution.get('worker_threads')} worker thread(s))"


def _record(run: BatchRun, record: dict, job: dict, err, res, k: int, n: int, quiet: bool) -> None:
    name = job["name"]
    if err is not None:
        msg = str(err).splitlines()[0] if str(err) else ""
        status = f"failed: {type(err).__name__}: {msg}"
        run.failed.append(name)
    elif res.get("skipped"):
        status = res["status"]
        run.skipped.append(name)
    else:
        status = res["status"]
        run.computed.append(name)
        run.iterations_computed += int(job["params"].get("iterations", 10000))
        record[name]["seconds"] = res.get("seconds")
    run.status[name] = status
    record[name]["status"] = status
    _say(quiet, f"[{k}/{n}] {name}: {status}")
