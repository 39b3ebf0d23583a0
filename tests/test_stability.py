"""Probabilistic ALE: cluster stability across subsamples of experiments."""

from __future__ import annotations

import numpy as np

from alemap import ALE
from alemap.designs.stability import cluster_stability
from alemap.io import load_experiments


def _sequence(path):
    s = load_experiments(path)
    return s.select([i for i in range(s.n_experiments) if s.tags[i]["paradigm"] == "sequence"])


def test_stability_is_a_share_and_ranks_clusters(tmp_path):
    from alemap.cli.demo import project_path
    from pathlib import Path

    seq = _sequence(Path(project_path()).with_name("motor_learning.tsv"))
    result = ALE(iterations=200, seed=1, quiet=True, jobs=2).fit(seq)
    st = cluster_stability(result, subsamples=12, iterations=200, seed=3, jobs=2)
    assert list(st.table["cluster"]) == list(result.clusters["cluster"])
    assert st.table["stability"].between(0, 1).all()
    assert st.map.min() >= 0 and st.map.max() <= 1
    # the largest cluster (SMA) is found in nearly every subset; stability is not flat
    assert st.table["stability"].iloc[0] >= 0.9
    assert st.table["stability"].min() < st.table["stability"].max()
    again = cluster_stability(result, subsamples=12, iterations=200, seed=3, jobs=1)
    assert np.array_equal(again.map, st.map)
    # the subset's null on the array engine (the GPU's code, run with NumPy): the same stability
    few = [cluster_stability(result, subsamples=4, iterations=32, seed=3, jobs=1, backend=b) for b in ("cpu", "numpy")]
    assert np.array_equal(few[0].map, few[1].map) and few[0].table.equals(few[1].table)
    assert st.params["target_n"] == min(int(np.floor(np.mean([seq.n_experiments, 17]))), seq.n_experiments - 2)
