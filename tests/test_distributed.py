"""Distributed batches (alemap.distributed): same seed, same outputs on one process and on a
LocalCluster of two worker processes, in both sharding modes; a killed worker; unreachable
scheduler; Dask absent."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from alemap.designs.batch import run_batch, terms_batch
from alemap.distributed import LocalBackend, compute_shard, get_backend, null_spec, parse_scheduler
from alemap.distributed.dask_backend import INSTALL_HINT, DaskBackend
from alemap.distributed.shards import merge_shard
from alemap.exceptions import BackendUnavailableError, ParameterError
from alemap.io.databases import read_neurosynth
from test_batch import TERMS, make_database_files, same_outputs

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toydb")
    c, m, mask = make_database_files(folder, seed=1)
    db = read_neurosynth(c, m)
    return terms_batch(db, TERMS, seed=11, iterations=96, mask=mask), folder


@pytest.fixture(scope="module")
def dask_backend():
    """A LocalCluster of 2 worker processes (1 thread each); workers import alemap while the tests start."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    client = Client(cluster, set_as_default=False)
    warm = [client.submit(_warm, i, pure=False) for i in range(2)]
    backend = DaskBackend(client, None, address=cluster.scheduler_address)
    backend.warm = warm
    yield backend
    client.close()
    cluster.close()


def _warm(i):
    import alemap.designs.batch  # noqa: F401  (imports and loads the compiled engine)

    return i


@pytest.fixture(scope="module")
def reference(toy, tmp_path_factory):
    batch, _ = toy
    out = tmp_path_factory.mktemp("ref")
    run = run_batch(batch, out, jobs=1, shard="analyses", quiet=True)
    assert run.ok
    return out


NAMES = ["alpha", "beta", "gamma_delta"]


def test_shards_merge_bitwise_on_default_mask(dask_backend):
    """Uneven shards (from the cluster and from this process) rebuild run_null(jobs=1) exactly."""
    from alemap import ALE
    from alemap.inference.montecarlo import NullMaxima, run_null
    from alemap.inference.plan import make_plan
    from alemap.kernels.gaussian import kernel_cubes
    from alemap.statistics.ale import ma_maps
    from alemap.statistics.null import analytic_null
    from alemap.data import ExperimentSet, FocusOrigin

    rng = np.random.default_rng(5)
    recs = [{"name": f"e{i}", "study": f"e{i}", "n_subjects": int(rng.integers(8, 30)), "space": "MNI",
             "xyz": rng.normal([30, -20, 40], 8, size=(6, 3)), "origins": [FocusOrigin("x", 0)] * 6} for i in range(8)]
    est = ALE(iterations=0, quiet=True)
    grid = est._grid()
    placed = est.place(ExperimentSet.from_records(recs), grid)
    exps = placed.experiments
    cubes = kernel_cubes(exps.n_subjects, float(grid.voxel_size[0]))
    coe = cubes.index(exps.n_subjects)
    cut = analytic_null(ma_maps(placed.ijk, exps.offsets, coe, cubes, grid.mask)).threshold(0.001)
    plan = make_plan(grid.mask, exps.offsets, coe, cubes, cut, 6)
    n, seed = 100, 123  # 4 batches, the last one short
    ref = run_null(plan, n, seed, jobs=1)
    spec = null_spec(plan, exps.n_subjects, grid, n, seed, key="test-plan")
    assert spec["mask"] is None  # the shipped mask is not shipped to workers
    for backend in (dask_backend, LocalBackend(2)):
        got = NullMaxima(np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n))
        calls = [(spec, 0, 1), (spec, 1, 3), (spec, 3, 4)]
        for _, err, res in backend.map_unordered(compute_shard, calls, ["s0", "s1", "s2"]):
            assert err is None
            merge_shard(got, res, n)
        for k in ("ale", "size", "mass"):
            assert np.array_equal(getattr(ref, k), getattr(got, k)), k


