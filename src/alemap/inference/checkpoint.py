"""Checkpoints of the Monte Carlo null, so an interrupted run resumes.

The checkpoint is an ``.npz`` holding the per-iteration maxima so far, which
batches are done, and a key: the SHA-256 of everything that determines the
draws and the maxima (foci, kernels, mask, threshold, connectivity,
iterations, seed, batch size). A checkpoint with another key is ignored.
Because each batch's draws depend only on the seed and the batch number, a
resumed run ends with exactly the maxima of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from alemap.inference.montecarlo import BATCH_SIZE, NullMaxima
from alemap.io.atomic import write_npz

__all__ = ["NullCheckpoint"]

#: Seconds between checkpoint writes.
CHECKPOINT_EVERY_S = 10.0


class NullCheckpoint:
    """Load, update and remove a checkpoint file."""

    def __init__(self, path: Path, key: str, n_iterations: int):
        self.path = Path(path)
        self.key = key
        self.n_iterations = n_iterations
        self.n_batches = -(-n_iterations // BATCH_SIZE)
        self._done = np.zeros(self.n_batches, dtype=bool)
        self._last = time.monotonic()

    @staticmethod
    def key_for(plan, n_iterations: int, seed: int, grid) -> str:
        """Key of a Monte Carlo run."""
        h = hashlib.sha256()
        for arr in (plan.exp_offsets, plan.cube_of_exp, plan.log1m_k, plan.nbr):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(grid.digest().encode())
        h.update(repr((plan.cut_ale, n_iterations, seed, BATCH_SIZE)).encode())
        return h.hexdigest()

    def load(self):
        """(done, partial maxima) from a matching checkpoint, or (None, None)."""
        if not self.path.exists():
            return None, None
        try:
            with np.load(self.path, allow_pickle=False) as z:
                if str(z["key"]) != self.key:
                    return None, None
                done = z["done"].astype(bool)
                partial = NullMaxima(z["ale"], z["size"], z["mass"])
        except Exception:  # a corrupt checkpoint is ignored, never trusted
            return None, None
        if done.shape[0] != self.n_batches:
            return None, None
        self._done = done.copy()
        return done, partial

    def iterations_done(self, done: np.ndarray) -> int:
        """Iterations covered by the finished batches."""
        sizes = np.full(self.n_batches, BATCH_SIZE)
        sizes[-1] = self.n_iterations - BATCH_SIZE * (self.n_batches - 1)
        return int(sizes[done].sum())

    def on_batch(self, batch: int, maxima: NullMaxima) -> None:
        """Record a finished batch; write the file every few seconds."""
        self._done[batch] = True
        if time.monotonic() - self._last >= CHECKPOINT_EVERY_S:
            self.save(maxima)

    def save(self, maxima: NullMaxima) -> None:
        """Write the checkpoint now (atomically)."""
        done = self._done.copy()
        write_npz(self.path, key=np.array(self.key), done=done, ale=maxima.ale, size=maxima.size, mass=maxima.mass)
        self._last = time.monotonic()

    def remove(self) -> None:
        """Delete the checkpoint (after the final outputs are written)."""
        if self.path.exists():
            self.path.unlink()
