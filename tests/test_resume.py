"""An interrupted Monte Carlo run resumes from its checkpoint and ends identical."""

from __future__ import annotations

import numpy as np
import pytest

import alemap.inference.checkpoint as checkpoint
import alemap.inference.montecarlo as montecarlo
from alemap import ALE


class _Stop(Exception):
    pass


def test_resume_gives_identical_null(tmp_path, finger_path, monkeypatch):
    ckpt = tmp_path / "ckpt.npz"
    reference = ALE(iterations=256, seed=5, quiet=True).fit(finger_path)

    monkeypatch.setattr(checkpoint, "CHECKPOINT_EVERY_S", 0.0)
    original = checkpoint.NullCheckpoint.on_batch
    calls = {"n": 0}

    def stop_after_three(self, batch, maxima):
        original(self, batch, maxima)
        calls["n"] += 1
        if calls["n"] == 3:
            raise _Stop

    monkeypatch.setattr(checkpoint.NullCheckpoint, "on_batch", stop_after_three)
    with pytest.raises(_Stop):
        ALE(iterations=256, seed=5, quiet=True).fit(finger_path, checkpoint=ckpt)
    assert ckpt.exists()
    monkeypatch.setattr(checkpoint.NullCheckpoint, "on_batch", original)

    ran = []
    real_batch = montecarlo.batch_draws

    def counting(seed, batch, *a):
        ran.append(batch)
        return real_batch(seed, batch, *a)

    monkeypatch.setattr(montecarlo, "batch_draws", counting)
    resumed = ALE(iterations=256, seed=5, quiet=True).fit(finger_path, checkpoint=ckpt)
    assert len(ran) == 256 // montecarlo.BATCH_SIZE - 3  # finished batches were not recomputed
    for key in ("ale", "size", "mass"):
        assert np.array_equal(getattr(resumed.null_maxima, key), getattr(reference.null_maxima, key))
    assert resumed.clusters.equals(reference.clusters)


def test_checkpoint_of_other_run_is_ignored(tmp_path, finger_path):
    ckpt = tmp_path / "ckpt.npz"
    ALE(iterations=64, seed=1, quiet=True).fit(finger_path, checkpoint=ckpt)
    a = ALE(iterations=64, seed=2, quiet=True).fit(finger_path, checkpoint=ckpt)
    b = ALE(iterations=64, seed=2, quiet=True).fit(finger_path)
    assert np.array_equal(a.null_maxima.ale, b.null_maxima.ale)