@pytest.mark.parametrize("shard", ["analyses", "iterations"])
def test_cluster_gives_identical_outputs(toy, reference, dask_backend, tmp_path, shard):
    batch, _ = toy
    run = run_batch(batch, tmp_path / shard, backend=dask_backend, shard=shard, shard_batches=1, quiet=True)
    assert run.ok and run.execution["backend"] == "dask" and run.execution["shard"] == shard
    same_outputs(reference, tmp_path / shard, NAMES)


class KillOnce(distributed.WorkerPlugin):
    """Kill the worker process the moment it starts the ``at``-th alemap task of the job (once)."""

    name = "alemap-test-kill-once"

    def __init__(self, folder: str, at: int):
        self.counter = os.path.join(folder, "tasks-started")
        self.marker = os.path.join(folder, "killed")
        self.at = at

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing" or not str(key).startswith("alemap-"):
            return
        fd = os.open(self.counter, os.O_CREAT | os.O_APPEND | os.O_WRONLY)
        try:
            os.write(fd, b"x")
            started = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if started < self.at:
            return
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os._exit(1)  # the worker dies mid-task (earlier tasks done); its nanny starts a fresh one


# iterations: 3 analyses x 3 shards, killed at the 5th shard (the first analysis is done, the second under way);
# analyses: killed when the second analysis starts
@pytest.mark.parametrize(("shard", "at"), [("iterations", 5), ("analyses", 2)])
def test_killed_worker_same_results(toy, reference, dask_backend, tmp_path, shard, at):
    batch, _ = toy
    client = dask_backend.client
    client.wait_for_workers(2, timeout=120)
    before = set(client.scheduler_info()["workers"])
    client.register_plugin(KillOnce(str(tmp_path), at))
    try:
        run = run_batch(batch, tmp_path / "out", backend=dask_backend, shard=shard, shard_batches=1, quiet=True)
    finally:
        client.unregister_worker_plugin(KillOnce.name)
    assert (tmp_path / "killed").exists(), "no worker was killed"
    assert run.ok, run.status
    same_outputs(reference, tmp_path / "out", NAMES)
    client.wait_for_workers(2, timeout=120)
    assert set(client.scheduler_info()["workers"]) != before  # a worker was replaced


def test_unreachable_scheduler_fails_fast(toy, tmp_path, capsys):
    t0 = time.perf_counter()
    with pytest.raises(BackendUnavailableError, match="Could not reach the Dask scheduler") as info:
        get_backend("tcp://127.0.0.1:9", timeout=2)
    assert time.perf_counter() - t0 < 8
    assert "local:N" in str(info.value)
    from alemap.cli.main import main

    _, folder = toy
    t0 = time.perf_counter()
    rc = main(["batch", "--database", str(folder), "--terms", "alpha", "--iterations", "32", "--quiet",
               "--scheduler", "127.0.0.1:9", "--scheduler-timeout", "1", "-o", str(tmp_path / "x")])
    assert rc == 2 and time.perf_counter() - t0 < 8
    assert "Could not reach the Dask scheduler at tcp://127.0.0.1:9" in capsys.readouterr().err
    with pytest.raises(BackendUnavailableError, match="does not exist"):
        get_backend(str(tmp_path / "scheduler.json"))


def test_parse_scheduler():
    assert parse_scheduler(None) == ("none", None)
    assert parse_scheduler("local:3") == ("local", 3)
    assert parse_scheduler("local")[0] == "local"
    assert parse_scheduler("tcp://10.0.0.1:8786") == ("address", "tcp://10.0.0.1:8786")
    assert parse_scheduler("sched.json") == ("file", "sched.json")
    for bad in ("local:0", "local:two"):
        with pytest.raises(ParameterError):
            parse_scheduler(bad)
    assert isinstance(get_backend(None, jobs=2), LocalBackend)


def test_without_dask(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(BackendUnavailableError) as info:
        get_backend("local:2")
    assert INSTALL_HINT in str(info.value) and 'alemap[distributed]' in str(info.value)
    assert isinstance(get_backend(None), LocalBackend)  # plain local execution needs no Dask
    code = ("import sys, alemap.designs.batch, alemap.cli.batch, alemap.distributed; "
            "assert 'distributed' not in sys.modules and 'dask' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
