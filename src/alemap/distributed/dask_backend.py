"""Where batch work runs: in this process, or on a Dask cluster.

:func:`get_backend` turns the ``--scheduler`` option into a backend:

``None`` (no option)
    :class:`LocalBackend`: plain local execution in this process, ``jobs``
    threads (the numba engine releases the GIL).
``"local:N"`` (or ``"local"``: one worker per core)
    A :class:`distributed.LocalCluster` of ``N`` worker *processes* with one
    thread each, started here and closed at the end.
``ADDRESS`` (``tcp://host:8786``, ``host:8786``) or a scheduler file (``.json``)
    An existing Dask cluster, for example one started by ``dask-jobqueue`` on
    SLURM or by ``dask scheduler`` / ``dask worker``. The connection must
    succeed within ``timeout`` seconds, else a
    :class:`~alemap.exceptions.BackendUnavailableError` with a hint; nothing hangs.

Both backends offer one operation, :meth:`map_unordered`: run ``fn(*args)``
for a list of calls and yield ``(index, error, result)`` as calls finish.
Dask reruns a task whose worker died (up to
``distributed.scheduler.allowed-failures`` times, 3 by default); every task
alemap submits is idempotent (pure shard computations, or an analysis that
writes its files atomically and skips itself when complete), so a rerun only
costs time.

Dask is imported lazily: without it, plain local execution works and
``--scheduler`` raises :class:`~alemap.exceptions.BackendUnavailableError`
naming ``pip install "alemap[distributed]"``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Iterator, Sequence

from alemap.exceptions import BackendUnavailableError, ParameterError

__all__ = ["LocalBackend", "DaskBackend", "get_backend", "parse_scheduler", "INSTALL_HINT", "DEFAULT_TIMEOUT_S"]

INSTALL_HINT = 'pip install "alemap[distributed]"'
#: Seconds to wait for a scheduler before giving up.
DEFAULT_TIMEOUT_S = 10.0


class LocalBackend:
    """Plain local execution: calls run in this process, ``jobs`` threads at a time."""

    kind = "local"

    def __init__(self, jobs: int = 1):
        self.jobs = max(1, int(jobs))

    @property
    def n_workers(self) -> int:
        """Parallel slots (threads)."""
        return self.jobs

    def describe(self) -> dict:
        """For provenance and messages."""
        return {"backend": "local", "threads": self.jobs}

    def map_unordered(self, fn: Callable, calls: Sequence[tuple], names: Sequence[str] | None = None,
                      parallel: bool = True) -> Iterator[tuple[int, BaseException | None, object]]:
        """Run ``fn(*args)`` for every ``args`` in ``calls``; yield ``(i, error, result)`` as they finish.

        ``parallel=False`` runs them one after the other (for calls that use
        ``jobs`` threads themselves)."""
        if not parallel or self.jobs == 1 or len(calls) <= 1:
            for i, args in enumerate(calls):
                try:
                    res = fn(*args)
                except Exception as exc:  # reported per call, like a failed Dask task
                    yield i, exc, None
                else:
                    yield i, None, res
            return
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            futs = {pool.submit(fn, *args): i for i, args in enumerate(calls)}
            try:
                for fut in as_completed(futs):
                    exc = fut.exception()
                    yield futs[fut], exc, None if exc is not None else fut.result()
            finally:
                for fut in futs:
                    fut.cancel()

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DaskBackend:
    """Calls run as tasks of a Dask cluster (``distributed.Client``)."""

    kind = "dask"

    def __init__(self, client, cluster=None, address: str = ""):
        self.client = client
        self.cluster = cluster
        self.address = address

    @property
    def n_workers(self) -> int:
        """Worker threads of the cluster now (at least 1)."""
        try:
            info = self.client.scheduler_info()
            workers = info.get("workers", {}) if isinstance(info, dict) else {}
            return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))
        except Exception:  # pragma: no cover - a cluster going away
            return 1

    def describe(self) -> dict:
        """For provenance and messages."""
        return {"backend": "dask", "scheduler": self.address, "local_cluster": self.cluster is not None,
                "worker_threads": self.n_workers}

    def map_unordered(self, fn: Callable, calls: Sequence[tuple], names: Sequence[str] | None = None,
                      parallel: bool = True) -> Iterator[tuple[int, BaseException | None, object]]:
        """Submit ``fn(*args)`` for every call; yield ``(i, error, result)`` as tasks finish.

        Tasks are not pure (fresh keys per run, named after ``names``), so a
        rerun never picks up a stale result from the cluster."""
        from distributed import as_completed as dask_as_completed

        if not calls:
            return
        token = uuid.uuid4().hex[:8]
        names = list(names) if names is not None else [f"call{i}" for i in range(len(calls))]
        futs = [self.client.submit(fn, *args, key=f"alemap-{_key_part(n)}-{token}-{i}", pure=False)
                for i, (n, args) in enumerate(zip(names, calls))]
        index = {f.key: i for i, f in enumerate(futs)}
        pending = set(index)
        try:
            for fut, res in dask_as_completed(futs, with_results=True, raise_errors=False, loop=self.client.loop):
                i = index[fut.key]
                pending.discard(fut.key)
                if fut.status == "error":
                    exc = fut.exception()
                    yield i, exc if isinstance(exc, BaseException) else RuntimeError(str(exc)), None
                elif fut.status == "cancelled":
                    yield i, RuntimeError(f"task {fut.key} was cancelled by the cluster"), None
                else:
                    yield i, None, res
                fut.release()
        finally:
            left = [f for f in futs if f.key in pending]
            if left:
                self.client.cancel(left)

    def close(self) -> None:
        """Close the client, and the cluster if this backend started it."""
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _key_part(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in str(name))[:60]


def parse_scheduler(scheduler: str | None) -> tuple[str, object]:
    """``("none", None)``, ``("local", n_workers)``, ``("file", path)`` or ``("address", address)``."""
    if scheduler is None or str(scheduler).strip() == "":
        return "none", None
    text = str(scheduler).strip()
    if text == "local" or text.startswith("local:"):
        n = text.partition(":")[2]
        if not n:
            return "local", os.cpu_count() or 1
        try:
            k = int(n)
        except ValueError:
            k = 0
        if k < 1:
            raise ParameterError(f"--scheduler {text!r}: expected local:N with N >= 1 workers, e.g. local:4.")
        return "local", k
    if text.endswith(".json"):
        return "file", text
    return "address", text


def _import_distributed():
    try:
        import distributed  # noqa: F401
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise BackendUnavailableError(
            f"--scheduler needs Dask, which is not installed ({exc}). Install it with: {INSTALL_HINT} "
            "(or run without --scheduler to compute in this process)."
        ) from exc
    return Client, LocalCluster


def get_backend(scheduler: str | None = None, jobs: int = 1, timeout: float = DEFAULT_TIMEOUT_S):
    """The backend for a ``--scheduler`` value (see the module docstring).

    Raises
    ------
    BackendUnavailableError
        Dask is not installed, or the scheduler cannot be reached in ``timeout`` seconds.
    ParameterError
        A malformed ``local:N``.
    """
    kind, value = parse_scheduler(scheduler)
    if kind == "none":
        return LocalBackend(jobs)
    Client, LocalCluster = _import_distributed()
    if kind == "local":
        cluster = LocalCluster(n_workers=int(value), threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        try:
            client = Client(cluster, set_as_default=False, timeout=timeout)
        except BaseException:
            cluster.close()
            raise
        return DaskBackend(client, cluster, address=f"local:{value} ({cluster.scheduler_address})")
    if kind == "file":
        path = Path(value)
        if not path.is_file():
            raise BackendUnavailableError(
                f"Scheduler file '{path}' does not exist. Give the file the scheduler wrote "
                "(dask scheduler --scheduler-file FILE), a scheduler address such as tcp://host:8786, or local:N."
            )
        try:
            client = Client(scheduler_file=str(path), timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            _discard_client(exc)
            raise _unreachable(f"the scheduler of '{path}'", timeout, exc) from None
        return DaskBackend(client, None, address=str(path))
    address = value if "://" in value else f"tcp://{value}"
    deadline = time.monotonic() + float(timeout)
    if address.startswith("tcp://"):
        _wait_for_port(address, deadline, timeout)  # fails fast and clearly, without a half-made Client
    try:
        client = Client(address, timeout=max(1.0, deadline - time.monotonic()), set_as_default=False)
    except (OSError, TimeoutError) as exc:
        _discard_client(exc)
        raise _unreachable(address, timeout, exc) from None
    except ValueError as exc:
        _discard_client(exc)
        raise BackendUnavailableError(
            f"--scheduler {value!r} is not a Dask scheduler address ({exc}); expected tcp://host:8786, "
            "a scheduler file (.json) or local:N."
        ) from None
    except Exception as exc:  # something answered, but not as a Dask scheduler
        _discard_client(exc)
        raise BackendUnavailableError(
            f"{address} answered, but not as a Dask scheduler ({type(exc).__name__}: {str(exc)[:200]}). "
            "Check the port: the scheduler's default is 8786 (8787 is its dashboard)."
        ) from None
    return DaskBackend(client, None, address=address)


def _discard_client(exc: BaseException) -> None:
    """Stop the event loop of a Client whose constructor failed, so that its
    ``__del__`` does not block the interpreter's exit trying to close it."""
    tb = exc.__traceback__
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("self")
        if type(obj).__name__ == "Client":
            try:
                obj.status = "closed"
                obj._loop_runner.stop()
            except Exception:  # pragma: no cover - best effort
                pass
            return
        tb = tb.tb_next


