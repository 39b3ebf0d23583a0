"""Which engine runs the Monte Carlo null: ``"cpu"`` (numba) or ``"gpu"`` (CuPy).

``resolve_backend("auto")`` picks the GPU only when CuPy imports *and* finds a
CUDA device; otherwise the CPU. Asking for ``"gpu"`` where that is not so is an
error whose message tells the two causes apart (PyMARE's
``_import_cmdstanpy``, nibabel's ``optpkg``): CuPy not installed (install the
``gpu`` extra) or CuPy installed but no usable CUDA device.

CuPy is imported here (and in :mod:`alemap.inference.gpu`) only when a GPU is
asked for or probed, never when alemap is imported.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from alemap.exceptions import BackendUnavailableError, ParameterError

__all__ = ["BACKENDS", "INSTALL_HINT", "backend_label", "gpu_available", "import_cupy", "resolve_backend", "to_host"]

#: Values of ``ALE(backend=...)`` and ``--backend``.
BACKENDS = ("auto", "cpu", "gpu")
#: How to get the GPU backend's package.
INSTALL_HINT = 'pip install "alemap[gpu]"'

_LABELS = {"cpu": "cpu-numba", "gpu": "gpu-cupy"}


def import_cupy():
    """CuPy, checked to see a CUDA device; :class:`BackendUnavailableError` otherwise.

    The message says which of the two things is missing and how to fix it.
    """
    try:
        import cupy
    except ImportError as err:
        raise BackendUnavailableError(
            f"The GPU backend needs CuPy, which is not installed: {INSTALL_HINT} (CuPy for CUDA 12), on a machine "
            "with an NVIDIA CUDA GPU; or use backend 'cpu' (--backend cpu)."
        ) from err
    try:
        n_devices = int(cupy.cuda.runtime.getDeviceCount())
        detail = f"{n_devices} device(s)"
    except Exception as err:  # no driver, no device, a broken CUDA install: all mean "no usable device"
        n_devices, detail = 0, f"{type(err).__name__}: {err}"
    if n_devices < 1:
        raise BackendUnavailableError(
            f"CuPy is installed but finds no CUDA device ({detail}); the GPU backend needs an NVIDIA GPU with a "
            "working CUDA driver. Run on such a machine, or use backend 'cpu' (--backend cpu)."
        )
    return cupy


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import_cupy()
    except BackendUnavailableError:
        return False
    return True


def resolve_backend(name: str) -> Literal["cpu", "gpu"]:
    """The backend that will run: ``"cpu"`` or ``"gpu"``.

    ``"auto"`` gives ``"gpu"`` when :func:`gpu_available`, else ``"cpu"``;
    ``"gpu"`` raises :class:`BackendUnavailableError` when no GPU can be used.
    """
    if name == "cpu":
        return "cpu"
    if name == "gpu":
        import_cupy()
        return "gpu"
    if name == "auto":
        return "gpu" if gpu_available() else "cpu"
    allowed = ", ".join(map(repr, BACKENDS))
    raise ParameterError(f"The 'backend' parameter must be one of {allowed}. Got {name!r} instead.")


def backend_label(resolved: str) -> str:
    """Name of the engine for provenance: ``"cpu-numba"`` or ``"gpu-cupy"``."""
    return _LABELS[resolved]


def to_host(a) -> np.ndarray:
    """A NumPy copy of a CuPy array (a NumPy array as it is)."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)
