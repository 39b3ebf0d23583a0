"""The ALE estimator: a thin object around the functional core.

``ALE(...)`` only stores parameters; :meth:`ALE.fit` validates them, runs the
pipeline (prepare foci -> MA maps -> ALE -> analytic null -> Monte Carlo null
-> corrections) and returns an immutable :class:`~alemap.result.ALEResult`.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from alemap._progress import progress_bar
from alemap._validation import Interval, Options, validate
from alemap.corrections.cluster import CONNECTIVITIES, cluster_inference
from alemap.corrections.voxel import fdr_threshold, fwe_p_from_null, fwe_threshold
from alemap.data.experiment_set import ExperimentSet
from alemap.exceptions import AlemapError, InputError
from alemap.inference.backends import BACKENDS, backend_label, resolve_backend
from alemap.inference.checkpoint import NullCheckpoint
from alemap.inference.jit import note_if_compiling
from alemap.inference.montecarlo import BATCH_SIZE, NullMaxima, run_null
from alemap.inference.stopping import StoppingRule, run_sequential
from alemap.inference.plan import make_plan
from alemap.io.sleuth import MAX_ABS_MM
from alemap.kernels.gaussian import kernel_cubes
from alemap.reporting.cluster_table import cluster_table
from alemap.reporting.provenance import build_provenance
from alemap.result import ALEResult
from alemap.space.grid import Grid, load_grid, load_mni152_2mm
from alemap.space.placement import PLACEMENTS
from alemap.space.prepare import OUTSIDE_MASK, prepare
from alemap.space.transforms import TAL2MNI_VARIANTS
from alemap.statistics.null import null_from_histograms
from alemap.statistics.onepass import ale_and_histograms
from alemap.statistics.pz import p_to_z

__all__ = ["ALE"]

_CONSTRAINTS = {
    "iterations": Interval(int, 0, None),
    "seed": Interval(int, 0, None),
    "cluster_forming_p": Interval(float, 0, 1, "neither"),
    "alpha": Interval(float, 0, 1, "neither"),
    "connectivity": Options(CONNECTIVITIES),
    "placement": Options(PLACEMENTS),
    "tal2mni": Options(TAL2MNI_VARIANTS),
    "outside_mask": Options(OUTSIDE_MASK),
    "cluster_stat": Options(("size", "mass")),
    "fdr_q": Interval(float, 0, 1, "neither"),
    "jobs": Interval(int, 1, None),
    "backend": Options(BACKENDS),
    "sequential_stop": (None, Interval(float, 0, 1, "right")),
}


class ALE:
    """Activation likelihood estimation with Monte Carlo FWE correction.

    Parameters
    ----------
    iterations : int, default 10000
        Monte Carlo iterations for voxel- and cluster-level FWE (0: none).
    seed : int, default 0
        Root seed of every random draw (results are identical for any ``jobs``).
    cluster_forming_p : float, default 0.001
        Voxel-wise p that forms clusters (Eickhoff et al. 2016).
    alpha : float, default 0.05
        FWE level for voxel- and cluster-level inference.
    connectivity : {6, 18, 26}, default 6
        Cluster neighbourhood (6 = faces, as NiMARE; 18 as Eickhoff's MATLAB ALE).
    placement : {"nearest", "nimare"}, default "nearest"
        How foci snap to voxels (:mod:`alemap.space.placement`).
    tal2mni : {"other", "spm", "fsl"}, default "other"
        Lancaster (2007) variant for Talairach foci.
    outside_mask : {"keep", "drop"}, default "keep"
        In-grid foci outside the brain mask (:mod:`alemap.space.prepare`).
    cluster_stat : {"size", "mass"}, default "size"
        Which cluster statistic makes ``z_cfwe``; both p-values are reported.
    fdr_q : float, default 0.05
        FDR level for the ``z_fdr`` map (BH).
    jobs : int, default 1
        CPU threads for the Monte Carlo null.
    backend : {"auto", "cpu", "gpu"}, default "auto"
        Engine of the Monte Carlo null: ``"cpu"`` (numba, ``jobs`` threads),
        ``"gpu"`` (CuPy; needs ``pip install "alemap[gpu]"`` and a CUDA device),
        ``"auto"`` (the GPU when one can be used, else the CPU). Both relocate
        the same foci for the same seed (:mod:`alemap.inference.backends`).
    sequential_stop : float, optional
        Off by default. When set (e.g. ``0.05``), the Monte Carlo null stops
        before ``iterations`` once the 95 % confidence intervals of the
        voxel-level FWE threshold and of the cluster-level one (``cluster_stat``)
        are narrower than this fraction of the thresholds, checked every 1,024
        iterations from 2,048 (:mod:`alemap.inference.stopping`). A run that
        stops at ``n`` has exactly the null of ``iterations=n`` with the same
        seed; provenance records where and why it stopped.
    mask : path or Grid, optional
        Analysis mask; default the shipped MNI152 2 mm brain mask.
    quiet : bool, default False
        No progress bar.
    """

    def __init__(
        self,
        iterations: int = 10000,
        seed: int = 0,
        cluster_forming_p: float = 0.001,
        alpha: float = 0.05,
        connectivity: int = 6,
        placement: str = "nearest",
        tal2mni: str = "other",
        outside_mask: str = "keep",
        cluster_stat: str = "size",
        fdr_q: float = 0.05,
        jobs: int = 1,
        mask: str | Path | Grid | None = None,
        quiet: bool = False,
        backend: str = "auto",
        sequential_stop: float | None = None,
    ):
        self.iterations = iterations
        self.seed = seed
        self.cluster_forming_p = cluster_forming_p
        self.alpha = alpha
        self.connectivity = connectivity
        self.placement = placement
        self.tal2mni = tal2mni
        self.outside_mask = outside_mask
        self.cluster_stat = cluster_stat
        self.fdr_q = fdr_q
        self.jobs = jobs
        self.mask = mask
        self.quiet = quiet
        self.backend = backend
        self.sequential_stop = sequential_stop

    def get_params(self) -> dict:
        """The parameters as a dict (the mask as its name)."""
        params = {k: getattr(self, k) for k in _CONSTRAINTS}
        params["mask"] = self._grid().name
        return params

    def _grid(self) -> Grid:
        if self.mask is None:
            return load_mni152_2mm()
        if isinstance(self.mask, Grid):
            return self.mask
        return load_grid(self.mask)

    def fit(
        self,
        experiments: ExperimentSet | str | Path | Sequence[str | Path],
        checkpoint: str | Path | None = None,
    ) -> ALEResult:
        """Run the analysis.

        Parameters
        ----------
        experiments : ExperimentSet or path(s)
            Experiments, or files readable by :func:`alemap.io.load_experiments`.
        checkpoint : path, optional
            File where the Monte Carlo null is checkpointed; a later fit with the
            same inputs and parameters resumes from it.
        """
        validate("ALE", _CONSTRAINTS, {k: getattr(self, k) for k in _CONSTRAINTS})
        # what runs the null; a GPU asked for but not usable fails here, before any computing
        self._null_backend = resolve_backend(self.backend) if self.iterations > 0 else "cpu"
        t0 = time.perf_counter()
        inputs: list[str] = []
        if not isinstance(experiments, ExperimentSet):
            from alemap.io import load_experiments

            paths = [experiments] if isinstance(experiments, (str, Path)) else list(experiments)
            inputs = [str(p) for p in paths]
            experiments = load_experiments(paths)
        grid = self._grid()
        placed = self.place(experiments, grid)
        exps = placed.experiments
        if exps.n_experiments == 0:
            raise InputError("No experiment has a focus inside the template; check the coordinates' space.")
        if not self.quiet:
            note_if_compiling()  # the inputs are good: computing starts here
        cubes = kernel_cubes(exps.n_subjects, float(grid.voxel_size[0]))
        cube_of_exp = cubes.index(exps.n_subjects)
        # ALE and the MA histograms in one pass: the MA maps themselves are never stored
        ale, hist = ale_and_histograms(placed.ijk, exps.offsets, cube_of_exp, cubes, grid.mask, jobs=self.jobs)
        null = null_from_histograms(hist, upto=float(ale.max(initial=0.0)), jobs=self.jobs)  # p asked up to the max
        p = null.p_values(ale)
        z = p_to_z(p)
        cut = null.threshold(self.cluster_forming_p)
        plan = make_plan(grid.mask, exps.offsets, cube_of_exp, cubes, cut, self.connectivity)
        self._stopping = None  # the sequential stopping record, when the rule is on
        maxima = self._monte_carlo(plan, placed, grid, checkpoint)
        maps, clusters, thresholds = self._correct(grid, ale, p, z, cut, maxima)
        _check_maps(maps)
        provenance = build_provenance(
            self.get_params(), grid, placed, inputs, time.perf_counter() - t0, thresholds,
            n_experiments_input=experiments.n_experiments, backend=backend_label(self._null_backend),
        )
        provenance["monte_carlo"] = {"iterations_requested": self.iterations,
                                     "iterations_run": maxima.n_iterations, "sequential_stop": self._stopping}
        return ALEResult(
            grid=grid, experiments=exps, ijk=placed.ijk, maps=maps, clusters=clusters,
            null_maxima=maxima, analytic_null=null, thresholds=thresholds, provenance=provenance,
        )

    def place(self, experiments: ExperimentSet, grid: Grid | None = None):
        """Check, order canonically and place experiments on the grid.

        The canonical order depends only on the data (sample size, then the
        experiment's sorted foci; the name only breaks ties between identical
        experiments), so results do not depend on the order in which
        experiments were listed, on the order of their foci, or on their names.
        """
        _check_experiments(experiments)
        experiments = experiments.select(_canonical_order(experiments))
        return prepare(experiments, grid or self._grid(), self.placement, self.tal2mni, self.outside_mask)

    def _monte_carlo(self, plan, placed, grid, checkpoint):
        ckpt = None
        if checkpoint is not None:
            key = NullCheckpoint.key_for(plan, self.iterations, self.seed, grid)
            ckpt = NullCheckpoint(Path(checkpoint), key, self.iterations)
        done, partial = (None, None) if ckpt is None else ckpt.load()
        n_left = self.iterations - (0 if done is None else int(ckpt.iterations_done(done)))
        backend = self._null_backend  # resolved by fit
        with progress_bar(n_left, "Monte Carlo null", self.quiet) as advance:
            def run(n_iter, done_, partial_):
                return run_null(
                    plan, n_iter, self.seed, self.jobs, progress=advance, done=done_, partial=partial_,
                    on_batch=None if ckpt is None else ckpt.on_batch, backend=backend,
                )

            if self.sequential_stop is None or self.iterations == 0:
                maxima = full = run(self.iterations, done, partial)
            else:
                maxima, full = self._sequential(run, done, partial)
        if ckpt is not None:
            ckpt.save(full)  # complete; the caller removes it once outputs are written
        return maxima

    def _sequential(self, run, done, partial):
        """The null with the sequential stopping rule: (maxima used, full-length arrays for the checkpoint)."""
        n_batches = -(-self.iterations // BATCH_SIZE)
        state = {
            "done": np.zeros(n_batches, dtype=bool) if done is None else done.copy(),
            "full": partial if partial is not None else NullMaxima(
                np.zeros(self.iterations), np.zeros(self.iterations, dtype=np.int64), np.zeros(self.iterations)),
        }

        def run_prefix(n):
            todo = np.arange(n_batches) < -(-n // BATCH_SIZE)
            state["full"] = run(self.iterations, state["done"] | ~todo, state["full"])
            state["done"] |= todo
            f = state["full"]
            return NullMaxima(f.ale[:n], f.size[:n], f.mass[:n])

        rule = StoppingRule(rel_width=float(self.sequential_stop))
        maxima, self._stopping = run_sequential(run_prefix, self.iterations, rule, self.alpha,
                                                ("ale", self.cluster_stat))
        return maxima, state["full"]

    def _correct(self, grid, ale, p, z, cut, maxima):
        thresholds = {"cluster_forming_ale": cut, "cluster_forming_p": self.cluster_forming_p}
        fdr_p = fdr_threshold(p, self.fdr_q, "bh")
        thresholds["fdr_p"] = fdr_p
        maps = {"ale": ale, "p": p, "z": z, "z_fdr": np.where((p <= fdr_p) & (fdr_p > 0), z, 0.0)}
        n = maxima.n_iterations
        if n == 0:
            return maps, cluster_table(None, np.zeros(0, dtype=np.int64), grid, ale, z), thresholds
        p_vfwe = fwe_p_from_null(ale, maxima.ale)
        maps["p_vfwe"] = p_vfwe
        maps["z_vfwe"] = np.where(p_vfwe < self.alpha, z, 0.0)
        # significant exactly when the statistic exceeds these (consistent with p < alpha)
        thresholds["vfwe_ale"] = fwe_threshold(maxima.ale, self.alpha)
        thresholds["cfwe_size"] = fwe_threshold(maxima.size, self.alpha)
        thresholds["cfwe_mass"] = fwe_threshold(maxima.mass, self.alpha)
        ci = cluster_inference(grid.to_volume(ale, dtype=np.float64), cut, maxima.size, maxima.mass, self.connectivity)
        p_use = ci.p_size if self.cluster_stat == "size" else ci.p_mass
        significant = np.flatnonzero(p_use < self.alpha) + 1
        labels_in_mask = ci.labels.ravel()[grid.mask_flat]
        sig = np.isin(labels_in_mask, significant)
        maps["z_cfwe"] = np.where(sig, z, 0.0)
        # renumber significant clusters 1..k in the order of the table
        relabel = np.zeros(len(ci.size) + 1, dtype=np.int64)
        relabel[significant] = np.arange(1, len(significant) + 1)
        maps["clusters"] = relabel[labels_in_mask].astype(np.float64)
        table = cluster_table(ci, significant, grid, ale, z)
        return maps, table, thresholds


def _canonical_order(experiments: ExperimentSet) -> list[int]:
    keys = []
    for i in range(experiments.n_experiments):
        foci = np.round(experiments.foci(i), 6)
        foci = foci[np.lexsort(foci.T[::-1])]
        keys.append((int(experiments.n_subjects[i]), experiments.spaces[i], foci.shape[0],
                     tuple(map(tuple, foci.tolist())), experiments.names[i]))
    return sorted(range(experiments.n_experiments), key=keys.__getitem__)


def _check_experiments(experiments: ExperimentSet) -> None:
    bad = np.flatnonzero(experiments.n_subjects <= 0)
    if bad.size:
        names = ", ".join(repr(experiments.names[i]) for i in bad[:5])
        raise InputError(f"Sample sizes must be positive; experiment(s) {names} have {experiments.n_subjects[bad[0]]}.")
    empty = np.flatnonzero(experiments.foci_counts == 0)
    if empty.size:
        names = ", ".join(repr(experiments.names[i]) for i in empty[:5])
        raise InputError(f"Experiment(s) {names} have no foci; remove them or add their coordinates.")
    if not np.all(np.isfinite(experiments.xyz)):
        f = int(np.flatnonzero(~np.all(np.isfinite(experiments.xyz), axis=1))[0])
        raise InputError(f"{experiments.origins[f]}: coordinate is not a finite number; fix or remove it.")
    huge = np.flatnonzero(np.any(np.abs(experiments.xyz) > MAX_ABS_MM, axis=1))
    if huge.size:  # a typo or unit error; also keeps the mm -> voxel casts far from overflow
        f = int(huge[0])
        raise InputError(f"{experiments.origins[f]}: coordinate {tuple(experiments.xyz[f].tolist())} is implausibly "
                         f"large (beyond +-{MAX_ABS_MM:g} mm); give MNI or Talairach coordinates in mm.")
    if len(set(experiments.names)) != experiments.n_experiments:
        raise InputError("Experiment names must be unique; rename the duplicates.")
    _warn_identical(experiments)


def _warn_identical(experiments: ExperimentSet) -> None:
    """Warn about experiments with the same sample size, space and foci under different names.

    ALE counts each as an independent experiment; a pasted-twice experiment
    inflates convergence where it reports foci.
    """
    first: dict = {}
    pairs = []
    for i in range(experiments.n_experiments):
        foci = np.round(experiments.foci(i), 6)
        key = (int(experiments.n_subjects[i]), experiments.spaces[i], foci[np.lexsort(foci.T[::-1])].tobytes())
        if key in first:
            pairs.append((first[key], i))
        else:
            first[key] = i
    if pairs:
        shown = "; ".join(f"{experiments.names[a]!r} = {experiments.names[b]!r}" for a, b in pairs[:3])
        more = f" and {len(pairs) - 3} more" if len(pairs) > 3 else ""
        warnings.warn(
            f"{len(pairs)} experiment(s) repeat another experiment exactly (same subjects, space and foci): "
            f"{shown}{more}. ALE counts each copy as an independent experiment; delete copies that are the "
            "same experiment listed twice.",
            UserWarning, stacklevel=4,
        )


def _check_maps(maps: dict) -> None:
    """Numerical guard before anything is written: ALE in [0, 1], p in (0, 1], z finite."""
    problems = []
    ale = maps["ale"]
    if not (np.all(np.isfinite(ale)) and np.all(ale >= 0.0) and np.all(ale <= 1.0)):
        problems.append("ALE outside [0, 1]")
    for key in ("p", "p_vfwe"):
        if key in maps and not (np.all(maps[key] > 0.0) and np.all(maps[key] <= 1.0)):
            problems.append(f"{key} outside (0, 1]")
    bad_z = [k for k in maps if k.startswith("z") and not np.all(np.isfinite(maps[k]))]
    if bad_z:
        problems.append(f"non-finite values in {', '.join(bad_z)}")
    if problems:
        raise AlemapError(f"numerical problem in the results ({'; '.join(problems)}); nothing was written. "
                          "This is a bug in alemap: please report it with the input.")