def _host_port(address: str) -> tuple[str, int]:
    hostport = address.split("://", 1)[1].rstrip("/")
    if hostport.startswith("["):  # [IPv6]:port
        host, _, rest = hostport[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    try:
        return host or "127.0.0.1", int(port) if port else 8786
    except ValueError:
        raise BackendUnavailableError(
            f"--scheduler {address!r}: the port {port!r} is not a number; expected tcp://host:8786."
        ) from None


def _wait_for_port(address: str, deadline: float, timeout: float) -> None:
    """Retry a TCP connection to the scheduler until ``deadline`` (it may still be starting)."""
    host, port = _host_port(address)
    last: BaseException | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _unreachable(address, timeout, last or TimeoutError("no answer"))
        try:
            with socket.create_connection((host, port), timeout=min(left, 2.0)):
                return
        except OSError as exc:
            last = exc
            if isinstance(exc, socket.gaierror):  # the name does not resolve: waiting will not help
                raise _unreachable(address, timeout, exc) from None
        time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))


def _unreachable(what: str, timeout: float, exc: BaseException) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"Could not reach the Dask scheduler at {what} within {timeout:g} s ({type(exc).__name__}: "
        f"{str(exc).splitlines()[0] if str(exc) else 'no answer'}). Check that the scheduler is running "
        "(`dask scheduler` prints 'Scheduler at: tcp://HOST:8786'), that the address and port are right and "
        "reachable from this machine (firewall, SSH tunnel), or run on this machine instead with "
        "--scheduler local:N (or without --scheduler)."
    )
