"""Monte Carlo iterations of one analysis, computed in shards and checkpointed per shard.

A *shard* is a contiguous range ``[b0, b1)`` of the seeded batches of
:mod:`alemap.inference.montecarlo` (batch ``b`` holds iterations
``b * BATCH_SIZE ..`` and draws from ``SeedSequence(seed, spawn_key=(b,))``).
A shard task rebuilds the Monte Carlo plan from a small, picklable spec (the
experiment layout, sample sizes, cluster-forming threshold, connectivity and
mask), runs its batches with :func:`alemap.inference.cpu.run_batch` and returns
the per-iteration maxima. Every iteration depends only on the seed and its
batch number, so writing the shards' maxima at their iteration positions gives
exactly ``run_null(plan, n, seed, jobs=1)``, bit for bit, whatever the number
of shards, workers or the order in which they finish.

Checkpoints: as each shard finishes, the *client* writes its maxima to
``<analysis folder>/.alemap-shards/b<b0>-<b1>.npz`` (atomically, with the key
of the run: :meth:`alemap.inference.checkpoint.NullCheckpoint.key_for`). A
restarted run loads every shard file with the right key, marks its batches
done and computes only the rest (in new shards, so the shard size may change
between runs). Shard tasks have no side effects, so a task rerun by Dask
after its worker died is harmless: a lost worker loses only the shard it was
computing.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from alemap.inference.montecarlo import BATCH_SIZE, NullMaxima, batch_draws
from alemap.io.atomic import write_npz

__all__ = ["SHARD_DIR", "ShardStore", "null_spec", "compute_shard", "plan_shards", "merge_shard", "n_batches"]

#: Folder (inside an analysis folder) holding the finished shards of its null.
SHARD_DIR = ".alemap-shards"
_NAME = re.compile(r"^b(\d+)-(\d+)\.npz$")


def n_batches(n_iterations: int) -> int:
    """Seeded batches of ``n_iterations``."""
    return -(-int(n_iterations) // BATCH_SIZE)


def _batch_range(b0: int, b1: int, n_iterations: int) -> tuple[int, int]:
    return b0 * BATCH_SIZE, min(int(n_iterations), b1 * BATCH_SIZE)


def null_spec(plan, n_subjects, grid, n_iterations: int, seed: int, key: str) -> dict:
    """What a worker needs to rebuild ``plan`` (a few kB for the default mask).

    ``n_subjects`` are the sample sizes of the placed experiments, in plan
    order. The mask travels as packed bits unless it is the shipped MNI152
    2 mm mask, which workers load themselves.
    """
    from alemap.space.grid import MNI152_2MM_NAME, load_mni152_2mm

    default = grid.name == MNI152_2MM_NAME and grid.digest() == load_mni152_2mm().digest()
    return {
        "key": key,
        "mask": None if default else {"shape": tuple(int(s) for s in grid.shape),
                                      "bits": np.packbits(grid.mask.ravel())},
        "exp_offsets": np.asarray(plan.exp_offsets, dtype=np.int64),
        "n_subjects": np.asarray(n_subjects, dtype=np.int64),
        "voxel_mm": float(grid.voxel_size[0]),
        "cut_ale": float(plan.cut_ale),
        "connectivity": int(plan.nbr.shape[0]),
        "n_iterations": int(n_iterations),
        "seed": int(seed),
    }


_plans: OrderedDict = OrderedDict()
_plans_lock = threading.Lock()
_PLAN_CACHE = 4


def _plan_for(spec: dict):
    """The plan of ``spec``, built once per process (small LRU cache)."""
    from alemap.inference.plan import make_plan
    from alemap.kernels.gaussian import kernel_cubes
    from alemap.space.grid import load_mni152_2mm

    key = spec["key"]
    with _plans_lock:
        hit = _plans.get(key)
        if hit is not None:
            _plans.move_to_end(key)
            return hit
    if spec["mask"] is None:
        mask = load_mni152_2mm().mask
    else:
        shape = tuple(spec["mask"]["shape"])
        mask = np.unpackbits(spec["mask"]["bits"], count=int(np.prod(shape))).astype(bool).reshape(shape)
    cubes = kernel_cubes(spec["n_subjects"], spec["voxel_mm"])
    plan = make_plan(mask, spec["exp_offsets"], cubes.index(spec["n_subjects"]), cubes, spec["cut_ale"],
                     spec["connectivity"])
    with _plans_lock:
        _plans[key] = plan
        while len(_plans) > _PLAN_CACHE:
            _plans.popitem(last=False)
    return plan


def compute_shard(spec: dict, b0: int, b1: int) -> dict:
    """Run batches ``b0 .. b1 - 1`` of the null described by ``spec``.

    Returns ``{"b0", "b1", "ale", "size", "mass"}`` with the maxima of
    iterations ``b0 * BATCH_SIZE .. min(n, b1 * BATCH_SIZE) - 1``. Pure: no
    files are written, so rerunning it (a retried task) is harmless.
    """
    from alemap.inference.cpu import Workspace, run_batch

    plan = _plan_for(spec)
    n = spec["n_iterations"]
    lo0, hi0 = _batch_range(b0, b1, n)
    ale = np.zeros(hi0 - lo0)
    size = np.zeros(hi0 - lo0, dtype=np.int64)
    mass = np.zeros(hi0 - lo0)
    ws = Workspace(plan.n_grid, plan.n_blocks)
    for b in range(b0, b1):
        lo, hi = _batch_range(b, b + 1, n)
        draws = batch_draws(spec["seed"], b, hi - lo, plan.n_foci, plan.n_mask)
        run_batch(draws, plan, ws, ale[lo - lo0:hi - lo0], size[lo - lo0:hi - lo0], mass[lo - lo0:hi - lo0])
    return {"b0": int(b0), "b1": int(b1), "ale": ale, "size": size, "mass": mass}


def plan_shards(done: np.ndarray, shard_batches: int) -> list[tuple[int, int]]:
    """Contiguous ranges of batches not yet done, each of at most ``shard_batches``."""
    shard_batches = max(1, int(shard_batches))
    out = []
    b, n = 0, done.shape[0]
    while b < n:
        if done[b]:
            b += 1
            continue
        e = b
        while e < n and not done[e] and e - b < shard_batches:
            e += 1
        out.append((b, e))
        b = e
    return out


def merge_shard(maxima: NullMaxima, shard: dict, n_iterations: int) -> None:
    """Write a shard's maxima into the full arrays (in place)."""
    lo, hi = _batch_range(shard["b0"], shard["b1"], n_iterations)
    maxima.ale[lo:hi] = shard["ale"]
    maxima.size[lo:hi] = shard["size"]
    maxima.mass[lo:hi] = shard["mass"]


