"""Provenance: what went in, with which parameters, seed and versions.

Written as ``provenance.json`` in every output folder so a result can be
audited and reproduced: SHA-256 of every input file and of the mask, every
parameter, the seed and the seeding contract, library versions, backend,
runtime, and every focus or experiment that was excluded and why.
"""

from __future__ import annotations

import hashlib
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

__all__ = ["build_provenance", "file_sha256", "library_versions"]

_LIBRARIES = ("alemap", "numpy", "scipy", "numba", "nibabel", "pandas")


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions() -> dict:
    """Versions of Python and the libraries that shape results."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for lib in _LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:  # pragma: no cover
            out[lib] = None
    return out


def build_provenance(params, grid, placed, inputs, runtime_s, thresholds, n_experiments_input,
                     backend: str = "cpu-numba") -> dict:
    """The provenance record of one ALE fit; ``backend`` names the engine that ran the Monte Carlo null."""
    from alemap.inference.montecarlo import BATCH_SIZE

    exps = placed.experiments
    return {
        "tool": "alemap",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runtime_seconds": round(float(runtime_s), 3),
        "inputs": [{"path": p, "sha256": file_sha256(p)} for p in inputs if Path(p).is_file()],
        "mask": {"name": grid.name, "sha256": grid.digest(), "n_voxels": grid.n_voxels},
        "parameters": params,
        "seed": {
            "root": params["seed"],
            "contract": f"batch b of {BATCH_SIZE} iterations draws from numpy SeedSequence(seed, spawn_key=(b,))",
        },
        "backend": backend,
        "versions": library_versions(),
        "counts": {
            "experiments_input": int(n_experiments_input),
            "experiments_used": exps.n_experiments,
            "foci_used": exps.n_foci,
            "subjects_used": int(exps.n_subjects.sum()),
            "foci_outside_mask_kept": placed.n_outside_mask_kept,
        },
        "thresholds": {k: float(v) for k, v in thresholds.items()},
        "excluded_foci": list(placed.excluded_foci),
        "excluded_experiments": list(placed.excluded_experiments),
        "experiments": [
            {"name": n, "study": s, "subjects": int(k), "foci": int(c)}
            for n, s, k, c in zip(exps.names, exps.studies, exps.n_subjects, exps.foci_counts)
        ],
    }
