"""Distributed execution of batches of meta-analyses (optional Dask backend).

* :mod:`alemap.distributed.dask_backend`: the ``--scheduler`` option -> a
  backend (this process, a local Dask cluster, or an existing one).
* :mod:`alemap.distributed.shards`: Monte Carlo iterations of one analysis in
  checkpointed shards whose merge equals the single-process null bit for bit.

Importing this package never imports Dask; only :func:`get_backend` with a
scheduler does (``pip install "alemap[distributed]"``).
"""

from alemap.distributed.dask_backend import DaskBackend, LocalBackend, get_backend, parse_scheduler
from alemap.distributed.shards import SHARD_DIR, ShardStore, compute_shard, null_spec, plan_shards

__all__ = [
    "DaskBackend",
    "LocalBackend",
    "get_backend",
    "parse_scheduler",
    "SHARD_DIR",
    "ShardStore",
    "compute_shard",
    "null_spec",
    "plan_shards",
]
