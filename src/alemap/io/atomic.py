"""Writing files so that a final name always holds a complete file.

Each file is written under a temporary name in the same folder and moved into
place with :func:`os.replace`, which is atomic on POSIX and Windows. A run that
fails or is killed leaves at most a ``.tmp-*`` file, never a truncated file
under a final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np

__all__ = ["atomic_path", "write_json", "write_nifti", "write_npz", "write_text"]


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success move it to ``final``."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{final.name}-", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(final: str | Path, text: str) -> None:
    """Write text atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(final: str | Path, obj) -> None:
    """Write JSON (indented, UTF-8) atomically."""
    write_text(final, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_nifti(final: str | Path, img: nib.Nifti1Image) -> None:
    """Write a NIfTI image atomically (gzip chosen by the final suffix)."""
    final = Path(final)
    with atomic_path(final) as tmp:
        gz = tmp.with_name(tmp.name + (".nii.gz" if final.name.endswith(".gz") else ".nii"))
        try:
            nib.save(img, str(gz))
            os.replace(gz, tmp)
        finally:
            if gz.exists():
                gz.unlink()


def write_npz(final: str | Path, **arrays: np.ndarray) -> None:
    """Write a compressed ``.npz`` atomically."""
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
