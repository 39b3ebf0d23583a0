"""Run every analysis of a project, each into its own folder, with resume.

Order: main effects (ALE) first, then contrasts and conjunctions, which reuse
the main effects' results. Everything that can be checked is checked before
the first computation: groups resolve and are non-empty, contrasts compare
disjoint groups on one mask, names are safe folder names.

Resume: each analysis folder gets ``provenance.json`` last, holding a key (the
SHA-256 of the analysis spec, its experiments and the keys of what it
depends on). On a rerun, an analysis whose folder holds every expected file
and the same key is skipped; any other is (re)computed, and an interrupted
Monte Carlo null resumes from its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from alemap._version import __version__
from alemap.data.experiment_set import ExperimentSet
from alemap.designs.conjunction import conjunction
from alemap.designs.contrast import run_contrast
from alemap.designs.groups import pool_by_study, select_group, studies_with_several_experiments
from alemap.designs.project import Project, ProjectError
from alemap.estimator import ALE
from alemap.io import load_experiments
from alemap.io.atomic import write_json, write_nifti, write_text
from alemap.reporting.provenance import build_provenance, file_sha256, library_versions
from alemap.result import MAP_FILES

__all__ = ["run_project", "ProjectRun"]

CHECKPOINT = ".alemap-null-checkpoint.npz"
ALE_FILES = tuple(MAP_FILES[k] for k in ("ale", "p", "z", "z_vfwe", "z_cfwe")) + ("clusters.tsv", "null.npz")
CONTRAST_FILES = ("diff.nii.gz", "z_AgtB.nii.gz", "z_BgtA.nii.gz", "z_contrast.nii.gz", "clusters.tsv")
CONJUNCTION_FILES = ("z_conjunction.nii.gz", "clusters.tsv")
CSALE_FILES = ("ale.nii.gz", "p.nii.gz", "z.nii.gz", "z_csale.nii.gz", "base_rate.nii.gz", "clusters.tsv")


@dataclass
class _MainEffect:
    """What contrasts and conjunctions need from a main effect."""

    grid: object
    experiments: ExperimentSet
    ijk: np.ndarray
    maps: dict


@dataclass
class ProjectRun:
    """Outcome of :func:`run_project`: per-analysis status and notes."""

    outdir: Path
    status: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def _load_inputs(project: Project) -> ExperimentSet:
    sets = [load_experiments(spec["path"], space=spec.get("space"), sheet=spec.get("sheet")) for spec in project.inputs]
    return ExperimentSet.concat(sets) if len(sets) > 1 else sets[0]


def _group_experiments(project: Project, experiments: ExperimentSet, idx: np.ndarray) -> ExperimentSet:
    """The experiments of one group, pooled by study within the group when asked."""
    subset = experiments.select(idx)
    return pool_by_study(subset) if project.pooling == "merge" else subset


def _resolve_groups(project: Project, experiments: ExperimentSet) -> dict:
    groups = {}
    for name, spec in project.groups.items():
        idx = select_group(experiments, spec)
        if idx.size == 0:
            raise ProjectError(f"{project.path}: groups.{name}: selects no experiment; check its tags "
                               f"(tags present: {_tag_summary(experiments)}).")
        groups[name] = idx
    return groups


def _tag_summary(experiments: ExperimentSet) -> str:
    seen: dict[str, set] = {}
    for t in experiments.tags:
        for k, v in t.items():
            seen.setdefault(k, set()).add(str(v))
    parts = [f"{k}: {', '.join(sorted(v)[:6])}{' ...' if len(v) > 6 else ''}" for k, v in sorted(seen.items())]
    return "; ".join(parts) or "none"


def _preflight(project: Project, experiments: ExperimentSet, groups: dict) -> dict:
    notes: dict[str, list] = {}
    for name, a in project.analyses.items():
        notes[name] = []
        if a["type"] == "ale":
            idx = groups[a["group"]]
            if idx.size < project.min_experiments:
                msg = (f"only {idx.size} experiments (fewer than {project.min_experiments}, the minimum Eickhoff "
                       "et al. 2016 recommend for adequate power; results may be driven by single experiments)")
                notes[name].append(msg)
                warnings.warn(f"analysis {name!r}: {msg}", stacklevel=2)
            if project.pooling == "warn":
                several = studies_with_several_experiments(experiments.select(idx))
                if several:
                    msg = (f"{len(several)} {'study contributes' if len(several) == 1 else 'studies contribute'} several experiments ({', '.join(list(several)[:3])}"
                           f"{' ...' if len(several) > 3 else ''}); if they share subjects they inflate convergence. "
                           "Set 'pooling: merge' to pool them (Turkeltaub et al. 2012).")
                    notes[name].append(msg)
                    warnings.warn(f"analysis {name!r}: {msg}", stacklevel=2)
        elif a["type"] == "contrast":
            ga, gb = (groups[project.analyses[r]["group"]] for r in a["refs"])
            both = np.intersect1d(ga, gb)
            if both.size:
                names = ", ".join(repr(experiments.names[i]) for i in both[:3])
                raise ProjectError(f"{project.path}:{a['line']}: analyses.{name}: {both.size} experiment(s) are in both "
                                   f"groups ({names}{' ...' if both.size > 3 else ''}); a contrast needs disjoint groups.")
    return notes


def _key(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _ale_files(params: dict) -> tuple:
    return ALE_FILES if params.get("iterations", 10000) else ALE_FILES[:3] + ALE_FILES[5:]


def _downstream(result_like, grid, z_cfwe, z_vfwe, placed=None) -> _MainEffect:
    # maps round-trip through float32 NIfTI: use the same values whether fresh or reloaded
    maps = {k: np.asarray(v, dtype=np.float32).astype(np.float64) for k, v in (("z_cfwe", z_cfwe), ("z_vfwe", z_vfwe))
            if v is not None}
    exps = placed.experiments if placed is not None else result_like.experiments
    ijk = placed.ijk if placed is not None else result_like.ijk
    return _MainEffect(grid, exps, ijk, maps)


def _complete(folder: Path, files, key: str) -> bool:
    prov = folder / "provenance.json"
    if not prov.is_file() or not all((folder / f).is_file() for f in files):
        return False
    try:
        return json.loads(prov.read_text()).get("analysis_key") == key
    except (OSError, ValueError):
        return False


def _estimator(params: dict, project: Project, jobs: int, quiet: bool, backend: str = "auto") -> ALE:
    kw = {k: v for k, v in params.items() if k != "mask"}
    mask = params.get("mask")
    if mask is not None:
        mask = str((project.base / mask).resolve())
    return ALE(jobs=jobs, quiet=quiet, mask=mask, backend=backend, **kw)


def _run_ale(name, a, project, subset, folder, jobs, quiet, key, inputs, backend="auto"):
    est = _estimator(a["params"], project, jobs, quiet, backend)
    grid = est._grid()
    if _complete(folder, _ale_files(a["params"]), key):
        placed = est.place(subset)
        maps = [_read_in_mask(folder / f, grid) for f in ("z_cfwe.nii.gz", "z_vfwe.nii.gz")]
        return "skipped (complete)", _downstream(None, grid, *maps, placed=placed)
    (folder / "provenance.json").unlink(missing_ok=True)  # the folder is not complete until it is rewritten
    result = est.fit(subset, checkpoint=folder / CHECKPOINT)
    result.provenance.update(analysis=name, analysis_key=key, group=a["group"], inputs=inputs)
    if a.get("stability") and len(result.clusters):
        _write_stability(result, a, folder, jobs, est.backend)
    result.save(folder)
    (folder / CHECKPOINT).unlink(missing_ok=True)
    return (f"{len(result.clusters)} significant cluster(s)",
            _downstream(result, grid, result.maps.get("z_cfwe"), result.maps.get("z_vfwe")))


def _write_stability(result, a, folder, jobs, backend="auto"):
    from alemap.designs.stability import cluster_stability

    params = a["params"]
    st = cluster_stability(result, subsamples=a["stability"], iterations=min(1000, params.get("iterations", 1000)),
                           seed=params.get("seed", 0), jobs=jobs, backend=backend)
    write_text(folder / "stability.tsv", st.table.to_csv(sep="\t", index=False, float_format="%.4g"))
    write_nifti(folder / "stability.nii.gz", result.grid.to_image(st.map))
    result.provenance["stability"] = st.params


def _read_in_mask(path: Path, grid):
    if not path.exists():
        return None
    return np.asarray(nib.load(str(path)).dataobj, dtype=np.float64).ravel()[grid.mask_flat]


def _write_maps(folder, grid, maps, names):
    for key in names:
        write_nifti(folder / f"{key}.nii.gz", grid.to_image(maps[key]))


def run_project(project: Project, outdir: str | Path, jobs: int = 1, quiet: bool = False,
                backend: str = "auto") -> ProjectRun:
    """Run a validated project; see the module docstring.

    ``backend`` (``"auto"``, ``"cpu"``, ``"gpu"``) runs the Monte Carlo nulls of
    the ALE and C-SALE analyses (:class:`alemap.ALE`, :func:`~alemap.designs.csale.run_csale`);
    it is not part of the analysis keys,
    as every backend gives the same null for the same seed (masses up to
    float rounding).
    """
    outdir = Path(outdir)
    experiments = _load_inputs(project)
    groups = _resolve_groups(project, experiments)
    notes = _preflight(project, experiments, groups)
    inputs = [{"path": s["path"], "sha256": file_sha256(s["path"])} for s in project.inputs]
    input_hashes = [i["sha256"] for i in inputs]  # keys use content, so moving the folder recomputes nothing
    _write_review(project, experiments, outdir)
    order = [n for n, a in project.analyses.items() if a["type"] == "ale"]
    order += [n for n, a in project.analyses.items() if a["type"] != "ale"]
    run = ProjectRun(outdir=outdir, notes=notes)
    results, keys = {}, {}
    for i, name in enumerate(order, 1):
        a = project.analyses[name]
        folder = outdir / name
        folder.mkdir(parents=True, exist_ok=True)
        spec = {k: v for k, v in a.items() if k != "line"}
        if a["type"] == "contrast":
            spec["params"] = dict(spec["params"], seed=spec["params"].get("seed", project.defaults.get("seed", 0)))
        if a["type"] in ("ale", "csale"):
            exps = _group_experiments(project, experiments, groups[a["group"]])
            keys[name] = _key(__version__, spec, input_hashes, list(exps.names), exps.xyz.tolist(),
                              exps.n_subjects.tolist())
        else:
            keys[name] = _key(__version__, spec, [keys[r] for r in a["refs"]])
        _say(quiet, f"[{i}/{len(order)}] {name} ({a['type']})")
        if a["type"] == "ale":
            status, results[name] = _run_ale(name, a, project, exps, folder, jobs, quiet, keys[name], inputs,
                                             backend)
        elif a["type"] == "csale":
            status = _run_csale(name, a, project, exps, folder, jobs, quiet, keys[name], inputs, notes[name],
                                backend)
        elif a["type"] == "contrast":
            status = _run_contrast(name, spec, project, results, folder, keys[name], notes[name], quiet)
        else:
            status = _run_conjunction(name, a, project, results, folder, keys[name])
        run.status[name] = status
        _say(quiet, f"      {name}: {status}")
        for note in notes[name]:
            _say(quiet, f"      note: {note}")
    write_json(outdir / "project.json", {
        "project": project.name, "file": str(project.path), "alemap": __version__,
        "analyses": {n: {"type": project.analyses[n]["type"], "status": run.status[n], "notes": notes[n]} for n in order},
    })
    return run


def _write_review(project: Project, experiments: ExperimentSet, outdir: Path) -> None:
    notes = {str(k): str(v) for k, v in (project.review.get("notes") or {}).items()}
    included = []
    for i in range(experiments.n_experiments):
        tags = {k: v for k, v in experiments.tags[i].items() if k not in ("title",)}
        included.append({"experiment": experiments.names[i], "study": experiments.studies[i],
                         "subjects": int(experiments.n_subjects[i]), "foci": int(experiments.foci_counts[i]),
                         "space": experiments.spaces[i], "tags": "; ".join(f"{k}={v}" for k, v in tags.items()),
                         "note": notes.get(experiments.names[i], notes.get(experiments.studies[i], ""))})
    review = {k: v for k, v in project.review.items() if k != "notes"}
    outdir.mkdir(parents=True, exist_ok=True)
    write_json(outdir / "review.json", {"review": review, "included": included,
                                        "loaded_studies": len(set(experiments.studies)),
                                        "loaded_experiments": experiments.n_experiments})


def _run_contrast(name, a, project, results, folder, key, notes, quiet):
    if _complete(folder, CONTRAST_FILES, key):
        return "skipped (complete)"
    (folder / "provenance.json").unlink(missing_ok=True)
    ra, rb = (results[r] for r in a["refs"])
    params = dict(a["params"])
    params.setdefault("seed", project.defaults.get("seed", 0))
    res = run_contrast(ra, rb, connectivity=project.analyses[a["refs"][0]]["params"].get("connectivity", 6), **params)
    notes.extend(res.notes)
    grid = ra.grid
    keys = [k for k in ("diff", "p_AgtB", "p_BgtA", "p_subtraction", "z_subtraction", "z_AgtB", "z_BgtA", "z_contrast")
            if k in res.maps]
    _write_maps(folder, grid, res.maps, keys)
    write_text(folder / "clusters.tsv", res.clusters.to_csv(sep="\t", index=False, float_format="%.6g"))
    write_json(folder / "provenance.json", {
        "analysis": name, "analysis_key": key, "type": "contrast", "A": a["refs"][0], "B": a["refs"][1],
        "parameters": res.params, "notes": res.notes, "versions": library_versions(),
    })
    n_ab = int((res.clusters["direction"] == "A>B").sum()) if len(res.clusters) else 0
    return f"{n_ab} cluster(s) {a['refs'][0]} > {a['refs'][1]}, {len(res.clusters) - n_ab} the other way"


def _run_conjunction(name, a, project, results, folder, key):
    if _complete(folder, CONJUNCTION_FILES, key):
        return "skipped (complete)"
    (folder / "provenance.json").unlink(missing_ok=True)
    params = a["params"]
    which = params.get("map", "z_cfwe")
    grid = results[a["refs"][0]].grid
    connectivity = project.analyses[a["refs"][0]]["params"].get("connectivity", 6)
    z, table = conjunction([results[r].maps[which] for r in a["refs"]], grid, connectivity=connectivity,
                           min_volume_mm3=float(params.get("min_volume_mm3", 0.0)))
    _write_maps(folder, grid, {"z_conjunction": z}, ["z_conjunction"])
    write_text(folder / "clusters.tsv", table.to_csv(sep="\t", index=False, float_format="%.6g"))
    write_json(folder / "provenance.json", {
        "analysis": name, "analysis_key": key, "type": "conjunction", "inputs": a["refs"], "map": which,
        "method": "minimum statistic (Nichols et al. 2005)", "versions": library_versions(),
    })
    return f"{len(table)} cluster(s)"


def _run_csale(name, a, project, subset, folder, jobs, quiet, key, inputs, notes, backend="auto"):
    from alemap.designs.csale import run_csale

    if _complete(folder, CSALE_FILES, key):
        return "skipped (complete)"
    (folder / "provenance.json").unlink(missing_ok=True)
    prm = dict(a["params"])
    est = _estimator({k: prm.pop(k) for k in ("placement", "tal2mni", "outside_mask") if k in prm}, project, jobs, quiet)
    placed = est.place(subset)
    grid = est._grid()
    res = run_csale(placed, grid, jobs=jobs, quiet=quiet, backend=backend, **prm)
    notes.extend(res.notes)
    _write_maps(folder, grid, res.maps, ["ale", "p", "z", "z_csale", "base_rate"])
    write_text(folder / "clusters.tsv", res.clusters.to_csv(sep="\t", index=False, float_format="%.6g"))
    write_json(folder / "provenance.json", {
        "analysis": name, "analysis_key": key, "type": "csale", "group": a["group"], "inputs": inputs,
        "parameters": res.params, "experiments_used": res.n_experiments, "foci_used": res.n_foci,
        "excluded_experiments": res.excluded_experiments, "notes": res.notes, "backend": res.backend,
        "versions": library_versions(),
        "method": "C-SALE (Magielse et al. 2025): base-rate relocation null, voxel-wise p, cluster extent",
    })
    return f"{len(res.clusters)} cluster(s) (p < {res.params['p']}, k >= {res.params['k']})"