class ShardStore:
    """Finished shards of one analysis' null, as files in ``folder / SHARD_DIR``."""

    def __init__(self, folder: str | Path, key: str, n_iterations: int):
        self.dir = Path(folder) / SHARD_DIR
        self.key = key
        self.n_iterations = int(n_iterations)
        self.n_batches = n_batches(n_iterations)

    def load(self) -> tuple[np.ndarray, NullMaxima, int]:
        """(done per batch, maxima so far, number of shard files used).

        Files with another key, a bad range or unreadable content are ignored
        (never trusted); overlapping files are harmless (same values)."""
        done = np.zeros(self.n_batches, dtype=bool)
        maxima = NullMaxima(np.zeros(self.n_iterations), np.zeros(self.n_iterations, dtype=np.int64),
                            np.zeros(self.n_iterations))
        used = 0
        if not self.dir.is_dir():
            return done, maxima, used
        for path in sorted(self.dir.iterdir()):
            m = _NAME.match(path.name)
            if not m:
                continue
            b0, b1 = int(m.group(1)), int(m.group(2))
            if not 0 <= b0 < b1 <= self.n_batches:
                continue
            lo, hi = _batch_range(b0, b1, self.n_iterations)
            try:
                with np.load(path, allow_pickle=False) as z:
                    if str(z["key"]) != self.key:
                        continue
                    shard = {"b0": b0, "b1": b1, "ale": z["ale"], "size": z["size"], "mass": z["mass"]}
            except Exception:  # a corrupt or foreign file is ignored
                continue
            if any(shard[k].shape != (hi - lo,) for k in ("ale", "size", "mass")):
                continue
            merge_shard(maxima, shard, self.n_iterations)
            done[b0:b1] = True
            used += 1
        return done, maxima, used

    def save(self, shard: dict) -> Path:
        """Write one finished shard (atomically)."""
        path = self.dir / f"b{shard['b0']:06d}-{shard['b1']:06d}.npz"
        write_npz(path, key=np.array(self.key), ale=shard["ale"], size=shard["size"], mass=shard["mass"])
        return path

    def remove(self) -> None:
        """Delete the shard files (after the analysis' outputs are written)."""
        if not self.dir.is_dir():
            return
        for path in self.dir.iterdir():
            if path.is_file():
                path.unlink(missing_ok=True)
        try:
            self.dir.rmdir()
        except OSError:  # a temp file of a concurrent writer; harmless
            pass
